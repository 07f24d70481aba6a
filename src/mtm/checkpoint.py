"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON.

A pretrained model is a folder with `model.safetensors` (the weights) and `config.json` (the model
class, its config and metadata such as the training config); `load_pretrained` rebuilds the model
from the JSON alone, so loading never executes code from a file.

A resumable training state is any nested structure of dicts, lists and tuples holding tensors and
JSON scalars (model, optimizer and scheduler state dicts, RNG states, counters). `save_state`
splits it into a tensors file and `latest.json`, the rest of the tree with a placeholder per
tensor and the name of the tensors file. Each file is written atomically and a new tensors file
gets a fresh name, so until `latest.json` is replaced it names the previous, complete tensors
file: a process killed at any point leaves the previous or the new state, never a mix.

Every tensors file records a sha256 of its tensors in its header (`__metadata__`, key
`mtm.sha256`), and reading one checks it: weights altered after they were written, or a
damaged file, raise CorruptFileError naming the file. Files written before checksums load with
a warning. A training state that cannot be read is dropped with a warning (the run starts
afresh, to the same result).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from mtm.io import CorruptFileError, atomic_path, write_json

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "latest.json"
CHECKSUM_KEY = "mtm.sha256"  # in a tensors file's header metadata: tensors_sha256 of its tensors

# markers of what JSON cannot hold as such
_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"


def save_model(directory: str | Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write `model.safetensors` and `config.json` (model class, `model.config`, `metadata`)."""
    directory = Path(directory)
    _write_tensors(directory / WEIGHTS_FILE, {k: _cpu_copy(v) for k, v in model.state_dict().items()})
    write_json(
        directory / CONFIG_FILE,
        {
            "model_class": type(model).__name__,
            "model_config": dataclasses.asdict(model.config),
            "metadata": metadata,
        },
    )


def write_weights(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write `tensors` as one safetensors file, atomically (e.g. a head's, beside its config.json)."""
    _write_tensors(Path(path), {k: _cpu_copy(v) for k, v in tensors.items()})


def save_skipped(directory: str | Path, reason: str, metadata: dict[str, Any]) -> None:
    """Mark a model that was not trained: `config.json` says why; `model.safetensors` has no tensors.

    The empty weights file keeps the folder's file list the same as a trained one's, so a
    workflow can declare it as an output of every session.
    """
    directory = Path(directory)
    _write_tensors(directory / WEIGHTS_FILE, {})
    write_json(directory / CONFIG_FILE, {"skipped": reason, "metadata": metadata})


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except ValueError as err:  # not JSON, or not text
        raise CorruptFileError(path, f"not a model's config ({type(err).__name__}: {err})") from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked against the sha256 recorded when it was written.

    CorruptFileError when the file cannot be read or its tensors differ from those written; a file
    without a checksum (written before they were recorded) loads with a warning.
    """
    path = Path(path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as weights:
            recorded = (weights.metadata() or {}).get(CHECKSUM_KEY)
            tensors = {name: weights.get_tensor(name) for name in weights.keys()}
    except safetensors.SafetensorError as err:
        raise CorruptFileError(path, f"unreadable weights, truncated or damaged ({err})") from None
    if recorded is None:
        log.warning("%s: no checksum recorded (written before they were): the weights cannot be verified", path)
    elif tensors_sha256(tensors) != recorded:
        raise CorruptFileError(path, "the weights are not those written: their sha256 differs from the one recorded in "
                               "the file, which was changed after it was written")  # fmt: skip
    return tensors


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) of tensors: each one's name, dtype, shape and bytes (C order), in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_pretrained(directory: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """The model saved by `save_model` in `directory`, in eval mode, on `device`."""
    directory = Path(directory)
    config = read_config(directory)
    if "skipped" in config:
        raise ValueError(f"{directory} holds no model: the session was skipped ({config['skipped']})")
    classes = _model_classes()
    if config["model_class"] not in classes:
        raise ValueError(f"{directory}: unknown model class {config['model_class']!r}, known: {sorted(classes)}")
    model_cls, config_cls = classes[config["model_class"]]
    model = model_cls(config_cls(**config["model_config"]))
    model.load_state_dict(read_weights(directory / WEIGHTS_FILE))
    return model.to(device).eval()


def _model_classes() -> dict[str, tuple[type, type]]:
    from mtm.models import BACKBONES  # here, so that checkpoint imports no model code

    return {model_cls.__name__: (model_cls, config_cls) for model_cls, config_cls in BACKBONES.values()}


def save_state(directory: str | Path, state: dict[str, Any]) -> None:
    """Write a training state (see the module docstring) into `directory`, replacing the last one."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, tensors, "")
    name = f"tensors-{uuid.uuid4().hex}.safetensors"
    _write_tensors(directory / name, tensors)
    write_json(directory / STATE_FILE, {"tensors": name, "state": tree})
    # leftovers: the previous state, and temporary files of a killed writer
    for path in [*directory.glob("tensors-*.safetensors"), *directory.glob(".*.tmp")]:
        if path.name != name:
            path.unlink(missing_ok=True)


def load_state(directory: str | Path) -> dict[str, Any] | None:
    """The training state last saved in `directory`, or None if there is none, or if it cannot
    be read (with a warning: resuming only saves time, and a fresh run ends the same)."""
    directory = Path(directory)
    if not (directory / STATE_FILE).exists():
        return None
    try:
        saved = json.loads((directory / STATE_FILE).read_text())
        tensors = read_weights(directory / saved["tensors"])
    except (CorruptFileError, OSError, ValueError, KeyError) as err:  # a damaged or half-deleted state
        log.warning("the saved training state in %s cannot be read (%s); starting afresh", directory, err)
        return None
    return _join(saved["state"], tensors)


def clear_state(directory: str | Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    # a copy of its own: safetensors refuses tensors that share memory (e.g. tied weights)
    return tensor.detach().to("cpu", copy=True).contiguous()


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    # bytes written by us, so that atomic_path's file permissions stick
    with atomic_path(path) as tmp:
        tmp.write_bytes(safetensors.torch.save(tensors, metadata={CHECKSUM_KEY: tensors_sha256(tensors)}))


def _split(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """`obj` as a JSON tree; its tensors moved into `tensors` under their path in the tree."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = _cpu_copy(obj)
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split(v, tensors, f"{key}/{k}") for k, v in obj.items()}
        # optimizer states are keyed by parameter index: JSON keys would turn them into strings
        return {_ITEMS: [[k, _split(v, tensors, f"{key}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_split(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {key or '/'} in a training state")


def _join(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `_split`."""
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if _TENSOR in tree:
        return tensors[tree[_TENSOR]]
    if _TUPLE in tree:
        return tuple(_join(v, tensors) for v in tree[_TUPLE])
    if _ITEMS in tree:
        return {k: _join(v, tensors) for k, v in tree[_ITEMS]}
    return {k: _join(v, tensors) for k, v in tree.items()}

"""The MtM authors' NDT1 weights as our checkpoint (`config.json` + `model.safetensors`).

Their code (colehurwitz/IBL_MtM_model, `src/models/ndt1.py`) names and arranges the same model
differently; read from their code, the mapping is:

    theirs                                           ours
    encoder.embedder.embed_spikes (C -> E)           stitch_in[eid] (N -> E)
      stitched: encoder.stitcher.stitcher_dict.{N}     composed first: (N -> C) then (C -> E)
      (N -> C), keyed by the session's unit count
    encoder.embedder.projection (E -> hidden)        embed[1] (after the same softsign)
    encoder.embedder.embed_pos (bins, hidden)        position
    encoder.embedder.embed_prompt, rows in           prompt, rows in mtm.vocabulary.MTM_SCHEMES order
      AUTHORS_PROMPT_ROWS order
    encoder.embedder.embed_session, a row per eid    session_token[eid]
      of their target list
    encoder.layers.{i}.ln1 / ln2                     blocks[i].ln_attn / ln_mlp
    encoder.layers.{i}.attn.query, key, value        blocks[i].attn.qkv (stacked in that order)
    encoder.layers.{i}.attn.out_proj                 blocks[i].attn.proj
    encoder.layers.{i}.mlp.up_proj / down_proj       blocks[i].mlp.up / proj
    encoder.out_norm                                 ln_final
    decoder.0 (single session), or                   readout[eid]
      stitch_decoder.stitch_decoder_dict.{N}

Only tensors are read: a `.safetensors` file, or a `.pt` state_dict loaded with
`weights_only=True` (their checkpoints pickle whole modules; save `model.state_dict()` from
their code first). The number of attention heads is not in the weights and must be given.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import safetensors.torch
import torch

from mtm.checkpoint import save_model
from mtm.models.ndt1 import NDT1, NDT1Config
from mtm.config.training import TrainConfig
from mtm.vocabulary import MTM_SCHEMES

AUTHORS_PROMPT_ROWS = ("neuron", "causal", "inter-region", "intra-region")
SOURCE = "colehurwitz/IBL_MtM_model src/models/ndt1.py"
AUTHORS_REGION_LEVEL = "allen"  # their regions: raw Allen acronyms
_EMBED = "encoder.embedder."
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


class AuthorsWeightsError(ValueError):
    """A state_dict that is not the authors' NDT1, or does not fit the sessions asked for."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a `.safetensors` file or a `.pt`/`.pth` state_dict (never unpickled
    beyond tensors: `weights_only=True`). A `{"model": state_dict}` or `{"state_dict": ...}`
    wrapper is unwrapped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for pickled modules and bad files
        raise AuthorsWeightsError(
            f"{path}: not a state_dict of tensors ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "load their checkpoint in their code and save `model.state_dict()` (or a .safetensors file)"
        ) from error
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AuthorsWeightsError(f"{path}: expected a mapping of names to tensors")
    return dict(state)


def import_authors_ndt1(
    state: dict[str, torch.Tensor],
    sessions: dict[str, int],
    *,
    n_heads: int,
    session_rows: dict[str, int] | None = None,
    causal_context_sees_bins: bool = False,
) -> NDT1:
    """Our NDT1 holding the authors' weights, in eval mode.

    sessions: eid -> unit count, in the model's session order. A single-session state_dict
        (no stitchers) takes exactly one; a stitched one any whose unit count has a stitcher
        (their stitchers are keyed by unit count, so sessions of equal counts share them).
    session_rows: eid -> its row of their session-embedding table (its index in their target
        eid list); required when the state_dict has a session embedding.
    causal_context_sees_bins: their causal attention rule (see NDT1Config); needed to match
        their causal-mode outputs.
    """
    state = {k: v.detach().float().cpu() for k, v in state.items()}
    need(state, f"{_EMBED}embed_spikes.weight", f"{_EMBED}projection.weight", f"{_EMBED}embed_pos.weight")
    stitched = any(k.startswith("encoder.stitcher.") for k in state)
    if not stitched and len(sessions) != 1:
        raise AuthorsWeightsError(f"a single-session state_dict (no stitchers) takes one session, got {len(sessions)}")
    n_layers = 1 + max((int(m.group(1)) for k in state if (m := _LAYER.match(k))), default=-1)
    position = state[f"{_EMBED}embed_pos.weight"]
    use_session = f"{_EMBED}embed_session.weight" in state
    if use_session and not (session_rows and set(sessions) <= set(session_rows)):
        raise AuthorsWeightsError("the state_dict has a session embedding: give every session's row (session_rows)")
    config = NDT1Config(
        sessions=dict(sessions),
        n_bins=position.shape[0],
        hidden=position.shape[1],
        n_layers=n_layers,
        n_heads=n_heads,
        ffn=state["encoder.layers.0.mlp.up_proj.weight"].shape[0],
        embed_width=state[f"{_EMBED}embed_spikes.weight"].shape[0],
        use_prompt=f"{_EMBED}embed_prompt.weight" in state,
        use_session=use_session,
        loss="sum",
        causal_context_sees_bins=causal_context_sees_bins,
    )
    ours = {
        "embed.1.weight": state[f"{_EMBED}projection.weight"],
        "embed.1.bias": state[f"{_EMBED}projection.bias"],
        "position": position,
        "ln_final.weight": state["encoder.out_norm.weight"],
        "ln_final.bias": state["encoder.out_norm.bias"],
    }
    if config.use_prompt:
        rows = state[f"{_EMBED}embed_prompt.weight"]
        ours["prompt.weight"] = torch.stack([rows[AUTHORS_PROMPT_ROWS.index(s)] for s in MTM_SCHEMES])
    for i in range(n_layers):
        theirs = f"encoder.layers.{i}."
        for part in ("weight", "bias"):
            ours[f"blocks.{i}.ln_attn.{part}"] = state[f"{theirs}ln1.{part}"]
            ours[f"blocks.{i}.ln_mlp.{part}"] = state[f"{theirs}ln2.{part}"]
            ours[f"blocks.{i}.attn.qkv.{part}"] = torch.cat(
                [state[f"{theirs}attn.{name}.{part}"] for name in ("query", "key", "value")]
            )
            ours[f"blocks.{i}.attn.proj.{part}"] = state[f"{theirs}attn.out_proj.{part}"]
            ours[f"blocks.{i}.mlp.up.{part}"] = state[f"{theirs}mlp.up_proj.{part}"]
            ours[f"blocks.{i}.mlp.proj.{part}"] = state[f"{theirs}mlp.down_proj.{part}"]
    for eid, n_units in sessions.items():
        ours.update(_session_weights(state, eid, n_units, stitched))
        if use_session:
            ours[f"session_token.{eid}"] = state[f"{_EMBED}embed_session.weight"][session_rows[eid]]
    model = NDT1(config)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:  # a mapping gap is a bug here, not in the user's file
        raise AuthorsWeightsError(f"weights left unmapped: missing {missing}, unexpected {unexpected}")
    return model.eval()


def _session_weights(state: dict[str, torch.Tensor], eid: str, n_units: int, stitched: bool) -> dict[str, torch.Tensor]:
    """Session `eid`'s input layer (N -> E) and readout (hidden -> N)."""
    w_embed, b_embed = state[f"{_EMBED}embed_spikes.weight"], state[f"{_EMBED}embed_spikes.bias"]
    if stitched:
        stitcher, decoder = f"encoder.stitcher.stitcher_dict.{n_units}", f"stitch_decoder.stitch_decoder_dict.{n_units}"
        if f"{stitcher}.weight" not in state:
            counts = sorted(int(k.split(".")[3]) for k in state if k.startswith("encoder.stitcher.stitcher_dict.") and k.endswith(".weight"))
            raise AuthorsWeightsError(f"session {eid}: no stitcher for {n_units} units (the state_dict has {counts})")
        w_stitch, b_stitch = state[f"{stitcher}.weight"], state[f"{stitcher}.bias"]
        # one Linear: embed_spikes(stitcher(x)) = (We Ws) x + (We bs + be)
        w_in, b_in = w_embed @ w_stitch, w_embed @ b_stitch + b_embed
    else:
        decoder = "decoder.0"
        w_in, b_in = w_embed, b_embed
    need(state, f"{decoder}.weight")
    if w_in.shape[1] != n_units or state[f"{decoder}.weight"].shape[0] != n_units:
        raise AuthorsWeightsError(
            f"session {eid}: {n_units} units, but the state_dict's input takes {w_in.shape[1]} "
            f"and its readout gives {state[f'{decoder}.weight'].shape[0]}"
        )
    return {
        f"stitch_in.{eid}.weight": w_in, f"stitch_in.{eid}.bias": b_in,
        f"readout.{eid}.weight": state[f"{decoder}.weight"], f"readout.{eid}.bias": state[f"{decoder}.bias"],
    }  # fmt: skip


def need(state: dict[str, torch.Tensor], *names: str) -> None:
    missing = [name for name in names if name not in state]
    if missing:
        raise AuthorsWeightsError(f"not the authors' NDT1 state_dict: no {', '.join(missing)}")


def save_imported(model: NDT1, out_dir: str | Path, source: str | Path) -> None:
    """Write the imported model as our checkpoint; its metadata names the source file and the
    authors' training choices (MtM with prompts if it has a prompt table, summed loss, Allen
    regions, R2 selection), and its sessions, so that the workflow's evaluation reads it as
    one of ours (placed at results/models/ndt1/<scheme>/<setting>/<eid>/seed-0)."""
    scheme = "mtm-prompt" if model.config.use_prompt else "mtm"
    training = TrainConfig(
        scheme=scheme, backbone="ndt1", model="paper", loss="sum", lr=1e-4, region_level=AUTHORS_REGION_LEVEL,
        selection="psth-r2", single_session_token=model.config.use_session,
        causal_context_sees_bins=model.config.causal_context_sees_bins,
    )  # fmt: skip
    eids = list(model.config.sessions)
    metadata = {"stage": "imported", "imported_from": str(source), "source_code": SOURCE,
                "training": dataclasses.asdict(training), "eid": eids[0] if len(eids) == 1 else None, "eids": eids,
                "region_level": AUTHORS_REGION_LEVEL}  # fmt: skip
    save_model(out_dir, model, metadata)

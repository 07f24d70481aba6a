"""Fetch one session's datasets through ONE and write its manifest.

This is the only module that talks to ONE's local cache tables or to the IBL server. It picks
exactly the datasets MtM needs (one spike sorting per probe, trials, wheel, camera motion energy),
resolves revisions, downloads with retries, verifies sizes and md5 sums against the dataset
records, and writes `manifest.json` atomically. Later stages read the files listed there and
never share ONE state.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import requests

from mtm.config.sessions import OneConfig
from mtm.io import write_json
from mtm.ibl.alf_check import check_alf_file
from mtm.ibl.errors import FetchError, SessionDataError
from mtm.ibl.one_cache import md5sum

log = logging.getLogger(__name__)

# Collections are searched in this order when `spike_sorter` is not set, as ibllib does.
SORTER_PREFERENCE = ("iblsorter", "pykilosort", "")
PROBE_COLLECTION = re.compile(r"^alf/(probe\d\d[a-z]?)(?:/([^/#]+))?$")

# File names needed, by the collection they live in ('alf' may carry a revision folder).
BEHAVIOUR_FILES = re.compile(
    r"^(_ibl_trials\.table\.pqt|_ibl_trials\.[A-Za-z_]+\.npy"
    r"|_ibl_wheel\.(position|timestamps)\.npy"
    r"|_ibl_(left|right)Camera\.times\.npy|(left|right)Camera\.ROIMotionEnergy\.npy)$"
)
SORTING_FILES = re.compile(
    r"^(spikes\.(times|clusters|amps|depths)\.npy|clusters\.(channels|depths)\.npy"
    r"|clusters\.uuids\.csv|clusters\.metrics\.pqt"
    r"|channels\.(brainLocationIds_ccf_2017|mlapdv|localCoordinates|rawInd)\.npy)$"
)
ELECTRODE_FILES = re.compile(r"^electrodeSites\.(brainLocationIds_ccf_2017|mlapdv|localCoordinates)\.npy$")

# Errors worth a retry: network hiccups (Python's, and those of requests, which ONE downloads
# with) and, by their HTTP status, server-side failures (_is_transient). Nothing else is retried:
# a corrupt or missing local file, a missing cache, missing credentials, an unknown eid fail at
# once. The workflow's fetch rule has `retries: 0`, so this is the only retry.
TRANSIENT = (
    ConnectionError, TimeoutError,
    requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError,
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# connecting


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def connect(settings: OneConfig):
    """A ONE instance for `settings` (local cache or IBL server). Fails at once when unreachable."""
    from one.api import ONE, One

    cache_dir = settings.cache_dir
    if settings.mode == "local":
        if not cache_dir or not (Path(cache_dir) / "sessions.pqt").exists():
            raise FetchError(
                f"no ONE cache tables (sessions.pqt, datasets.pqt) in one.cache_dir={cache_dir!r}. "
                "Point one.cache_dir at a local ONE cache, or use `source: demo`."
            )
        # A plain One: never reads ~/.one, never connects, and is not the lru-cached ONE() object.
        return One(cache_dir=cache_dir, mode="local")
    if settings.mode != "remote":
        raise FetchError(f"one.mode must be 'local' or 'remote', not {settings.mode!r}")
    if not (settings.username or settings.token):
        raise FetchError(
            f"no credentials for {settings.base_url}: set one.username and one.password (or one.token) "
            "in the config, or the ALYX_LOGIN and ALYX_PWD (or ALYX_TOKEN) environment variables. "
            "Open Alyx accounts: https://openalyx.internationalbrainlab.org/signup"
        )
    kwargs = dict(base_url=settings.base_url, cache_dir=cache_dir, silent=True, mode="remote")
    if settings.token:
        kwargs["token"] = settings.token
    if settings.username:
        kwargs.update(username=settings.username, password=settings.password)
    ONE.cache_clear()
    try:
        return ONE(**kwargs)
    except Exception as err:  # ONE raises ConnectionError, requests errors or HTTPError here
        reason = redact(f"{type(err).__name__}: {err}", settings.secrets())
        raise FetchError(
            f"cannot reach the IBL server at {settings.base_url} ({reason}). "
            "Check the network and credentials, or run offline on a local ONE cache with "
            "`one: {mode: local, cache_dir: ...}` (or `source: demo`)."
        ) from None


# ----------------------------------------------------------------------------------------------
# choosing datasets


def select_datasets(
    records: pd.DataFrame, *, revision: str | None = None, spike_sorter: str | None = None
) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Pick the datasets MtM needs from a session's dataset records.

    records: ONE's `list_datasets(eid, details=True)` frame (rel_path, file_size, hash,
        default_revision). revision: pin (the last revision <= it, '' being the oldest), or None
        for the default revision. spike_sorter: collection name under alf/probeXX, or None to
        prefer iblsorter, then pykilosort, then alf/probeXX itself.
    Returns the chosen rows (one per dataset) and the probes [{name, collection, revision}].
    """
    rec = records.reset_index(drop=True).copy()
    parts = rec.rel_path.str.extract(r"^(?P<collection>.*?)/?(?:#(?P<revision>[^#]+)#/)?(?P<name>[^/]+)$")
    rec = rec.assign(collection=parts.collection.fillna(""), revision=parts.revision.fillna(""), name=parts.name)
    rec = _resolve_revisions(rec, revision)

    behaviour = rec[(rec.collection == "alf") & rec.name.str.match(BEHAVIOUR_FILES)]
    chosen, probes = [behaviour], []
    probe_collections: dict[str, list[str]] = {}
    for collection in sorted(rec.collection.unique()):
        match = PROBE_COLLECTION.match(collection)
        if match and (rec.collection == collection).any():
            probe_collections.setdefault(match.group(1), []).append(match.group(2) or "")
    for probe, sorters in sorted(probe_collections.items()):
        preference = (spike_sorter,) if spike_sorter else SORTER_PREFERENCE
        sorter = next((s for s in preference if s in sorters), None)
        collection = f"alf/{probe}/{sorter}" if sorter else f"alf/{probe}"
        sorting = rec[(rec.collection == collection) & rec.name.str.match(SORTING_FILES)]
        if sorter is None or not sorting.name.eq("spikes.times.npy").any():
            continue
        electrodes = rec[(rec.collection == f"alf/{probe}") & rec.name.str.match(ELECTRODE_FILES)]
        chosen += [sorting, electrodes]
        probes.append(dict(name=probe, collection=collection, revision=sorting.revision.max()))
    return pd.concat(chosen).sort_values("rel_path").reset_index(drop=True), probes


def spike_sortings(records: pd.DataFrame) -> list[str]:
    """The collections of a session's dataset records that hold spike times (any revision)."""
    found = records.rel_path.str.extract(r"^(?P<collection>.+?)/(?:#[^#]+#/)?spikes\.times\.npy$").collection
    return sorted(found.dropna().unique())


def _resolve_revisions(rec: pd.DataFrame, revision: str | None) -> pd.DataFrame:
    """Keep one revision per (collection, name): the default one, or the last one <= the pin."""
    if revision is None:
        if "default_revision" in rec and rec.default_revision.notna().any():
            keep = rec.default_revision.fillna(False).astype(bool)
            # datasets with no default flag at all: take the newest revision
            flagged = keep.groupby([rec.collection, rec.name]).transform("any")
            newest = rec.revision.eq(rec.groupby(["collection", "name"]).revision.transform("max"))
            return rec[keep | (~flagged & newest)]
        return rec[rec.revision.eq(rec.groupby(["collection", "name"]).revision.transform("max"))]
    eligible = rec[rec.revision <= revision]
    return eligible[eligible.revision.eq(eligible.groupby(["collection", "name"]).revision.transform("max"))]


# ----------------------------------------------------------------------------------------------
# downloading and verifying


def with_retries(fn: Callable[[], Any], *, what: str, retries: int = 4, backoff_s: float = 2.0) -> Any:
    """Call `fn`, retrying transient network errors with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as err:
            if not _is_transient(err) or attempt == retries:
                raise
            wait = backoff_s * 2**attempt
            log.warning("%s: %s; retry %d/%d in %.0f s", what, type(err).__name__, attempt + 1, retries, wait)
            time.sleep(wait)


def _is_transient(err: Exception) -> bool:
    """A network error, or an HTTP answer of 429 (too many requests) or 5xx (server error)."""
    if isinstance(err, TRANSIENT):
        return True
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return status is not None and (status == 429 or status >= 500)


def verify_file(eid: str, path: Path, rel_path: str, *, size: int | None, md5: str | None) -> None:
    """Raise SessionDataError when a file is missing, truncated or corrupt."""
    if not path.exists():
        raise SessionDataError(eid, rel_path, "file is missing after download")
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise SessionDataError(eid, rel_path, f"size is {actual} bytes, the dataset record says {size} (truncated or corrupt)")
    if md5 and md5sum(path) != md5:
        raise SessionDataError(eid, rel_path, "md5 differs from the dataset record (corrupt download)")
    check_alf_file(eid, path, rel_path)


@contextlib.contextmanager
def session_lock(cache_dir: Path, eid: str) -> Iterator[None]:
    """Serialise fetches of the same session into a shared cache (other sessions run in parallel)."""
    lock_dir = cache_dir / ".mtm-locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{eid}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_session(eid: str, config: OneConfig, manifest_path: str | Path, *, one=None) -> dict[str, Any]:
    """Fetch one session's datasets and write its manifest. Returns the manifest.

    config: where from, and the pins; credentials it lacks come from the environment
    (OneConfig.with_credentials). `one` may be passed to reuse a connection.
    """
    settings = config.with_credentials()
    secrets = settings.secrets()
    with private_one_params(settings):
        one = one or connect(settings)
        # Only downloads write to the cache: a local cache (perhaps read-only, shared) needs no lock.
        lock = session_lock(Path(one.cache_dir), eid) if settings.mode == "remote" else contextlib.nullcontext()
        try:
            with lock:
                manifest = _fetch(one, eid, settings)
        except (FetchError, SessionDataError):
            raise
        except Exception as err:
            raise FetchError(f"session {eid}: {redact(f'{type(err).__name__}: {err}', secrets)}") from None
    write_json(manifest_path, manifest)
    return manifest


@contextlib.contextmanager
def private_one_params(settings: OneConfig) -> Iterator[None]:
    """With one.cache_dir set in remote mode, keep ONE out of the home folder while it works.

    ONE keeps its parameters in ~/.one (HOME, read when it writes them) and, meeting a server for
    the first time, makes ~/Downloads/ONE/<host> its download folder. Here HOME is a temporary
    folder, deleted afterwards, in which cache_dir is registered for the server first, so ONE
    writes only into cache_dir. Without cache_dir, ONE's own parameters and folders are used.
    """
    if settings.mode != "remote" or not settings.cache_dir:
        yield
        return
    import one.params

    home = os.environ.get("HOME")
    with tempfile.TemporaryDirectory(prefix="mtm-one-home-") as private:
        os.environ["HOME"] = private
        try:
            one.params.setup(client=settings.base_url, silent=True, cache_dir=settings.cache_dir)
            yield
        finally:
            if home is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = home


def _download(one, eid: str, rel_path: str) -> None:
    with warnings.catch_warnings():
        # ONE warns when an exact, older revision is asked for: that is what a revision pin does
        warnings.filterwarnings("ignore", message=".*may have been revised.*")
        one.load_datasets(eid, [rel_path], download_only=True, check_hash=False)


def _fetch(one, eid: str, settings: OneConfig) -> dict[str, Any]:
    import one as one_package

    remote = settings.mode == "remote"
    records = with_retries(lambda: one.list_datasets(eid, details=True), what=f"{eid} list datasets")
    if len(records) == 0:
        raise FetchError(f"session {eid}: no datasets found in the ONE cache {one.cache_dir} (is the eid right?)")
    session_path = Path(one.eid2path(eid))
    rel_session = session_path.relative_to(one.cache_dir).as_posix()
    chosen, probes = select_datasets(
        records, revision=settings.revision, spike_sorter=settings.spike_sorter
    )
    datasets = []
    for row in chosen.itertuples():
        size = None if pd.isna(row.file_size) else int(row.file_size)
        md5 = row.hash if isinstance(row.hash, str) and row.hash else None
        path = session_path / row.rel_path
        download = lambda rel=row.rel_path: _download(one, eid, rel)
        for attempt in range(2 if remote else 1):
            with_retries(download, what=f"{eid} {row.rel_path}", retries=int(settings.retries))
            try:
                verify_file(eid, path, row.rel_path, size=size, md5=md5)
                break
            except SessionDataError:
                if not remote or attempt == 1:
                    raise
                path.unlink(missing_ok=True)  # a partial download from a killed job: fetch it again
        datasets.append(
            dict(rel_path=row.rel_path, collection=row.collection, revision=row.revision, file_size=path.stat().st_size, hash=md5)
        )
    return dict(
        eid=eid,
        mode=settings.mode,
        base_url=settings.base_url if remote else None,
        cache_dir=str(Path(one.cache_dir).resolve()),
        session_path=rel_session,
        revision_pin=settings.revision,
        spike_sorter=settings.spike_sorter,
        sortings_found=spike_sortings(records),
        probes=probes,
        datasets=datasets,
        one_version=one_package.__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )

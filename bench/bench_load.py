"""Time and peak memory of loading a binned session (800 trials x 100 bins x 700 units), against
the floor: reading the file and decompressing its counts.

One synthetic session (Poisson counts, uint8) is written twice: by `mtm.session.write_session`
(the counts as one fixed_size_binary value per trial, in row groups of about 2 MB of counts),
and in the earlier layout ("legacy": a
fixed_size_list column, one Parquet value per count, dictionary-encoded; what write_session
wrote before, and what files binned then still hold). Procedures:

    floor         read the current file's bytes, and zstd-decompress the counts, stored as 1 MiB
                  frames at the level write_session uses (as Parquet stores them, in pages of
                  about 1 MB): the work no loader of these bytes can skip
    arrow         pyarrow.parquet.read_table of the counts column alone (Arrow's whole read)
    load/legacy   mtm.session.load_session of each file (all columns but true_rate, which
    load/current  these files lack)
    lazy/legacy   SessionTensors.from_file(path, CountsCache(1)).counts: the header, then the
    lazy/current  counts as a tensor (pretraining's path)

Time: rounds that take turns (A B C, C B A, ...) in one process; median [min-max] (IQR) per
procedure over rounds, and its per-round ratio to the floor. Memory: each procedure runs in a
fresh process (`--child`), after its imports and a warm-up on a tiny session; the peak is
VmHWM (reset through /proc/self/clear_refs) less VmRSS just before the load, the result alive;
its ratio is to the bytes of the arrays the procedure returns. (tracemalloc would miss Arrow's
and numpy's allocations; ru_maxrss of this process would count the generation of the data.)

Overlap: 4 session files read in turn through CountsCache(2) (every get a miss), each followed
by --compute-ms of sleep, a stand-in for GPU steps the CPU waits on, with and without
`prefetch` of the next session; the time spent in `get` per session.

    python bench/bench_load.py [--units 700 --trials 800 --bins 100 --rounds 7]   # about 1.5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import order, summary  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mtm.data import CountsCache, SessionTensors  # noqa: E402
from mtm.io import write_parquet  # noqa: E402
from mtm.session import COUNTS_ZSTD_LEVEL, TRIAL_COLUMNS, UNIT_COLUMNS, load_session, write_session  # noqa: E402

PROCEDURES = ("floor", "arrow", "load/legacy", "load/current", "lazy/legacy", "lazy/current")
FRAME = 1 << 20  # bytes of counts per zstd frame in the floor, about a Parquet page


def fake_session(n_trials: int, n_bins: int, n_units: int, seed: int = 0) -> dict:
    """write_session's arguments for a synthetic session: Poisson counts at log-normal rates."""
    rng = np.random.default_rng(seed)
    rates = rng.lognormal(np.log(5.0), 1.0, n_units) * 0.02  # expected counts per 20 ms bin
    counts = rng.poisson(rates, (n_trials, n_bins, n_units)).astype(np.uint8)
    trials = pd.DataFrame(
        {
            "trial_index": np.arange(n_trials),
            "split": rng.choice(["train", "val", "test"], n_trials),
            "align_time": np.cumsum(rng.uniform(2.5, 4.7, n_trials)),
            "choice": rng.choice([-1, 1], n_trials),
            "block": rng.choice([0.2, 0.5, 0.8], n_trials),
            "reward": rng.integers(0, 2, n_trials),
            "signed_contrast": rng.choice([-1, -0.25, 0, 0.25, 1], n_trials),
            "reaction_time": rng.uniform(0.1, 1.0, n_trials),
        }
    )
    units = pd.DataFrame(
        {
            "uuid": [f"{i:08d}" for i in range(n_units)], "probe": "probe00", "cluster_id": np.arange(n_units),
            "allen": "CA1", "beryl": "CA1", "cosmos": "HPF", "depth_um": np.arange(n_units) * 5.0,
            "firing_rate": rates / 0.02, "label": 1.0,
        }
    )  # fmt: skip
    behaviour = {k: rng.normal(size=(n_trials, n_bins)) for k in ("wheel_speed", "whisker_motion_energy")}
    meta = {"provenance": {"eid": "bench"}, "binning": {"n_bins": n_bins, "bin_size": 0.02}, "session": {"usable": True}}
    return dict(trials=trials, counts=counts, behaviour=behaviour, units=units, meta=meta)


def write_legacy_session(path: Path, *, trials, counts, behaviour, units, meta) -> None:
    """The session as write_session wrote it before (fixed_size_list columns, write_parquet's defaults)."""
    columns = {name: pa.array(trials[name].to_numpy().astype(str) if kind == pa.string() else trials[name].to_numpy(), type=kind)
               for name, kind in TRIAL_COLUMNS.items()}  # fmt: skip
    arrays = {"counts": counts, **{name: behaviour[name].astype(np.float32) for name in behaviour}}
    for name, array in arrays.items():
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), int(np.prod(array.shape[1:])))
    write_parquet(path, pa.table(columns), {**meta, "units": units.loc[:, list(UNIT_COLUMNS)].to_dict(orient="list")})


def write_files(folder: Path, n_trials: int, n_bins: int, n_units: int) -> dict:
    """The session in both layouts, their tiny versions (warm-ups), the floor's frames."""
    session = fake_session(n_trials, n_bins, n_units)
    tiny = fake_session(6, 5, 4, seed=1)
    for name, writer in (("current", write_session), ("legacy", write_legacy_session)):
        writer(folder / f"{name}.parquet", **session)
        writer(folder / f"tiny-{name}.parquet", **tiny)
    raw = session["counts"].tobytes()
    codec = pa.Codec("zstd", compression_level=COUNTS_ZSTD_LEVEL)
    frames = [(codec.compress(raw[i : i + FRAME]), len(raw[i : i + FRAME])) for i in range(0, len(raw), FRAME)]
    (folder / "frames.json").write_text(json.dumps([n for _, n in frames]))
    for i, (frame, _) in enumerate(frames):
        (folder / f"frame{i:04d}.zst").write_bytes(frame.to_pybytes())
    return session


def floor_frames(folder: Path) -> list[tuple[bytes, int]]:
    sizes = json.loads((folder / "frames.json").read_text())
    return [((folder / f"frame{i:04d}.zst").read_bytes(), n) for i, n in enumerate(sizes)]


def run(name: str, folder: Path, tiny: bool = False, frames=None) -> int:
    """Do procedure `name`; return the bytes of the arrays it produced (what it keeps alive)."""
    prefix = "tiny-" if tiny else ""
    if name == "floor":
        (folder / f"{prefix}current.parquet").read_bytes()
        codec = pa.Codec("zstd")
        pages = [codec.decompress(frame, decompressed_size=n) for frame, n in frames]  # all held, as a loader would
        return sum(page.size for page in pages)
    if name == "arrow":
        table = pq.read_table(folder / f"{prefix}current.parquet", columns=["counts"], page_checksum_verification=True)
        return table.nbytes
    kind, layout = name.split("/")
    path = folder / f"{prefix}{layout}.parquet"
    if kind == "load":
        s = load_session(path)
        return s.counts.nbytes + s.wheel_speed.nbytes + s.whisker_motion_energy.nbytes + int(s.trials.memory_usage(deep=True).sum())
    return SessionTensors.from_file(path, CountsCache(1)).counts.nbytes


def child(name: str, folder: Path) -> None:
    """Peak memory of one procedure, in this fresh process: print {"peak": bytes, "arrays": bytes}."""
    frames = floor_frames(folder) if name == "floor" else None
    tiny_frames = [(pa.Codec("zstd").compress(b"\0" * 64).to_pybytes(), 64)]
    run(name, folder, tiny=True, frames=tiny_frames)  # lazy imports and first allocations
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status("VmRSS")
    arrays = run(name, folder, frames=frames)
    print(json.dumps({"peak": _status("VmHWM") - before, "arrays": arrays}))


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def overlap(folder: Path, compute_s: float, rounds: int) -> dict[str, list[float]]:
    """Seconds spent in CountsCache.get per session, cycling through 4 files with a cache of 2."""
    paths = []
    for i in range(4):
        paths.append(folder / f"copy{i}.parquet")
        shutil.copy(folder / "current.parquet", paths[-1])
    waits: dict[str, list[float]] = {"no prefetch": [], "prefetch": []}
    for r in range(rounds):
        for mode in order(list(waits), r):
            cache = CountsCache(2)
            waited = 0.0
            sequence = paths * 2
            for i, path in enumerate(sequence):
                start = time.perf_counter()
                counts = cache.get(path)
                waited += time.perf_counter() - start
                if mode == "prefetch" and i + 1 < len(sequence):
                    cache.prefetch(sequence[i + 1])
                assert counts.shape[0] > 0
                time.sleep(compute_s)
            cache.close()
            waits[mode].append(waited / len(sequence))
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=700)
    parser.add_argument("--trials", type=int, default=800)
    parser.add_argument("--bins", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compute-ms", type=float, default=150.0, help="overlap: the compute per session")
    parser.add_argument("--child", nargs=2, metavar=("PROCEDURE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        session = write_files(folder, args.trials, args.bins, args.units)
        counts = session["counts"]
        for layout in ("current", "legacy"):
            assert np.array_equal(load_session(folder / f"{layout}.parquet").counts, counts), layout
        frames = floor_frames(folder)
        assert b"".join(pa.Codec("zstd").decompress(f, decompressed_size=n).to_pybytes() for f, n in frames) == counts.tobytes()
        del session

        times: dict[str, list[float]] = {name: [] for name in PROCEDURES}
        for r in range(args.rounds):
            for name in order(PROCEDURES, r):
                start = time.perf_counter()
                run(name, folder, frames=frames)
                times[name].append(time.perf_counter() - start)
        peaks: dict[str, list[dict]] = {name: [] for name in PROCEDURES}
        for r in range(2):
            for name in order(PROCEDURES, r):
                out = subprocess.run([sys.executable, __file__, "--child", name, tmp], capture_output=True, text=True, check=True)
                peaks[name].append(json.loads(out.stdout))
        waits = overlap(folder, args.compute_ms / 1e3, max(3, args.rounds // 2))

        sizes = {layout: (folder / f"{layout}.parquet").stat().st_size / 1e6 for layout in ("current", "legacy")}
    print(f"session: {args.trials} trials x {args.bins} bins x {args.units} units; counts {counts.nbytes / 1e6:.1f} MB uint8; "
          f"file {sizes['current']:.1f} MB (legacy layout {sizes['legacy']:.1f} MB); zstd level {COUNTS_ZSTD_LEVEL}")  # fmt: skip
    print(f"time over {args.rounds} interleaved rounds: median [min-max] (IQR), and per-round ratio to the floor")
    for name in PROCEDURES:
        ratio = [t / f for t, f in zip(times[name], times["floor"])]
        print(f"  {name:13s} {summary([t * 1e3 for t in times[name]], '.0f')} ms   x floor {summary(ratio)}")
    print("peak memory above the process's resting RSS, fresh process per procedure (2 runs each)")
    for name in PROCEDURES:
        peak = max(p["peak"] for p in peaks[name])
        arrays = peaks[name][0]["arrays"]
        print(f"  {name:13s} {peak / 1e6:6.0f} MB   arrays {arrays / 1e6:5.0f} MB   x arrays {peak / arrays:.2f}")
    print(f"overlap: 4 files through CountsCache(2), {args.compute_ms:.0f} ms of compute (sleep) per session; "
          "wait in get per session, median [min-max]")  # fmt: skip
    for mode, values in waits.items():
        print(f"  {mode:13s} {summary([w * 1e3 for w in values], '.0f')} ms")


if __name__ == "__main__":
    main()

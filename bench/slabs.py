#!/usr/bin/env python3
"""What splitting a sweep into slab jobs costs: one job against N slab jobs plus the gather.

    python bench/slabs.py [--frames 100] [--jobs 4] [--out bench/out]

On the Pilatus-6M-sized sweep of bench/throughput.py (cached in --out), runs import_data and
mask_peaks once as a single job and once as --jobs slab jobs (one after another, 1 thread each,
so the sum of the job times is the total work) followed by the --gather job, and checks the
outputs are equal. Prints seconds per job, the overhead of the split (sum of slab jobs +
gather, over the single job; each job pays the ~1-2 s process start-up) and the gather's copy
rate in MB/s of compressed chunks (no decoding; start-up included). On a cluster the slab
jobs run side by side, so a step's wall-clock time approaches max(slab job) + gather.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import SCRIPTS, ensure_sweep, measured  # noqa: E402


def same_arrays(a: Path, b: Path, key: str) -> bool:
    import h5py
    import numpy as np

    with h5py.File(a) as fa, h5py.File(b) as fb:
        da, db = fa[key], fb[key]
        step = da.chunks[0]
        return all(
            np.array_equal(da[i : i + step], db[i : i + step]) for i in range(0, da.shape[0], step)
        )


def split_run(name, script, args, outdir: Path, jobs: int):
    """(single job seconds, [slab job seconds], gather seconds, gathered file, single file)."""
    single = outdir / f"{name}_one.nxs"
    t_one, _ = measured(script, *args, "--nproc", 1, "--outfile", single)
    parts, t_parts = [], []
    for k in range(jobs):
        parts.append(outdir / f"{name}_part{k}.nxs")
        t, _ = measured(script, *args, "--slab", k, jobs, "--nproc", 1, "--outfile", parts[-1])
        t_parts.append(t)
    gathered = outdir / f"{name}_gathered.nxs"
    t_gather, _ = measured(script, *args, "--gather", *parts, "--outfile", gathered)
    for p in parts:
        p.unlink()
    return t_one, t_parts, t_gather, gathered, single


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--out", type=Path, default=HERE / "out")
    a = p.parse_args()
    d = ensure_sweep(a.out, a.frames, 20)
    work = d / "slabs"
    work.mkdir(exist_ok=True)
    expt = d / "crystal/sweep.expt"
    geom = work / "geometry.nxs"
    measured(SCRIPTS / "import_geometry.py", expt, "--outfile", geom)
    # chunks of 10 frames: 10 frame-chunks to spread over the jobs
    imp = split_run("data", SCRIPTS / "import_data.py", [expt, "--chunks", 10, 0, 0], work, a.jobs)
    data = imp[4]
    peaks = work / "peaks.nxs"
    measured(SCRIPTS / "find_peaks.py", geom, data, "--count_threshold", 20, "--nproc", 2,
             "--outfile", peaks)  # fmt: skip
    mask = split_run("mask", SCRIPTS / "mask_peaks.py", [geom, data, peaks], work, a.jobs)
    print(f"# {a.frames} frames of 2463 x 2527 (Pilatus 6M), {a.jobs} slab jobs, 1 thread each")
    print(f"{'step':<12}{'one job s':>10}{'slab jobs s':>24}{'gather s':>10}"
          f"{'overhead':>10}{'gather MB/s':>13}{'equal':>7}")  # fmt: skip
    for step, (t_one, t_parts, t_gather, gathered, single), key in (
        ("import_data", imp, "entry/image_series/data"),
        ("mask_peaks", mask, "entry/mask/signal"),
    ):
        size_mb = gathered.stat().st_size / 1e6
        overhead = (sum(t_parts) + t_gather) / t_one - 1
        parts = " ".join(f"{t:.1f}" for t in t_parts)
        equal = same_arrays(gathered, single, key)
        print(f"{step:<12}{t_one:>10.1f}{parts:>24}{t_gather:>10.2f}{overhead:>+10.0%}"
              f"{size_mb / t_gather:>13.0f}{str(equal):>7}")  # fmt: skip


if __name__ == "__main__":
    main()

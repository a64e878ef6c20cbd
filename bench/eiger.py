#!/usr/bin/env python3
"""Eiger import speed: 16M-sized bitshuffle/LZ4 frames against the bare h5py read.

    python bench/eiger.py [--frames 20] [--out bench/out]

Makes (once, cached in --out) an EIGER2 16M-sized (4148 x 4362) uint16 data file of --frames
frames, compressed as the detector writes it (bitshuffle + LZ4, one chunk per frame), with the
real module-gap pattern of the Eiger 2X 16M frame in ../shared/data/real-detectors (65535 in
the gaps, 65534 at its bad pixels) and Poisson counts elsewhere, behind a DECTRIS-layout
master and a single-image-sequence .expt. Then times, each as a fresh process:

* the bare read: h5py + hdf5plugin decoding every frame into numpy, in one process;
* import_data.py at 1 and 2 threads (decode, mark invalid pixels, write data.nxs).

Prints frames/s and the ratio import rate / bare-read rate (the performance issue's target is
>= 0.7), plus the 2-thread speed-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from throughput import SCRIPTS, measured  # noqa: E402

NX, NY = 4148, 4362
CBF = HERE.parents[1] / "shared/data/real-detectors/cbf/dlsnxs2cbf_therm_0001.cbf.gz"

BARE_READ = """
import sys, time, h5py, hdf5plugin
t = time.perf_counter()
with h5py.File(sys.argv[1]) as f:
    d = f["entry/data/data_000001"]
    for i in range(d.shape[0]):
        d[i]
print(time.perf_counter() - t)
"""


def ensure_files(out: Path, frames: int) -> Path:
    import fabio
    import h5py
    import hdf5plugin
    import numpy as np
    from realdata import dectris_master, single_image_expt

    d = out / f"eiger16m_{frames}"
    expt = d / "sweep.expt"
    if expt.exists():
        return expt
    d.mkdir(parents=True, exist_ok=True)
    if CBF.exists():
        cbf = fabio.open(str(CBF)).data
        gaps, bad = cbf == -1, cbf == -2
    else:  # the real gap pattern is not here: an Eiger-like module grid
        gaps = np.zeros((NY, NX), bool)
        gaps[:, 1028::1040] = True
        gaps[512::551, :] = True
        bad = np.zeros_like(gaps)
    rng = np.random.default_rng(1)
    name = "eiger16m_data_000001.h5"
    with h5py.File(d / name, "w") as f:
        ds = f.create_dataset(
            "entry/data/data", (frames, NY, NX), np.uint16, chunks=(1, NY, NX),
            **hdf5plugin.Bitshuffle(cname="lz4"),
        )  # fmt: skip
        for i in range(frames):
            frame = rng.poisson(0.8, (NY, NX)).astype(np.uint16)
            frame[gaps] = 65535
            frame[bad] = 65534
            ds[i] = frame
    master = dectris_master(d, [name], (NY, NX), bit_depth=16, name="eiger16m_master.h5")
    single_image_expt(expt, str(master), (NX, NY), frames, (-1, 65535), 0.075, single_file=True)
    return expt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    a = ap.parse_args()
    expt = ensure_files(a.out, a.frames)
    master = expt.parent / "eiger16m_master.h5"
    bare = min(float(measured("-c", BARE_READ, master)[0]) for _ in range(2))
    # measured() reports the wrapper's whole process time; the bare read prints its own too
    rows = []
    for threads in (1, 2):
        secs, rss = measured(
            SCRIPTS / "import_data.py", expt, "--nproc", threads,
            "--outfile", expt.parent / f"data_{threads}.nxs", threads=threads,
        )  # fmt: skip
        rows.append((threads, secs, rss))
    print(f"Eiger 16M-sized ({NX} x {NY}) bitshuffle/LZ4 uint16, {a.frames} frames")
    print(f"{'step':28s} {'seconds':>8s} {'frames/s':>9s} {'ratio to bare':>14s} {'RSS MB':>7s}")
    print(f"{'bare h5py read (1 thread)':28s} {bare:8.2f} {a.frames / bare:9.1f} {1.0:14.2f}")
    for threads, secs, rss in rows:
        print(
            f"{f'import_data --nproc {threads}':28s} {secs:8.2f} {a.frames / secs:9.1f} "
            f"{bare / secs:14.2f} {rss:7.0f}"
        )
    print(f"2 threads / 1 thread: {rows[0][1] / rows[1][1]:.2f}x")
    (a.out / "eiger.json").write_text(
        json.dumps({"frames": a.frames, "bare": bare, "import": rows}, indent=1)
    )


if __name__ == "__main__":
    main()

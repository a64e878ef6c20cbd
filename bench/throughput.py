#!/usr/bin/env python3
"""Throughput of every stage on a Pilatus-6M-sized simulated sweep, against the bare read.

    python bench/throughput.py [--frames 100] [--bkg_frames 20] [--out bench/out]

Makes (once, cached in --out) a 2463 x 2527 insulin-like sweep of --frames 0.1-deg frames as
miniCBF plus a background sweep, then times, each as a fresh process at 1 and 2 threads:

* import_data against the bare fabio read of the same CBF files (frames/s, MB/s of int32);
* find_peaks and mask_peaks in Mpx/s, with peak memory (RSS), at two sweep lengths to show
  that memory does not grow with the number of frames;
* bin_image_series against the bare read of the same data.nxs;

each for every --compression codec of data.nxs (default: bslz4 and gzip, side by side).
Prints one table; ratios > 1 mean slower than the bare read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def measured(*args, threads=None, exe=sys.executable, cwd=None):
    """Seconds and peak RSS (MB) of ``exe args...`` (default: this Python), via a wrapper that
    reports its own child."""
    code = (
        "import resource,subprocess,sys,time;t=time.perf_counter();"
        "r=subprocess.run(sys.argv[1:]);"
        "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
        " r.returncode)"
    )
    env = dict(os.environ)
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    out = subprocess.run(
        [sys.executable, "-c", code, str(exe), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    secs, rss, rc = out.stdout.strip().splitlines()[-1].split()
    if rc != "0":
        raise SystemExit(f"failed: {args}\n{out.stderr[-2000:]}")
    return float(secs), int(rss) / 1024


def print_table(rows: list[dict]):
    """Rows of one dict each as a Markdown table (None prints empty)."""
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |")


def ensure_sweep(out: Path, frames: int, bkg_frames: int) -> Path:
    from diffuseflow.simulate import preset, write_sweeps

    d = out / f"pilatus6m_{frames}"
    if (d / "truth.json").exists():
        return d
    t = time.perf_counter()
    sweeps = preset("insulin", n_frames=frames, bkg_frames=bkg_frames, seed=9)
    write_sweeps(sweeps, d, log=None, workers=os.cpu_count() or 1)
    print(f"# simulated {frames}+{bkg_frames} frames in {time.perf_counter() - t:.0f} s")
    return d


def bare_fabio_read(d: Path, kind="crystal"):
    import fabio

    files = sorted((d / kind / "images").glob(f"{kind}_*.cbf"))
    t = time.perf_counter()
    for f in files:
        fabio.open(str(f)).data.sum()  # touch the data
    return time.perf_counter() - t, len(files)


def bare_h5_read(path: Path, threads: int):
    from concurrent.futures import ThreadPoolExecutor

    from diffuseflow.io.nexus import ImageSeries

    t = time.perf_counter()
    with ImageSeries(path) as s, ThreadPoolExecutor(threads) as pool:
        for a, b in s.slabs():
            s.read(a, b, pool)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--bkg_frames", type=int, default=20)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--compression", nargs="+", default=["bslz4", "gzip"], help="codecs to time")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    d = ensure_sweep(a.out, a.frames, a.bkg_frames)
    half = ensure_sweep(a.out, a.frames // 2, 2)
    ny, nx = 2527, 2463
    mb = ny * nx * 4 / 2**20
    rows = []

    def row(stage, threads, secs, frames, rss=None, ref=None):
        px = frames * ny * nx
        rows.append(
            {
                "stage": stage,
                "threads": threads,
                "frames": frames,
                "seconds": round(secs, 2),
                "frames_per_s": round(frames / secs, 1),
                "MB_per_s": round(frames * mb / secs, 1),
                "Mpx_per_s": round(px / secs / 1e6, 1),
                "peak_rss_MB": None if rss is None else round(rss),
                "ratio_to_bare_read": None if ref is None else round(secs / ref, 2),
            }
        )

    # warm the numba cache so that compile time is not measured
    g, data = d / "geometry.nxs", d / "data.nxs"
    expt = d / "crystal" / "sweep.expt"
    measured(SCRIPTS / "import_geometry.py", expt, "--outfile", g)

    bare, n = bare_fabio_read(d)
    row("bare fabio read (CBF)", 1, bare, n)
    peaks = d / "peaks.nxs"
    for codec in a.compression:
        for t in (1, 2):
            secs, rss = measured(
                SCRIPTS / "import_data.py", expt, "--outfile", data, "--nproc", t,
                "--compression", codec, threads=t,
            )  # fmt: skip
            row(f"import_data [{codec}]", t, secs, n, rss, bare)
        for t in (1, 2):
            read = bare_h5_read(data, t)
            row(f"bare data.nxs read [{codec}]", t, read, n)
            secs, rss = measured(
                SCRIPTS / "find_peaks.py", g, data, "--count_threshold", 20, "--outfile", peaks,
                "--nproc", t, threads=t,
            )  # fmt: skip
            row(f"find_peaks [{codec}]", t, secs, n, rss, read)
            secs, rss = measured(
                SCRIPTS / "mask_peaks.py", g, data, peaks, "--outfile", d / "mask.nxs",
                "--nproc", t, threads=t,
            )  # fmt: skip
            row(f"mask_peaks [{codec}]", t, secs, n, rss)
    if a.compression[0] != a.compression[-1]:  # later steps read the first codec's data.nxs
        measured(SCRIPTS / "import_data.py", expt, "--outfile", data, "--nproc", 2,
                 "--compression", a.compression[0])  # fmt: skip

    # memory against sweep length: the same steps on half as many frames
    hexpt, hg, hdata = half / "crystal" / "sweep.expt", half / "geometry.nxs", half / "data.nxs"
    measured(SCRIPTS / "import_geometry.py", hexpt, "--outfile", hg)
    measured(SCRIPTS / "import_data.py", hexpt, "--outfile", hdata, "--nproc", 2,
             "--compression", a.compression[0])  # fmt: skip
    hn = a.frames // 2
    secs, rss = measured(
        SCRIPTS / "find_peaks.py", hg, hdata, "--count_threshold", 20,
        "--outfile", half / "peaks.nxs", "--nproc", 2, threads=2,
    )  # fmt: skip
    row("find_peaks", 2, secs, hn, rss)
    secs, rss = measured(
        SCRIPTS / "mask_peaks.py", hg, hdata, half / "peaks.nxs",
        "--outfile", half / "mask.nxs", "--nproc", 2, threads=2,
    )  # fmt: skip
    row("mask_peaks", 2, secs, hn, rss)

    bexpt, bdata = d / "background" / "sweep.expt", d / "bkg_data.nxs"
    nb = a.bkg_frames
    for codec in a.compression:
        measured(SCRIPTS / "import_data.py", bexpt, "--outfile", bdata, "--nproc", 2,
                 "--compression", codec)  # fmt: skip
        for t in (1, 2):
            read = bare_h5_read(bdata, t)
            row(f"bare bkg_data.nxs read [{codec}]", t, read, nb)
            secs, rss = measured(
                SCRIPTS / "bin_image_series.py", bdata, 10, 20, 20, "--valid_range", 0, 200,
                "--outfile", d / "binned.nxs", "--nproc", t, threads=t,
            )  # fmt: skip
            row(f"bin_image_series [{codec}]", t, secs, nb, rss, read)

    print_table(rows)
    print(f"# machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

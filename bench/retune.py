#!/usr/bin/env python3
"""Retuning find_peaks: the import's strong-pixel list against a second pass over the stack.

    python bench/retune.py [--frames 100] [--out bench/out] [--threads 2]

On the Pilatus-6M bench sweep of bench/throughput.py (made once, cached in --out), each step a
fresh process:

* import_data with the strong-pixel list (the default, floor 10) and without it
  (``--strong_pixel_floor none``): what the fused search costs the import;
* find_peaks on the file without a list (it decodes every frame: what a rerun cost before)
  and on the file with it, at count_threshold 20, 25 and auto: the rerun after editing
  ``find_peaks.count_threshold``, as a fraction of the import (the performance issue's target:
  <= 10 %);
* the peak models and peak pixels of both paths compared (they must be identical).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
from throughput import SCRIPTS, ensure_sweep, measured, print_table

KEYS = ("peak_model/r0", "peak_model/sigma", "peaks/observed_phi", "peaks/observed_px_y",
        "peaks/observed_px_x", "diffuseflow_search/histogram")  # fmt: skip


def same_peaks(a: Path, b: Path) -> bool:
    with h5py.File(a) as fa, h5py.File(b) as fb:
        return all(np.array_equal(fa[f"entry/{k}"][()], fb[f"entry/{k}"][()]) for k in KEYS)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--bkg_frames", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    d = ensure_sweep(a.out, a.frames, a.bkg_frames)
    t = a.threads
    expt, g = d / "crystal" / "sweep.expt", d / "geometry.nxs"
    listed, plain = d / "data.nxs", d / "data_nolist.nxs"
    if not g.exists():
        measured(SCRIPTS / "import_geometry.py", expt, "--outfile", g)
    rows = []

    def row(step, secs, rss, note=""):
        rows.append({"step": step, "seconds": round(secs, 2), "peak_rss_MB": round(rss),
                     "note": note})  # fmt: skip
        return secs

    imp = {}
    for threads in sorted({1, t}):
        for name, out, floor in (("with list", listed, "10"), ("no list", plain, "none")):
            secs, rss = measured(
                SCRIPTS / "import_data.py", expt, "--outfile", out, "--nproc", threads,
                "--strong_pixel_floor", floor, threads=threads,
            )  # fmt: skip
            imp[threads, name] = row(f"import_data, {name}, {threads} thread(s)", secs, rss)
        cost = imp[threads, "with list"] / imp[threads, "no list"] - 1
        rows[-2]["note"] = f"the list costs the import {cost:+.1%}"
    with h5py.File(listed) as f:
        n_listed = len(f["entry/diffuseflow_strong/frame"])
    size = listed.stat().st_size / plain.stat().st_size - 1
    rows[-2]["note"] += f"; {n_listed} pixels listed, data.nxs {size:+.2%}"
    ref = imp[t, "with list"]

    def peaks(data, threshold, out):
        return measured(
            SCRIPTS / "find_peaks.py", g, data, "--count_threshold", threshold,
            "--outfile", out, "--nproc", t, threads=t,
        )  # fmt: skip

    secs, rss = peaks(plain, 20, d / "peaks_stack.nxs")
    stack = row("find_peaks 20, stack pass (no list)", secs, rss, f"{secs / ref:.1%} of the import")
    for threshold in (20, 25, "auto"):
        out = d / f"peaks_list_{threshold}.nxs"
        secs, rss = peaks(listed, threshold, out)
        note = f"{secs / ref:.1%} of the import, {stack / secs:.1f}x faster than the stack pass"
        if threshold == 20:
            note += "; identical to the stack pass" if same_peaks(out, d / "peaks_stack.nxs") else (
                "; DIFFERS from the stack pass")  # fmt: skip
        row(f"find_peaks {threshold}, from the list", secs, rss, note)

    print(f"# {a.frames} Pilatus-6M frames; {t} threads unless stated; {os.cpu_count()} cores")
    print_table(rows)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    if any("DIFFERS" in r["note"] for r in rows):
        sys.exit("the strong-pixel list gave other peaks than the stack pass")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The whole front half through the workflow against one bare decode of the raw images.

    python bench/front_half.py [--frames 500] [--bkg_frames 50] [--out bench/out]

On the Pilatus-6M bench sweep of bench/throughput.py (--frames crystal + --bkg_frames
background miniCBF frames, made once and cached in --out): a fresh workflow directory, then
``snakemake --cores 2`` on the front half's targets (geometry.nxs, data.nxs, peaks.nxs,
mask.nxs of the sweep; bkg_data.nxs and its binned count rate), timed from start to end with
Snakemake's own start-up included. Against it: one bare decode of the same CBF files (crystal
and background) by fabio in 2 worker processes. Then a rerun after editing
``find_peaks.count_threshold`` (20 -> 25), against the import's time from its benchmark file.
Prints the per-rule times (Snakemake's benchmark files), the ratios and the performance
issue's targets (front half <= 3x the bare decode, stretch 2x; the retuned rerun of find_peaks
<= 10 % of the import).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml
from throughput import ROOT, ensure_sweep

FRONT_HALF = ("import_geometry", "import_data", "find_peaks", "mask_peaks",
              "import_background", "bin_background")  # fmt: skip


def _decode(path: str) -> int:
    import fabio

    return int(fabio.open(path).data.sum() >= 0)


def bare_decode(files, workers: int) -> float:
    t = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode, map(str, files), chunksize=8))
    return time.perf_counter() - t


def workflow_config(d: Path, threshold) -> dict:
    return {
        "results": "results",
        "threads": 2,
        "datasets": {
            "bench": {"expt": str(d / "crystal" / "sweep.expt"), "background": "bench_bkg"}
        },
        "backgrounds": {"bench_bkg": {"expt": str(d / "background" / "sweep.expt")}},
        "find_peaks": {"count_threshold": threshold, "sigma_cutoff": 3},
        "bin_background": {"bins": [10, 20, 20], "valid_range": [0, 200]},
    }


def run_snakemake(wd: Path, cfg: dict, cores: int) -> float:
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = [f"results/bench/{n}.nxs" for n in ("geometry", "data", "peaks", "mask")]
    targets += ["results/bench_bkg/bkg_data.nxs", "results/bench_bkg/bkg_data_binned.nxs"]
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(wd), "--configfile", str(wd / "config.yaml"),
           "--cores", str(cores), *targets]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"snakemake failed:\n{proc.stderr[-3000:]}")
    return secs


def rule_seconds(wd: Path) -> dict:
    out = {}
    for rule in FRONT_HALF:
        for tsv in (wd / "benchmarks" / rule).glob("*.tsv"):
            with open(tsv) as fh:
                out[rule] = float(next(csv.DictReader(fh, delimiter="\t"))["s"])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--bkg_frames", type=int, default=50)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    d = ensure_sweep(a.out, a.frames, a.bkg_frames)
    files = sorted((d / "crystal" / "images").glob("*.cbf"))
    files += sorted((d / "background" / "images").glob("*.cbf"))
    bare_decode(files[:20], a.cores)  # warm the file cache and the workers' imports
    bare = bare_decode(files, a.cores)
    wd = a.out / f"front_half_{a.frames}"
    if wd.exists():
        subprocess.run(["rm", "-rf", str(wd)], check=True)
    wd.mkdir(parents=True)
    whole = run_snakemake(wd, workflow_config(d, 20), a.cores)
    per_rule = rule_seconds(wd)
    retune = run_snakemake(wd, workflow_config(d, 25), a.cores)
    after = rule_seconds(wd)
    result = {
        "frames": a.frames,
        "bkg_frames": a.bkg_frames,
        "cores": a.cores,
        "bare_decode_s": round(bare, 2),
        "workflow_s": round(whole, 2),
        "workflow_x_bare_decode": round(whole / bare, 2),
        "rules_s": {k: round(v, 2) for k, v in per_rule.items()},
        "retune_workflow_s": round(retune, 2),
        "retune_find_peaks_s": round(after["find_peaks"], 2),
        "retune_find_peaks_x_import": round(after["find_peaks"] / per_rule["import_data"], 3),
    }
    print(f"# {a.frames} + {a.bkg_frames} Pilatus-6M frames, {a.cores} cores "
          f"({os.cpu_count()} on the machine)")  # fmt: skip
    print("| | seconds | ratio | target |")
    print("|---|---|---|---|")
    print(f"| bare fabio decode, {a.cores} workers ({len(files)} CBF files) | {bare:.1f} | 1 | |")
    print(f"| front half, snakemake --cores {a.cores} (start-up included) | {whole:.1f} | "
          f"{whole / bare:.2f}x the bare decode | <= 3x (stretch 2x) |")  # fmt: skip
    for rule in FRONT_HALF:
        if rule in per_rule:
            print(f"| - {rule} (benchmark file) | {per_rule[rule]:.1f} | | |")
    print(f"| rerun after count_threshold 20 -> 25 (snakemake) | {retune:.1f} | | |")
    share = after["find_peaks"] / per_rule["import_data"]
    print(f"| - find_peaks of the rerun | {after['find_peaks']:.2f} | "
          f"{share:.1%} of the import | <= 10 % |")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

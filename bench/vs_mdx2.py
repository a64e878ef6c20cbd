#!/usr/bin/env python3
"""diffuseflow against mdx2 1.0.5, stage by stage, on the same files and the same cores.

    python bench/vs_mdx2.py [--frames 100] [--bkg_frames 20] [--out bench/out]

Uses the Pilatus-6M-sized simulated sweep of bench/throughput.py (2463 x 2527, 0.1-deg
frames) and its background sweep, imported once by diffuseflow. Both programs then run on the
same geometry.nxs (diffuseflow's import in mdx2-compatible mode, which mdx2 reads), data.nxs
and bkg_data.nxs: find_peaks (--count_threshold 20), mask_peaks (--sigma_cutoff 3) and
bin_image_series (10 20 20 --valid_range 0 200), each as a fresh process, with 1 and 2 cores
(mdx2: --nproc N, joblib processes; diffuseflow: --nproc N threads). diffuseflow runs in
--mdx2_compat mode so that both do the same computation. mdx2 runs without dxtbx through
bench/mdx2_run.py, from the environment of bench/mdx2_env.py.

Prints seconds, Mpx/s, peak RSS (largest single process) and the speed ratio per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mdx2_env import ensure_mdx2_python  # noqa: E402
from throughput import SCRIPTS, ensure_sweep, measured  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--bkg_frames", type=int, default=20)
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    mdx2_py = ensure_mdx2_python()
    d = ensure_sweep(a.out, a.frames, a.bkg_frames)
    g, data, bkg = d / "geometry_compat.nxs", d / "data.nxs", d / "bkg_data.nxs"
    measured(SCRIPTS / "import_geometry.py", d / "crystal/sweep.expt", "--mdx2_compat",
             "--outfile", g)  # fmt: skip
    if not data.exists():
        measured(SCRIPTS / "import_data.py", d / "crystal/sweep.expt", "--outfile", data,
                 "--nproc", 2)  # fmt: skip
    if not bkg.exists():
        measured(SCRIPTS / "import_data.py", d / "background/sweep.expt", "--outfile", bkg,
                 "--nproc", 2)  # fmt: skip
    run_mdx2 = [mdx2_py, HERE / "mdx2_run.py"]
    px = a.frames * 2463 * 2527
    bpx = a.bkg_frames * 2463 * 2527
    rows = []
    for cores in (1, 2):
        stages = [
            ("find_peaks", px,
             [SCRIPTS / "find_peaks.py", g, data, "--count_threshold", 20, "--mdx2_compat",
              "--outfile", d / "vs_peaks.nxs"],
             [*run_mdx2, "find_peaks", g, data, "--count_threshold", 20,
              "--outfile", d / "vs_m_peaks.nxs"]),
            ("mask_peaks", px,
             [SCRIPTS / "mask_peaks.py", g, data, d / "vs_peaks.nxs", "--mdx2_compat",
              "--outfile", d / "vs_mask.nxs"],
             [*run_mdx2, "mask_peaks", g, data, d / "vs_m_peaks.nxs",
              "--outfile", d / "vs_m_mask.nxs"]),
            ("bin_image_series", bpx,
             [SCRIPTS / "bin_image_series.py", bkg, 10, 20, 20, "--valid_range", 0, 200,
              "--outfile", d / "vs_binned.nxs"],
             [*run_mdx2, "bin_image_series", bkg, 10, 20, 20, "--valid_range", 0, 200,
              "--outfile", d / "vs_m_binned.nxs"]),
        ]  # fmt: skip
        for name, npx, ours, theirs in stages:
            t_ours, m_ours = measured(*ours, "--nproc", cores, threads=cores)
            t_mdx2, m_mdx2 = measured(*theirs[1:], "--nproc", cores, "--logfile",
                                      d / f"mdx2.{name}.log", exe=theirs[0], cwd=d)  # fmt: skip
            rows.append({
                "stage": name, "cores": cores,
                "mdx2_s": round(t_mdx2, 2), "diffuseflow_s": round(t_ours, 2),
                "mdx2_Mpx_s": round(npx / t_mdx2 / 1e6, 1),
                "diffuseflow_Mpx_s": round(npx / t_ours / 1e6, 1),
                "mdx2_peak_MB": round(m_mdx2), "diffuseflow_peak_MB": round(m_ours),
                "speedup": round(t_mdx2 / t_ours, 1),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(
        f"# {a.frames} frames of 2463 x 2527 (+{a.bkg_frames} background); machine: "
        f"{os.cpu_count()} cores, python {sys.version.split()[0]}"
    )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

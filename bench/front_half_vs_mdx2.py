#!/usr/bin/env python3
"""mdx2 1.0.5's whole front half, its own import through real dxtbx, against diffuseflow's.

    python bench/front_half_vs_mdx2.py [--frames 500] [--bkg_frames 50] [--cores 2]

Needs Debian's python3-dials (bench/dxtbx_env.py builds the environment: dxtbx 3.11.2 with
mdx2 1.0.5). On the Pilatus-6M bench sweep of bench/throughput.py (made once in --out), the
same CBF images and the same cores:

* mdx2: import_geometry and import_data (crystal and background) through dxtbx, then
  find_peaks (--count_threshold 20), mask_peaks (--sigma_cutoff 3) and bin_image_series
  (10 20 20 --valid_range 0 200), each a fresh process with --nproc N; its .expt files are the
  simulator's in the legacy scan encoding, which is all dxtbx 3.11 reads;
* diffuseflow: the same six steps as the workflow runs them, each a fresh process with
  --nproc N (physical mode, its default; the per-stage ratios compare each tool's own
  defaults, as a user would run them).

Prints per-stage seconds and ratios and the total (the performance issue's target: >= 30x).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' legacy-scan conversion
from dxtbx_env import available, ensure_dxtbx_python  # noqa: E402
from realdata import legacy_scan  # noqa: E402
from throughput import SCRIPTS, ensure_sweep, measured, print_table  # noqa: E402


def legacy_copy(expt: Path, dst: Path) -> Path:
    """The .expt with its scan in the legacy encoding and an absolute image template."""
    doc = json.loads(expt.read_text())
    for scan in doc["scan"]:
        legacy_scan(scan)
    for iset in doc["imageset"]:
        iset["template"] = str((expt.parent / iset["template"]).resolve())
    dst.write_text(json.dumps(doc))
    return dst


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--bkg_frames", type=int, default=50)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if not available():
        raise SystemExit("needs Debian's python3-dials (apt-get install python3-dials)")
    py = ensure_dxtbx_python()
    d = ensure_sweep(a.out, a.frames, a.bkg_frames)
    n = a.cores
    work = a.out / f"front_half_vs_mdx2_{a.frames}"
    shutil.rmtree(work, ignore_errors=True)
    m, o = work / "mdx2", work / "diffuseflow"
    m.mkdir(parents=True)
    o.mkdir()
    crystal = legacy_copy(d / "crystal" / "sweep.expt", m / "crystal.expt")
    background = legacy_copy(d / "background" / "sweep.expt", m / "background.expt")

    def mdx2(step, *args):
        return measured("-m", f"mdx2.command_line.{step}", *args, "--logfile",
                        m / f"{step}.{len(args)}.log", exe=py, cwd=m)  # fmt: skip

    nproc = ("--nproc", n)
    theirs = {
        "import_geometry": mdx2("import_geometry", crystal, "--outfile", "geometry.nxs"),
        "import_data": mdx2("import_data", crystal, "--outfile", "data.nxs", "--datastore",
                            "datastore", *nproc),
        "find_peaks": mdx2("find_peaks", "geometry.nxs", "data.nxs", "--count_threshold", 20,
                           "--outfile", "peaks.nxs", *nproc),
        "mask_peaks": mdx2("mask_peaks", "geometry.nxs", "data.nxs", "peaks.nxs",
                           "--sigma_cutoff", 3, "--outfile", "mask.nxs", *nproc),
        "import_background": mdx2("import_data", background, "--outfile", "bkg_data.nxs",
                                  "--datastore", "datastore_bkg", *nproc),
        "bin_background": mdx2("bin_image_series", "bkg_data.nxs", 10, 20, 20,
                               "--valid_range", 0, 200, "--outfile", "bkg_binned.nxs", *nproc),
    }  # fmt: skip
    cx, bx = d / "crystal" / "sweep.expt", d / "background" / "sweep.expt"

    def ours_run(script, *args):
        return measured(SCRIPTS / f"{script}.py", *args, threads=n)

    ours = {
        "import_geometry": ours_run("import_geometry", cx, "--outfile", o / "geometry.nxs"),
        "import_data": ours_run("import_data", cx, "--outfile", o / "data.nxs", *nproc),
        "find_peaks": ours_run("find_peaks", o / "geometry.nxs", o / "data.nxs",
                               "--count_threshold", 20, "--outfile", o / "peaks.nxs", *nproc),
        "mask_peaks": ours_run("mask_peaks", o / "geometry.nxs", o / "data.nxs",
                               o / "peaks.nxs", "--outfile", o / "mask.nxs", *nproc),
        "import_background": ours_run("import_data", bx, "--outfile", o / "bkg_data.nxs",
                                      "--strong_pixel_floor", "none", *nproc),
        "bin_background": ours_run("bin_image_series", o / "bkg_data.nxs", 10, 20, 20,
                                   "--valid_range", 0, 200, "--outfile", o / "binned.nxs",
                                   *nproc),
    }  # fmt: skip
    rows = []
    for stage in theirs:
        (tm, mm), (to, mo) = theirs[stage], ours[stage]
        rows.append({"stage": stage, "mdx2_s": round(tm, 2), "diffuseflow_s": round(to, 2),
                     "mdx2_peak_MB": round(mm), "diffuseflow_peak_MB": round(mo),
                     "speedup": round(tm / to, 1)})  # fmt: skip
    tm = sum(v[0] for v in theirs.values())
    to = sum(v[0] for v in ours.values())
    rows.append({"stage": "whole front half", "mdx2_s": round(tm, 1),
                 "diffuseflow_s": round(to, 1), "mdx2_peak_MB": "", "diffuseflow_peak_MB": "",
                 "speedup": round(tm / to, 1)})  # fmt: skip
    print(f"# {a.frames} + {a.bkg_frames} Pilatus-6M frames, --nproc {n}; target >= 30x")
    print_table(rows)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""integrate: diffuseflow against mdx2 1.0.5 on the same files and the same cores.

    python bench/integrate.py [--frames 100] [--out bench/out]

The Pilatus-6M-sized simulated sweep of bench/throughput.py (2463 x 2527, 0.1-deg frames),
imported, searched and masked by diffuseflow in mdx2-compatible mode (mdx2 reads those files);
then mdx2's integrate and ours (--mdx2_compat, the same computation; the tables are compared
voxel for voxel) with --subdivide 3 3 3, each a fresh process, at 1 and 2 cores (mdx2: --nproc
N joblib processes; ours: --nproc N threads). A half-length sweep (the first half of the
frames) shows whether our peak memory grows with the number of frames.

Prints seconds, Mpx/s, peak RSS (largest single process) and the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mdx2_env import ensure_mdx2_python  # noqa: E402
from throughput import SCRIPTS, ensure_sweep, measured  # noqa: E402


def prepare(d: Path, frames: int | None = None):
    """geometry (compat), data, peaks and mask of the sweep (of its first ``frames`` frames)."""
    tag = f"_{frames}" if frames else ""
    g = d / "geometry_compat.nxs"
    if not g.exists():
        measured(SCRIPTS / "import_geometry.py", d / "crystal/sweep.expt", "--mdx2_compat",
                 "--outfile", g)  # fmt: skip
    files = {k: d / f"{k}{tag}.nxs" for k in ("data", "peaks", "mask")}
    if tag:
        g = d / f"geometry_compat{tag}.nxs"
        if not g.exists():
            measured(SCRIPTS / "import_geometry.py", d / "crystal/sweep.expt", "--mdx2_compat",
                     "--frames", 1, frames, "--outfile", g)  # fmt: skip
    if not files["data"].exists():
        sel = ["--frames", 1, frames] if frames else []
        measured(SCRIPTS / "import_data.py", d / "crystal/sweep.expt", *sel, "--outfile",
                 files["data"], "--nproc", 2)  # fmt: skip
    if not files["mask"].exists():
        measured(SCRIPTS / "find_peaks.py", g, files["data"], "--count_threshold", 20,
                 "--mdx2_compat", "--outfile", files["peaks"], "--nproc", 2)  # fmt: skip
        measured(SCRIPTS / "mask_peaks.py", g, files["data"], files["peaks"], "--mdx2_compat",
                 "--outfile", files["mask"], "--nproc", 2)  # fmt: skip
    return g, files["data"], files["mask"]


def same_tables(a, b):
    """The issue's equality: counts, pixels, n identical, means to 1e-6 relative."""
    with h5py.File(a) as fa, h5py.File(b) as fb:
        ta, tb = fa["entry/hkl_table"], fb["entry/hkl_table"]
        for k in tb:
            x, y = ta[k][()], tb[k][()]
            if x.shape != y.shape:
                return False
            if k in ("counts", "pixels", "n", "ndiv"):
                if not np.array_equal(x, y):
                    return False
            elif not np.allclose(x, y, rtol=1e-6, atol=0):
                return False
        return True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    mdx2_py = ensure_mdx2_python()
    d = ensure_sweep(a.out, a.frames, 20)
    g, data, mask = prepare(d)
    px = a.frames * 2463 * 2527
    sub = ["--subdivide", 3, 3, 3]
    rows = []
    for cores in (1, 2):
        ours_out, theirs_out = d / f"int_{cores}.nxs", d / f"m_int_{cores}.nxs"
        t_ours, m_ours = measured(SCRIPTS / "integrate.py", g, data, "--mask", mask, *sub,
                                  "--mdx2_compat", "--nproc", cores, "--outfile", ours_out,
                                  threads=cores)  # fmt: skip
        t_mdx2, m_mdx2 = measured(HERE / "mdx2_run.py", "integrate", g, data, "--mask", mask,
                                  *sub, "--nproc", cores, "--outfile", theirs_out,
                                  "--logfile", d / "mdx2.integrate.log", exe=mdx2_py,
                                  cwd=d)  # fmt: skip
        rows.append({
            "stage": "integrate", "cores": cores,
            "mdx2_s": round(t_mdx2, 1), "diffuseflow_s": round(t_ours, 2),
            "mdx2_Mpx_s": round(px / t_mdx2 / 1e6, 1),
            "diffuseflow_Mpx_s": round(px / t_ours / 1e6, 1),
            "mdx2_peak_MB": round(m_mdx2), "diffuseflow_peak_MB": round(m_ours),
            "speedup": round(t_mdx2 / t_ours, 1),
            "tables_identical": same_tables(ours_out, theirs_out),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    half = a.frames // 2
    gh, dh, mh = prepare(d, half)
    t_half, m_half = measured(SCRIPTS / "integrate.py", gh, dh, "--mask", mh, *sub,
                              "--mdx2_compat", "--nproc", 2, "--outfile", d / "int_half.nxs",
                              threads=2)  # fmt: skip
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    with h5py.File(d / "int_2.nxs") as f, h5py.File(d / "int_half.nxs") as fh:
        n_full, n_half = len(f["entry/hkl_table/h"]), len(fh["entry/hkl_table/h"])
    print(
        f"# peak memory (2 cores): {half} frames {m_half:.0f} MB ({n_half} rows), "
        f"{a.frames} frames {rows[1]['diffuseflow_peak_MB']} MB ({n_full} rows); "
        f"{half}-frame run {t_half:.1f} s"
    )
    print(
        f"# {a.frames} frames of 2463 x 2527, subdivide 3 3 3; machine: {os.cpu_count()} cores, "
        f"python {sys.version.split()[0]}"
    )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""scale and merge: diffuseflow against mdx2 1.0.5 on the multi-sweep preset, same tables.

    python bench/scale.py [--sweeps 3] [--frames 100] [--size 1475 1517] [--out bench/out]

N sweeps of one insulin crystal, each from another orientation with its own overall scale and
drift, through one detector with a 10 % response (the truth tests' preset, larger), each taken
through import, find_peaks, mask_peaks, integrate and correct with the first sweep's
background; then, in three settings (mdx2's default: b only; b and a 50 x 50 detector grid;
all four factors, --mca2020 with that grid), mdx2's scale and ours (physical, and
--mdx2_compat: mdx2's algorithm), then each program's merge of its own scales, each a fresh
process on 2 cores (mdx2's scale and merge are serial; ours use what numpy/scipy thread).

Prints seconds, peak RSS (largest process), the speed ratio, and the observations table's
size in memory (the columns scale reads, float64) to set the memory against.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mdx2_env import ensure_mdx2_python  # noqa: E402
from throughput import SCRIPTS, measured, print_table  # noqa: E402

#: the sweeps' differences (as tests/test_scale.py), cycled for more than three
ORIENTATIONS = [
    dict(overall_scale=1.3, drift=(-0.008, 0.04, 30.0)),
    dict(overall_scale=0.8, drift=(0.006, -0.03, 24.0), crystal_rotation_deg=(0, 1, 0, 35)),
    dict(overall_scale=1.1, drift=(-0.004, 0.05, 36.0),
         crystal_rotation_deg=(0.3, 0.5, 0.8, 70)),
]  # fmt: skip

SETTINGS = {
    "b (mdx2 default)": [],
    "b + d 50x50": ["--detector.enable", "true", "--detector.nx", 50, "--detector.ny", 50],
    "all four (mca2020)": ["--detector.nx", 50, "--detector.ny", 50],
}


def run(*args):
    measured(*args)


def prepare(out: Path, n: int, frames: int, size) -> list[Path]:
    """Corrected tables of the n sweeps (made once)."""
    from diffuseflow.simulate import preset, write_sweeps

    tables = []
    for j in range(n):
        d = out / f"scale_{size[0]}x{size[1]}_{frames}_{j}"
        corrected = d / "corrected.nxs"
        tables.append(corrected)
        if corrected.exists():
            continue
        over = dict(ORIENTATIONS[j % len(ORIENTATIONS)], seed=40 + j)
        p = preset("insulin", nx=size[0], ny=size[1], n_frames=frames, osc=0.2, exposure=0.25,
                   bkg_frames=frames // 5, detector_response=0.1, **over)  # fmt: skip
        t = time.perf_counter()
        kinds = ("crystal", "background") if j == 0 else ("crystal",)
        write_sweeps(p, d, kinds=kinds, log=None, workers=os.cpu_count() or 1)
        print(f"# sweep {j}: simulated in {time.perf_counter() - t:.0f} s", flush=True)
        bkg = out / f"scale_{size[0]}x{size[1]}_{frames}_0"
        g, n2 = d / "geometry.nxs", ("--nproc", 2)
        run(SCRIPTS / "import_geometry.py", d / "crystal/sweep.expt", "--outfile", g)
        run(SCRIPTS / "import_data.py", d / "crystal/sweep.expt", "--outfile", d / "data.nxs",
            *n2)  # fmt: skip
        if j == 0:
            run(SCRIPTS / "import_data.py", d / "background/sweep.expt", "--outfile",
                d / "bkg_data.nxs", *n2)  # fmt: skip
            run(SCRIPTS / "bin_image_series.py", d / "bkg_data.nxs", 2, 20, 20, "--valid_range",
                0, 200, "--outfile", d / "binned.nxs")  # fmt: skip
        run(SCRIPTS / "find_peaks.py", g, d / "data.nxs", "--count_threshold", 20, "--outfile",
            d / "peaks.nxs", *n2)  # fmt: skip
        run(SCRIPTS / "mask_peaks.py", g, d / "data.nxs", d / "peaks.nxs", "--outfile",
            d / "mask.nxs", *n2)  # fmt: skip
        run(SCRIPTS / "integrate.py", g, d / "data.nxs", "--mask", d / "mask.nxs", "--subdivide",
            3, 3, 3, "--outfile", d / "integrated.nxs", *n2)  # fmt: skip
        run(SCRIPTS / "correct.py", g, d / "integrated.nxs", "--background", bkg / "binned.nxs",
            "--outfile", corrected)  # fmt: skip
        print(f"# sweep {j}: reduced in {time.perf_counter() - t:.0f} s", flush=True)
    return tables


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sweeps", type=int, default=3)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--size", type=int, nargs=2, default=(1475, 1517))
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    from diffuseflow.io.tables import read_table

    mdx2_py = ensure_mdx2_python()
    a.out.mkdir(parents=True, exist_ok=True)
    tables = prepare(a.out, a.sweeps, a.frames, a.size)
    n_obs = sum(len(read_table(t)) for t in tables)
    table_mb = n_obs * 8 * 8 / 1e6  # I, sigma, phi, ix, iy, s, voxel, sweep
    work = a.out / "scale_runs"
    work.mkdir(exist_ok=True)
    rows = []
    for name, extra in SETTINGS.items():
        mca = name.startswith("all")
        tag = name.split()[0]
        outs = {who: [work / f"{who}_{tag}_{j}.nxs" for j in range(len(tables))]
                for who in ("ours", "compat", "mdx2")}  # fmt: skip
        ours_flags = [*(["--mca2020"] if mca else []), *extra]
        t_ours, m_ours = measured(SCRIPTS / "scale.py", *tables, *ours_flags, "--outfile",
                                  *outs["ours"], threads=2)  # fmt: skip
        t_comp, m_comp = measured(SCRIPTS / "scale.py", *tables, *ours_flags, "--mdx2_compat",
                                  "--outfile", *outs["compat"], threads=2)  # fmt: skip
        t_mdx2, m_mdx2 = measured(HERE / "mdx2_run.py", "scale", *tables,
                                  *(["--mca2020", "true"] if mca else []), *extra, "--outfile",
                                  *outs["mdx2"], "--logfile", work / "mdx2.scale.log",
                                  exe=mdx2_py, cwd=work)  # fmt: skip
        tm_ours, mm_ours = measured(SCRIPTS / "merge.py", *tables, "--scale", *outs["ours"],
                                    "--outfile", work / f"merged_ours_{tag}.nxs",
                                    threads=2)  # fmt: skip
        tm_mdx2, mm_mdx2 = measured(HERE / "mdx2_run.py", "merge", *tables, "--scale",
                                    *outs["mdx2"], "--outfile", work / f"merged_mdx2_{tag}.nxs",
                                    "--logfile", work / "mdx2.merge.log", exe=mdx2_py,
                                    cwd=work)  # fmt: skip
        rows.append({
            "setting": name, "observations": n_obs,
            "mdx2 scale s": round(t_mdx2, 1), "ours s": round(t_ours, 2),
            "ours compat s": round(t_comp, 2), "scale speedup": round(t_mdx2 / t_ours, 1),
            "mdx2 merge s": round(tm_mdx2, 1), "ours merge s": round(tm_ours, 2),
            "merge speedup": round(tm_mdx2 / tm_ours, 1),
            "scale+merge speedup": round((t_mdx2 + tm_mdx2) / (t_ours + tm_ours), 1),
            "mdx2 peak MB": round(max(m_mdx2, mm_mdx2)),
            "ours peak MB": round(max(m_ours, mm_ours)), "table MB": round(table_mb),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    print(f"# {a.sweeps} sweeps of {a.frames} x 0.2 deg, {a.size[0]} x {a.size[1]} px, "
          f"subdivide 3; machine: {os.cpu_count()} cores, "
          f"python {sys.version.split()[0]}")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

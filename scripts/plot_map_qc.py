#!/usr/bin/env python3
"""QC figures and a summary table of one diffuse map.

From merged.nxs and map.nxs: sections.png (central hk0, h0l, 0kl sections), isotropic.png
(mean intensity against resolution), cc_half.png (CC1/2 of the random halves against
resolution), multiplicity.png (observations per voxel), summary.tsv and summary.html.

Example: python scripts/plot_map_qc.py results/maps/demo/merged.nxs results/maps/demo/map.nxs
-o results/maps/demo/qc
"""

from pathlib import Path

import h5py
import numpy as np

from diffuseflow import cli, figures
from diffuseflow.algorithms import maps, qc
from diffuseflow.io import nexus, tables


def main(argv):
    p = cli.parser("plot_map_qc.py", __doc__, compat=False)
    p.add_argument("merged", metavar="MERGED", help="merged.nxs")
    p.add_argument("map", metavar="MAP", help="map.nxs")
    p.add_argument("-o", "--outdir", required=True, help="where to write (required; no default)")
    p.add_argument("--shells", type=int, default=20, help="resolution shells of the curves")
    a = p.parse_args(argv)
    table = tables.read_table(a.merged, "merged.nxs", need=("intensity", "count", "s"))
    with nexus.open_input(a.map, "map.nxs", ["intensity"]) as f:
        g = f["entry/intensity"]
        values = g["signal"][()]
        axes = [g[n][()] for n in ("h", "k", "l")]
    out = Path(a.outdir)
    cli.check_output(out / "summary.tsv")
    out.mkdir(parents=True, exist_ok=True)
    stats = maps.shell_stats(table, a.shells)
    count = table["count"]
    used = count > 0
    rows = [
        ("merged voxels", int(used.sum()), ""),
        ("observations", int(count.sum()), ""),
        ("mean multiplicity", float(count[used].mean()) if used.any() else float("nan"), ""),
        ("voxels with multiplicity >= 3", int((count >= 3).sum()), ""),
        ("CC1/2 (all voxels)", maps.overall_cc_half(table), ""),
        ("resolution range", f"{1 / np.nanmax(table['s']):.2f}-{1 / np.nanmin(table['s']):.2f}",
         "Å"),
        ("map shape", "x".join(map(str, values.shape)), "h x k x l"),
        ("map grid points with data", float(np.isfinite(values).mean()), "fraction"),
        ("subdivision", " ".join(map(str, table.ndiv)), "per r.l.u."),
    ]  # fmt: skip
    with h5py.File(a.merged) as f:
        params = f.attrs.get("diffuseflow_parameters", "{}")
    for key, label in (
        ("outliers", "outliers rejected"),
        ("variance_scale", "scatter / counting variance (error scale^2)"),
    ):
        if f"diffuseflow_{key}" in table.attrs:
            rows.append((label, table.attrs[f"diffuseflow_{key}"].item(), ""))
    rows.append(("merge parameters", params, ""))
    with figures.written_atomically(out, ".plot_map_qc.") as (tmp, _):
        figures.map_sections(values, axes, tmp / "sections.png", Path(a.map).parent.name)
        figures.isotropic_average(stats.s_mid, stats.mean_intensity, tmp / "isotropic.png")
        figures.cc_half(stats.s_mid, stats.cc_half, tmp / "cc_half.png")
        figures.multiplicity_histogram(count, tmp / "multiplicity.png")
        qc.write_summary_tsv(rows, tmp / "summary.tsv")
        (tmp / "summary.html").write_text(qc.summary_html(f"{Path(a.map).parent.name}: map", rows))
    for q, v, u in rows:
        cli.log(f"{q}: {v:.6g} {u}" if isinstance(v, float) else f"{q}: {v} {u}")


if __name__ == "__main__":
    raise SystemExit(cli.run(main))

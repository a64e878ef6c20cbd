#!/usr/bin/env python3
"""QC figures and a summary table of the scaling of one map's sweeps.

From the corrected tables and the scales.nxs fitted to them (one each, same order):
factors.png (b(phi) of every sweep, d(x, y), the offset c(s), the absorption a(x, y)),
scaling_cc.png (CC1/2 and the Friedel-pair correlation against resolution, before and after
scaling), sweep_agreement.png (each sweep's own scaled merge against the merged map),
summary.tsv and summary.html.

Example: python scripts/plot_scale_qc.py results/a/corrected.nxs results/b/corrected.nxs
--scale scales/a.nxs scales/b.nxs --geometry results/a/geometry.nxs -o results/maps/ab/scaling/qc
"""

import json
from pathlib import Path

from diffuseflow import cli, figures
from diffuseflow.algorithms import correct, qc
from diffuseflow.algorithms import merge as merging
from diffuseflow.algorithms import scale as scaling
from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.errors import InputError
from diffuseflow.io import nexus, tables
from diffuseflow.io.scales import read_factors


def main(argv):
    p = cli.parser("plot_scale_qc.py", __doc__, compat=False)
    p.add_argument("hkl", metavar="CORRECTED", nargs="+", help="corrected.nxs of each sweep")
    p.add_argument("--scale", nargs="+", required=True, metavar="SCALES",
                   help="scales.nxs of each sweep, same order (required; no default)")  # fmt: skip
    p.add_argument("--geometry", help="geometry.nxs, for the Friedel split (default: none)")
    p.add_argument("--names", nargs="+", help="sweep names in the figures (default: file names)")
    p.add_argument("-o", "--outdir", required=True, help="where to write (required; no default)")
    p.add_argument("--shells", type=int, default=12, help="resolution shells of the curves")
    a = p.parse_args(argv)
    if len(a.scale) != len(a.hkl):
        raise InputError(f"--scale names {len(a.scale)} files for {len(a.hkl)} corrected tables")
    names = a.names or [Path(h).parent.name or Path(h).stem for h in a.hkl]
    if len(names) != len(a.hkl):
        raise InputError(f"--names gives {len(names)} names for {len(a.hkl)} tables")
    if a.shells < 2:
        raise InputError(f"--shells must be >= 2, is {a.shells}")
    out = Path(a.outdir)
    cli.check_output(out / "summary.tsv")
    need = ("intensity", "intensity_error", "op")
    tabs = [tables.read_table(path, "corrected.nxs", need=need) for path in a.hkl]
    factors = [read_factors(path) for path in a.scale]
    obs = merging.gather(tabs, a.hkl)
    coords = scaling.observation_coordinates(tabs, a.hkl)
    scaled = scaling.apply_factors(obs, coords, factors)
    operators = None
    if a.geometry:
        p1 = all(t.attrs.get("diffuseflow_p1") for t in tabs)
        geom = None if p1 else GeometryFile(a.geometry)
        operators = correct.FRIEDEL_OPERATORS if p1 else correct.LaueSymmetry.of(geom).operators
    q = qc.scaling_qc(obs, scaled, operators, a.shells)
    rows = [("sweeps", len(tabs), ""), ("observations", int(len(obs.ih)), "")]
    for name, f in zip(names, factors, strict=True):
        if "scaling" in f:
            u = f["scaling"][1]
            rows.append((f"{name}: b(phi) min / max", f"{u.min():.4g} / {u.max():.4g}", ""))
    rows.append(("factors", ", ".join(k for k in scaling.KINDS if k in factors[0]), ""))
    rows += [(k, float(v), "") for k, v in q.overall.items()]
    with nexus.open_input(a.scale[0], "scales.nxs") as f:
        summary = f["entry"].attrs.get("diffuseflow_scale_summary")
        params = f.attrs.get("diffuseflow_parameters", "{}")
    if summary:
        s = json.loads(summary)
        rows.append(("observations used by the fit", s.get("used", ""), ""))
        rows.append(("outliers rejected, by stage", json.dumps(s.get("outliers", {})), ""))
    rows.append(("scale parameters", params, ""))
    out.mkdir(parents=True, exist_ok=True)
    with figures.written_atomically(out, ".plot_scale_qc.") as (tmp, _):
        figures.scale_factors(factors, names, tmp / "factors.png")
        figures.scaling_cc(q, tmp / "scaling_cc.png")
        figures.sweep_agreement(q, names, tmp / "sweep_agreement.png")
        qc.write_summary_tsv(rows, tmp / "summary.tsv")
        title = f"{out.parent.parent.name}: scaling"
        (tmp / "summary.html").write_text(qc.summary_html(title, rows))
    for k, v, u in rows:
        cli.log(f"{k}: {v:.6g} {u}" if isinstance(v, float) else f"{k}: {v} {u}")


if __name__ == "__main__":
    raise SystemExit(cli.run(main))

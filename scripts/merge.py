#!/usr/bin/env python3
"""Merge corrected observations (mdx2 tutorial part 5) -> merged.nxs.

One intensity per asymmetric-unit voxel from one or more corrected tables (sweeps): an
inverse-variance mean weighted by the counts expected from the merged intensity (physical
mode; --mdx2_compat: by each observation's own counts, as mdx2, which biases low counts low),
optional outlier rejection (--outlier N sigma; both sides, mdx2 only the low side) and
half-data splits (--split randomHalf: seeded, reproducible; Friedel: by the Laue operator's
handedness, needs --geometry). --scale applies the factors scale.py (or mdx2's scale) fitted,
one scales.nxs per table: each observation becomes I / (a b d) - c / b; without --scale every
observation has scale 1.
"""

import argparse
import json

from diffuseflow import cli
from diffuseflow.algorithms import correct
from diffuseflow.algorithms import merge as merging
from diffuseflow.algorithms import scale as scaling
from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.errors import InputError
from diffuseflow.io import tables
from diffuseflow.io.scales import read_factors


def main(argv):
    p = cli.parser("merge.py", __doc__)
    p.add_argument("hkl", metavar="CORRECTED", nargs="+", help="corrected.nxs of each sweep")
    p.add_argument(
        "--outlier",
        type=cli.positive("--outlier"),
        help="reject observations more than this many sigma from the merged value "
        "(default: no rejection)",
    )
    p.add_argument("--split", choices=merging.SPLITS, help="also merge two halves (default: no)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random half split")
    p.add_argument(
        "--geometry", help="geometry.nxs (Laue operators) for --split Friedel (default: none)"
    )
    p.add_argument(
        "--scale",
        nargs="+",
        metavar="SCALES",
        help="scales.nxs of each corrected table, in the same order (default: none, scale 1)",
    )
    for kind in scaling.KINDS:
        p.add_argument(
            f"--{kind}",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"apply the {kind} factor where a scales.nxs has one (--no-{kind}: do not)",
        )
    p.add_argument("--outfile", default="merged.nxs", help="output file")
    a = p.parse_args(argv)
    cli.check_output(a.outfile)
    if a.scale and len(a.scale) != len(a.hkl):
        raise InputError(f"--scale names {len(a.scale)} files for {len(a.hkl)} corrected tables")
    if a.split == "Friedel" and not a.geometry:
        raise InputError("--split Friedel needs --geometry GEOM (its Laue operators)")
    settings = merging.MergeSettings(a.outlier, a.split, a.seed, a.mdx2_compat)
    params = {
        "outlier": a.outlier,
        "split": a.split,
        "seed": a.seed,
        "mdx2_compat": a.mdx2_compat,
        "tables": len(a.hkl),
        "scale": bool(a.scale),
        "factors": [k for k in scaling.KINDS if getattr(a, k)],
    }
    need = ("intensity", "intensity_error", "op")
    tabs = [tables.read_table(path, "corrected.nxs", need=need) for path in a.hkl]
    operators = None
    if a.split == "Friedel":
        p1 = all(t.attrs.get("diffuseflow_p1") for t in tabs)
        if p1:
            operators = correct.FRIEDEL_OPERATORS
        else:
            operators = correct.LaueSymmetry.of(GeometryFile(a.geometry)).operators
    forms = {
        path: t.attrs.get("diffuseflow_crystal_form") for path, t in zip(a.hkl, tabs, strict=True)
    }
    correct.check_same_form({k: json.loads(v) for k, v in forms.items() if v})
    obs = merging.gather(tabs, a.hkl)
    if a.scale:
        factors = [read_factors(path) for path in a.scale]
        use = [k for k in scaling.KINDS if getattr(a, k)]
        coords = scaling.observation_coordinates(tabs, a.hkl)
        obs = scaling.apply_factors(obs, coords, factors, use)
        cli.log(f"applied {', '.join(sorted({k for f in factors for k in f if k in use}))} factors")
    table, summary = merging.merge(obs, settings, operators, log=cli.log)
    if summary["voxels"] == 0:
        raise InputError(f"{a.hkl[0]}: no usable observation to merge")
    # mdx2's merged h, k, l are float64 (voxel / ndiv, not cast)
    dtypes = {**tables.MDX2_DTYPES, "h": float, "k": float, "l": float}
    known = [v for v in forms.values() if v]
    if known:
        table.attrs["diffuseflow_crystal_form"] = known[0]
    inputs = [*a.hkl, *(a.scale or [])]
    tables.write_table(a.outfile, table, "merge", params, inputs, None, dtypes=dtypes)
    cli.log(
        f"merged {summary['used']} of {summary['observations']} observations into "
        f"{summary['voxels']} voxels (weights: {summary['weights']})"
    )


if __name__ == "__main__":
    raise SystemExit(cli.run(main))

#!/usr/bin/env python3
"""Expand a merged table onto a dense h, k, l grid (mdx2 tutorial part 5) -> map.nxs.

Every grid point of --limits (in steps of the table's subdivision) is mapped to the asymmetric
unit by the Laue group of GEOM (--p1: Friedel's law; --nosymmetry: no expansion) and takes the
merged value there, NaN where none. Written as NXdata /entry/<signal> with axes h, k, l (NeXpy
plots it; mdx2 reads it as GridData), with the merged errors and multiplicities beside it.
"""

import argparse
import json

import numpy as np

from diffuseflow import cli
from diffuseflow.algorithms import correct, maps
from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.errors import InputError
from diffuseflow.io import nexus, tables


def main(argv):
    p = cli.parser("map.py", __doc__)
    p.add_argument("geom", metavar="GEOM", help="geometry.nxs (Laue group)")
    p.add_argument("hkl", metavar="MERGED", help="merged.nxs from merge")
    p.add_argument(
        "--limits",
        type=float,
        nargs=6,
        metavar=("HMIN", "HMAX", "KMIN", "KMAX", "LMIN", "LMAX"),
        help="h, k, l range of the grid (default: every merged voxel after symmetry expansion)",
    )
    p.add_argument(
        "--symmetry",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="expand by symmetry (--nosymmetry: the merged asymmetric unit only)",
    )
    p.add_argument("--p1", action="store_true", help="expand by Friedel's law only")
    p.add_argument("--signal", default="intensity", help="column of the merged table to map")
    p.add_argument("--outfile", default="map.nxs", help="output file")
    a = p.parse_args(argv)
    cli.check_output(a.outfile)
    table = tables.read_table(a.hkl, "merged.nxs", need=(a.signal,))
    voxels = table.voxels()
    if len(np.unique(voxels, axis=0)) < len(voxels):
        raise InputError(
            f"{a.hkl}: holds several rows of one voxel (a corrected table?); map needs the "
            "merged table from merge"
        )
    form = table.attrs.get("diffuseflow_crystal_form")
    if form and a.symmetry:
        merged_form = json.loads(form)  # the map's --p1 expands a table merged either way
        geom_form = correct.crystal_form(GeometryFile(a.geom), merged_form["laue"] == "-1")
        correct.check_same_form(
            {a.geom: geom_form, a.hkl: merged_form}, "cannot be mapped together"
        )
    if a.p1 or not a.symmetry:
        laue = None
    else:
        laue = correct.LaueSymmetry.of(GeometryFile(a.geom))
    if not a.symmetry:

        def identity(HKL):
            return HKL, np.zeros(len(HKL), np.int64)

        p1_mode = identity
    else:

        def p1_mode(HKL):
            return correct.friedel_to_asu(HKL, a.mdx2_compat)

    limits = a.limits or maps.default_limits(table, laue)
    extra = [c for c in ("intensity_error", "count") if c in table and c != a.signal]
    values, axes = maps.dense_map(table, laue, limits, (a.signal, *extra), p1_mode)
    params = {
        "limits": [float(v) for v in limits],
        "symmetry": a.symmetry,
        "p1": a.p1,
        "signal": a.signal,
    }
    with nexus.atomic_output(a.outfile) as tmp:
        with nexus.new_file(tmp, "map", params, [a.geom, a.hkl], nexus.sweep_of(a.hkl)) as f:
            nexus.nxdata(
                f["entry"],
                a.signal,
                values[a.signal].astype(np.float32),
                {"h": axes[0], "k": axes[1], "l": axes[2]},
                cls="GridData",
                **{c: values[c].astype(np.float32) for c in extra},
            )
    filled = np.isfinite(values[a.signal]).mean()
    shape = "x".join(map(str, values[a.signal].shape))
    cli.log(f"map {shape} over h, k, l = {limits}: {filled:.1%} of grid points have data")


if __name__ == "__main__":
    raise SystemExit(cli.run(main))

#!/usr/bin/env python3
"""Correct integrated counts (mdx2 tutorial part 5) -> corrected.nxs.

Count rate, minus the binned background rate at each observation's (phi, iy, ix), divided by
solid angle, polarisation, efficiency and attenuation; Miller indices mapped to the asymmetric
unit of the Laue group (--p1: Friedel's law only); s = |UB h| and the reciprocal-space volume.
Physical mode propagates the background's standard error, interpolates over empty background
bins, and drops (and counts) observations outside the background sweep's rotation range or
with no background around them; --mdx2_compat reproduces mdx2 1.0.5 (grid-interpolated
corrections, NaN spreading from empty bins, l-mirror for --p1).
"""

import argparse
import json

import numpy as np

from diffuseflow import cli
from diffuseflow.algorithms import binning, correct
from diffuseflow.algorithms.importing import GeometryFile
from diffuseflow.errors import InputError
from diffuseflow.geometry.model import air_attenuation_per_mm
from diffuseflow.io import nexus, tables


def main(argv):
    p = cli.parser("correct.py", __doc__)
    p.add_argument("geom", metavar="GEOM", help="geometry.nxs")
    p.add_argument("hkl", metavar="INTEGRATED", help="integrated.nxs from integrate")
    p.add_argument("--background", help="binned background (bkg_data_binned.nxs); default: none")
    for name in correct.CORRECTIONS:
        p.add_argument(
            f"--{name}",
            action=argparse.BooleanOptionalAction,
            default=True,
            help=f"apply the {name} correction",
        )
    p.add_argument(
        "--lorentz",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="multiply by the reciprocal-space volume (mdx2's Lorentz option)",
    )
    p.add_argument("--p1", action="store_true", help="Friedel symmetry only (ignore the group)")
    p.add_argument("--outfile", default="corrected.nxs", help="output file")
    a = p.parse_args(argv)
    cli.check_output(a.outfile)
    settings = correct.Settings(
        a.attenuation, a.efficiency, a.polarization, a.lorentz, a.p1, a.mdx2_compat
    )
    params = {k: getattr(settings, k) for k in settings.__dataclass_fields__}
    params["background"] = a.background is not None
    nexus.check_same_sweep({"geometry": a.geom, "integrated": a.hkl})
    table = tables.read_table(
        a.hkl, "integrated.nxs", need=("counts", "seconds", "pixels", "phi", "iy", "ix", "n")
    )
    if len(table) == 0:
        raise InputError(f"{a.hkl}: the integrated table is empty")
    geomfile = GeometryFile(a.geom)
    if geomfile.ub_matrix is None:
        raise InputError(f"{a.geom}: has no /entry/crystal/ub_matrix; is this geometry.nxs?")
    laue = None if a.p1 else correct.LaueSymmetry.of(geomfile)
    iy, ix = table["iy"].astype(float), table["ix"].astype(float)
    if a.mdx2_compat:
        grid_iy, grid_ix, grid = geomfile.correction_grid()
        factors = {
            name: correct.mdx2_interp((grid_iy, grid_ix), v, iy, ix) for name, v in grid.items()
        }
    else:
        geom = geomfile.sweep_geometry(False)
        factors = geom.corrections_at(iy, ix, air_attenuation_per_mm(geom.wavelength))
    background = binning.read_binned(a.background) if a.background else None
    out, summary = correct.correct_table(
        table, geomfile.ub_matrix, laue, factors, background, settings
    )
    if summary.get("outside_background_phi"):
        lo, hi = background.phi_range
        cli.log(
            f"dropped {summary['outside_background_phi']} observations outside the background "
            f"sweep's rotation range {lo:g}-{hi:g} deg"
        )
    if summary.get("empty_background"):
        cli.log(f"dropped {summary['empty_background']} observations with no background data")
    if "background_error" in summary:
        cli.log(f"{a.background}: no rate_error: {summary['background_error']}")
    if len(out) == 0:
        raise InputError(f"{a.hkl}: every observation was dropped (see the lines above)")
    out.attrs.update(
        {f"diffuseflow_{k}": v for k, v in summary.items() if isinstance(v, int | np.integer)}
    )
    out.attrs["diffuseflow_p1"] = bool(a.p1)
    out.attrs["diffuseflow_crystal_form"] = json.dumps(correct.crystal_form(geomfile, a.p1))
    inputs = [a.geom, a.hkl] + ([a.background] if a.background else [])
    dtypes = {**tables.MDX2_DTYPES, "n": np.int32}  # correct stores n as int32 (mdx2)
    tables.write_table(
        a.outfile, out, "correct", params, inputs, nexus.sweep_of(a.hkl), dtypes=dtypes
    )
    cli.log(
        f"{len(out)} of {summary['observations']} observations corrected "
        f"({', '.join(summary['corrections']) or 'solid angle only'})"
    )


if __name__ == "__main__":
    raise SystemExit(cli.run(main))

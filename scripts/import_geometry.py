#!/usr/bin/env python3
"""Import the geometry of a DIALS experiment into geometry.nxs (mdx2 1.0.5 layout).

Writes the crystal, its symmetry (gemmi), the per-pixel correction factors and the Miller-index
lookup grid, plus the resolved experiment so that later steps can compute exact geometry.
"""

from diffuseflow import cli
from diffuseflow.algorithms.importing import geometry_summary, write_geometry
from diffuseflow.io.expt import read_expt


def main(argv):
    p = cli.parser("import_geometry.py", __doc__)
    p.add_argument("expt", metavar="EXPT", help="DIALS experiments file, e.g. refined.expt")
    cli.add_experiment_selection(p)
    p.add_argument(
        "--sample_spacing",
        type=float,
        nargs=3,
        default=[1, 10, 10],
        metavar=("PHI", "IY", "IX"),
        help="lookup grid spacing: degrees, pixels, pixels",
    )
    p.add_argument("--outfile", default="geometry.nxs", help="output file")
    a = p.parse_args(argv)
    cli.check_output(a.outfile)
    expt = read_expt(a.expt, a.experiment, a.frames)
    cli.log(geometry_summary(expt))
    write_geometry(expt, a.outfile, a.sample_spacing, a.mdx2_compat, {"expt": a.expt}, log=cli.log)


if __name__ == "__main__":
    raise SystemExit(cli.run(main))

#!/usr/bin/env python3
"""Simulate a crystal rotation sweep and a crystal-free background sweep with known truth.

Writes OUTDIR/crystal/sweep.expt, OUTDIR/background/sweep.expt (DIALS ExperimentLists, current
format, relative image templates), their images, and OUTDIR/truth.json (the peak model and
every parameter, from which diffuseflow.simulate.load_simulation rebuilds the truth functions).
"""

from diffuseflow import cli
from diffuseflow.errors import InputError
from diffuseflow.simulate import PRESETS, preset, write_sweeps


def main(argv):
    p = cli.parser("simulate_sweep.py", __doc__, compat=False)
    p.add_argument("outdir", metavar="OUTDIR")
    p.add_argument("--preset", default="insulin", choices=sorted(PRESETS), help="crystal form")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("NX", "NY"),
        help="detector size in pixels (fast, slow); default: the preset's",
    )
    p.add_argument("--frames", type=int, help="crystal frames; default: the preset's")
    p.add_argument(
        "--osc", type=float, help="crystal oscillation per frame (degrees); default: the preset's"
    )
    p.add_argument("--bkg_frames", type=int, help="background frames; default: the preset's")
    p.add_argument(
        "--format",
        dest="image_format",
        choices=["cbf", "smv", "h5"],
        help="image format; default: the preset's",
    )
    p.add_argument("--compress", choices=["bz2", "gz"], help="compress each image; default: no")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="processes making the CBF/SMV frames (the files do not depend on it)",
    )
    a = p.parse_args(argv)
    if a.nproc < 1:
        raise InputError(f"--nproc must be >= 1, is {a.nproc}")
    over = {"seed": a.seed}
    if a.size:
        if min(a.size) < 16:
            raise InputError("--size must be at least 16 x 16 pixels")
        over["nx"], over["ny"] = a.size
    for key in ("n_frames", "osc", "bkg_frames", "image_format", "compress"):
        val = getattr(a, {"n_frames": "frames"}.get(key, key))
        if val is not None:
            over[key] = val
    if over.get("n_frames", 1) < 1 or over.get("bkg_frames", 1) < 1:
        raise InputError("--frames and --bkg_frames must be >= 1")
    written = write_sweeps(preset(a.preset, **over), a.outdir, log=cli.log, workers=a.nproc)
    for k, v in written.items():
        cli.log(f"{k}: {v}")


if __name__ == "__main__":
    raise SystemExit(cli.run(main))

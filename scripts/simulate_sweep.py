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
        "--overall_scale", type=float, help="scale of the crystal's scattering (default: 1)"
    )
    p.add_argument(
        "--drift",
        type=float,
        nargs=3,
        metavar=("SLOPE", "AMPLITUDE", "PERIOD"),
        help="b(phi) = overall_scale (1 + SLOPE x + AMPLITUDE sin(2 pi x / PERIOD)), x = phi - "
        "phi_start in degrees (default: no drift)",
    )
    p.add_argument(
        "--detector_response",
        type=float,
        help="amplitude of a smooth detector response d(x, y) (default: 0, flat)",
    )
    p.add_argument(
        "--absorption", type=float, help="amplitude of an absorption term a(x, y, phi) (default: 0)"
    )
    p.add_argument(
        "--crystal_rotation",
        type=float,
        nargs=4,
        metavar=("X", "Y", "Z", "DEG"),
        help="turn the crystal by DEG about the lab axis (X, Y, Z) (default: the preset's "
        "orientation)",
    )
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
    names = {"n_frames": "frames", "crystal_rotation_deg": "crystal_rotation"}
    for key in ("n_frames", "osc", "bkg_frames", "image_format", "compress", "overall_scale",
                "drift", "detector_response", "absorption", "crystal_rotation_deg"):  # fmt: skip
        val = getattr(a, names.get(key, key))
        if val is not None:
            over[key] = tuple(val) if isinstance(val, list) else val
    if a.drift and a.drift[2] == 0:
        raise InputError("--drift PERIOD must not be 0")
    if a.crystal_rotation and not any(a.crystal_rotation[:3]):
        raise InputError("--crystal_rotation needs a nonzero axis")
    if a.overall_scale is not None and not a.overall_scale > 0:
        raise InputError(f"--overall_scale must be > 0, is {a.overall_scale}")
    if over.get("n_frames", 1) < 1 or over.get("bkg_frames", 1) < 1:
        raise InputError("--frames and --bkg_frames must be >= 1")
    written = write_sweeps(preset(a.preset, **over), a.outdir, log=cli.log, workers=a.nproc)
    for k, v in written.items():
        cli.log(f"{k}: {v}")


if __name__ == "__main__":
    raise SystemExit(cli.run(main))

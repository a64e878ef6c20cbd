#!/usr/bin/env python3
"""Fit mdx2's scaling model to the corrected observations of one or more sweeps -> one
scales.nxs per sweep (mdx2 tutorial part 5, `mdx2.scale`).

I_obs = a(x, y, phi) b(phi) d(x, y) I_merged + a d c(s, phi): b per degree ("scaling",
on by default), c over resolution and phi ("offset"), d across the panel, one for all sweeps
("detector"), a across the panel and phi ("absorption"); each piecewise linear with a
smoothness penalty, refined in turn by alternating least squares against the merged
intensities, each stage ending with outlier rejection. Options and defaults are mdx2 1.0.5's
(--scaling.alpha 1, --detector.nx 200, ...; --mca2020 enables all four). Physical mode weights
by the counts expected from the model (mdx2: each observation's own counts, which biases low
counts low), rejects outliers on both sides, solves exactly and fixes the overall level so
that the mean of a*b*d is 1; --mdx2_compat repeats mdx2 to the letter. merge.py --scale
applies the result (as does mdx2's merge, which reads these files).
"""

import json
from contextlib import ExitStack
from pathlib import Path

from diffuseflow import cli
from diffuseflow.algorithms import correct
from diffuseflow.algorithms import merge as merging
from diffuseflow.algorithms import scale as scaling
from diffuseflow.errors import InputError
from diffuseflow.io import nexus, tables
from diffuseflow.io.scales import write_factors

#: per factor: the options mdx2 gives it, with their types (defaults: scale.default_settings)
OPTIONS = {
    "scaling": {"alpha": float, "dphi": float, "niter": int, "x2tol": float, "outlier": float},
    "offset": {
        "alpha_x": float, "alpha_y": float, "alpha_min": float, "min": float, "dphi": float,
        "ns": int, "niter": int, "x2tol": float, "outlier": float,
    },
    "detector": {"alpha": float, "nx": int, "ny": int, "niter": int, "x2tol": float,
                 "outlier": float},
    "absorption": {
        "alpha_xy": float, "alpha_z": float, "nx": int, "ny": int, "dphi": float,
        "niter": int, "x2tol": float, "outlier": float,
    },
}  # fmt: skip

#: options that must be > 0 (counts of points, spacings, tolerances, outlier limits)
POSITIVE = {"dphi", "nx", "ny", "ns", "niter", "x2tol", "outlier"}


def _bool(flag):
    def parse(text):
        v = text.strip().lower()
        if v in ("true", "yes", "1", "on"):
            return True
        if v in ("false", "no", "0", "off"):
            return False
        raise InputError(f"{flag} must be true or false, is {text!r}")

    return parse


def _number(flag, kind, positive):
    def parse(text):
        value = cli.positive(flag, allow_zero=not positive)(text) if positive else None
        if value is None:
            try:
                value = float(text)
            except ValueError:
                raise InputError(f"{flag} must be a number, is {text!r}") from None
        if kind is int:
            if value != int(value):
                raise InputError(f"{flag} must be a whole number, is {text!r}")
            value = int(value)
        return value

    return parse


def default_outfiles(paths):
    """mdx2's names: scales.nxs beside each input when they are in different folders,
    scales_<postfix>.nxs for inputs <root>_<postfix>.nxs of one folder."""
    dirs = [Path(p).parent for p in paths]
    if len(set(dirs)) == len(dirs):
        return [str(d / "scales.nxs") for d in dirs]
    stems = [Path(p).stem for p in paths]
    if len(set(dirs)) == 1 and all("_" in s for s in stems):
        post = [s.rsplit("_", 1)[1] for s in stems]
        if len(set(post)) == len(post):
            return [str(dirs[0] / f"scales_{x}.nxs") for x in post]
    raise InputError("cannot name the outputs from the inputs' names; give one --outfile each")


def main(argv):
    p = cli.parser("scale.py", __doc__)
    p.add_argument("hkl", metavar="CORRECTED", nargs="+", help="corrected.nxs of each sweep")
    p.add_argument(
        "--outfile",
        nargs="+",
        help="scales.nxs of each sweep, in the inputs' order (default: mdx2's names, "
        "scales.nxs beside each input)",
    )
    defaults = scaling.default_settings()
    for kind, opts in OPTIONS.items():
        flag = f"--{kind}.enable"
        p.add_argument(
            flag, type=_bool(flag), default=defaults[kind].enable, metavar="BOOL",
            help=f"fit the {kind} factor",
        )  # fmt: skip
        for name, typ in opts.items():
            flag = f"--{kind}.{name}"
            p.add_argument(
                flag, type=_number(flag, typ, name in POSITIVE),
                default=getattr(defaults[kind], name), help=f"{kind}: {name}",
            )  # fmt: skip
    p.add_argument("--mca2020", action="store_true", help="enable all four factors")
    a = p.parse_args(argv)
    if len(set(map(str, map(Path, a.hkl)))) != len(a.hkl):
        raise InputError("the same corrected table is given twice")
    outfiles = a.outfile or default_outfiles(a.hkl)
    if len(outfiles) != len(a.hkl):
        raise InputError(f"--outfile names {len(outfiles)} files for {len(a.hkl)} inputs")
    if len(set(outfiles)) != len(outfiles):
        raise InputError("--outfile names the same file twice")
    for o in outfiles:
        cli.check_output(o)
    settings = {}
    for kind, opts in OPTIONS.items():
        s = defaults[kind]
        s.enable = getattr(a, f"{kind}.enable") or a.mca2020
        for name in opts:
            setattr(s, name, getattr(a, f"{kind}.{name}"))
        settings[kind] = s
    if not any(s.enable for s in settings.values()):
        raise InputError("every factor is disabled; enable at least one (--scaling.enable true)")

    need = ("intensity", "intensity_error", "op")
    tabs = [tables.read_table(path, "corrected.nxs", need=need) for path in a.hkl]
    forms = {p: t.attrs.get("diffuseflow_crystal_form") for p, t in zip(a.hkl, tabs, strict=True)}
    correct.check_same_form(
        {k: json.loads(v) for k, v in forms.items() if v}, "cannot scale together"
    )
    obs = merging.gather(tabs, a.hkl)
    coords = scaling.observation_coordinates(tabs, a.hkl)
    cli.log(f"{len(obs.ih)} observations of {len(obs.voxels)} voxels in {len(tabs)} sweep(s)")
    result = scaling.scale(obs, coords, settings, a.mdx2_compat, log=cli.log)
    if result.summary["used"] == 0:
        raise InputError(f"{a.hkl[0]}: no voxel is observed twice; nothing to scale against")
    params = {"mdx2_compat": a.mdx2_compat}
    for kind, opts in OPTIONS.items():
        for name in ("enable", *opts):
            params[f"{kind}.{name}"] = getattr(settings[kind], name)
    summary = dict(result.summary)
    with ExitStack() as stack:
        for j, out in enumerate(outfiles):
            tmp = stack.enter_context(nexus.atomic_output(out))
            with nexus.new_file(tmp, "scale", {**params, "sweep": j}, a.hkl) as f:
                write_factors(
                    f, {k: (fac.axes, fac.grid()) for k, fac in result.batches[j].items()}
                )
                f["entry"].attrs["diffuseflow_scale_summary"] = json.dumps(summary, default=float)
    _report(result, outfiles)


def _report(result, outfiles):
    s = result.summary
    cli.log(
        f"used {s['used']} of {s['observations']} observations "
        f"({s['singletons']} singletons, outliers by stage: {s['outliers']})"
    )
    for j, (factors, out) in enumerate(zip(result.batches, outfiles, strict=True)):
        b = factors.get("scaling")
        if b is not None:
            u = b.grid()
            cli.log(f"sweep {j}: b(phi) from {u.min():.4f} to {u.max():.4f} -> {out}")
        else:
            cli.log(f"sweep {j} -> {out}")


if __name__ == "__main__":
    raise SystemExit(cli.run(main))

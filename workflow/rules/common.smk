import re
import shlex

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")

DATASETS = config["datasets"]
BACKGROUNDS = config.get("backgrounds", {})
RESULTS = config["results"]

for _name, _ds in DATASETS.items():
    _bkg = _ds.get("background")
    if _bkg is not None and _bkg not in BACKGROUNDS:
        raise ValueError(
            f"config: datasets.{_name}.background names {_bkg!r}, which is not under "
            f"backgrounds (known: {sorted(BACKGROUNDS) or 'none'})"
        )
for _name in set(DATASETS) & set(BACKGROUNDS):
    raise ValueError(
        f"config: {_name!r} is both a dataset and a background; rename one"
    )


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)) if DATASETS else "(?!)",
    background="|".join(map(re.escape, BACKGROUNDS)) if BACKGROUNDS else "(?!)",
    sim="[A-Za-z0-9][A-Za-z0-9_.-]*",


def setting(name, section, key):
    """A parameter for one sweep: its own override if given, else the global value."""
    sweep = DATASETS.get(name) or BACKGROUNDS.get(name) or {}
    return sweep.get(section, {}).get(key, config[section][key])


def sweep_expt(name):
    sweep = DATASETS.get(name) or BACKGROUNDS[name]
    return sweep["expt"]


def compat_flag():
    return "--mdx2_compat" if config["mdx2_compat"] else ""


def untrusted_args(name):
    regions = setting(name, "import", "untrusted")
    if not regions:
        return ""
    specs = []
    for r in regions:
        if isinstance(r, dict):
            ((kind, vals),) = r.items()
            r = f"{kind}={','.join(str(v) for v in vals)}"
        specs.append(shlex.quote(r))
    return "--untrusted " + " ".join(specs)


def all_targets():
    targets = []
    for name, ds in DATASETS.items():
        targets += [
            f"{RESULTS}/{name}/{f}" for f in ("geometry.nxs", "peaks.nxs", "mask.nxs")
        ]
        if ds.get("background"):
            targets.append(f"{RESULTS}/{ds['background']}/bkg_data_binned.nxs")
    return targets


def script(name):
    """Path of a command-line tool in scripts/ (an input, so editing it reruns its rule)."""
    return f"{workflow.basedir}/scripts/{name}.py"


def simulation_args(sim):
    s = config["simulations"][sim]
    args = [f"--preset {s['preset']}", f"--seed {s['seed']}"]
    if "size" in s:
        args.append(f"--size {s['size'][0]} {s['size'][1]}")
    for key, flag in (
        ("frames", "--frames"),
        ("osc", "--osc"),
        ("bkg_frames", "--bkg_frames"),
    ):
        if key in s:
            args.append(f"{flag} {s[key]}")
    if s.get("compress"):
        args.append(f"--compress {s['compress']}")
    return " ".join(args)

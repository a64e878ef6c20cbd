import copy
import sys
import re
import shlex

from snakemake.utils import validate

from diffuseflow import config as config_check
from diffuseflow import resources as sizing


def refuse(message):
    """Stop before any job with one line (no traceback): a mistake in the config."""
    sys.exit(message)


# A --configfile that names its own datasets runs those only: Snakemake would merge the
# built-in demo's datasets (config/config.yaml) into it key by key.
_own = config_check.sweep_sections(
    workflow.overwrite_configfiles, workflow.config_settings.overwrite_config
)
if _own is not None:
    config.update(_own)

# one line naming the key (and the nearest valid name), before Snakemake's own validation
# (which would print the whole schema) fills in the defaults
_problem = config_check.problem(
    config,
    config_check.load_yaml(f"{workflow.basedir}/workflow/schemas/config.schema.yaml"),
)
_problem = _problem or config_check.value_problem(config)
if _problem:
    refuse(_problem)

# per-sweep overrides as the user wrote them: validation fills schema defaults into every
# section it sees, and a filled-in default must not hide the global value
WRITTEN = copy.deepcopy(config)
validate(config, schema="../schemas/config.schema.yaml")

DATASETS = config["datasets"]
BACKGROUNDS = config.get("backgrounds", {})
RESULTS = config["results"]

for _name, _ds in DATASETS.items():
    _bkg = _ds.get("background")
    if _bkg is not None and _bkg not in BACKGROUNDS:
        refuse(
            f"config: datasets.{_name}.background names {_bkg!r}, which is not under "
            f"backgrounds (known: {sorted(BACKGROUNDS) or 'none'})"
        )
for _name in set(DATASETS) & set(BACKGROUNDS):
    refuse(f"config: {_name!r} is both a dataset and a background; rename one")

# every dataset gets its own map; maps.<name>.datasets merges several into one
MAPS = {name: {"datasets": [name]} for name in DATASETS}
for _name, _m in config.get("maps", {}).items():
    if _name in DATASETS:
        refuse(
            f"config: maps.{_name} has a dataset's name (each dataset already has its own "
            "map of that name); rename the map"
        )
    for _ds in _m["datasets"]:
        if _ds not in DATASETS:
            refuse(
                f"config: maps.{_name}.datasets names {_ds!r}, which is not under datasets "
                f"(known: {sorted(DATASETS)})"
            )
    MAPS[_name] = _m


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)) if DATASETS else "(?!)",
    background="|".join(map(re.escape, BACKGROUNDS)) if BACKGROUNDS else "(?!)",
    sim="[A-Za-z0-9][A-Za-z0-9_.-]*",
    sweep="|".join(map(re.escape, [*DATASETS, *BACKGROUNDS])) or "(?!)",
    map="|".join(map(re.escape, MAPS)) or "(?!)",
    slab=r"\d+",


def written_sweep(name):
    return (
        WRITTEN.get("datasets", {}).get(name)
        or WRITTEN.get("backgrounds", {}).get(name)
        or {}
    )


def setting(name, section, key):
    """A parameter for one sweep: its own override if given, else the global value."""
    return written_sweep(name).get(section, {}).get(key, config[section][key])


def map_setting(name, section, key):
    """A merge/map parameter of one map: its own override, else the global value."""
    own = WRITTEN.get("maps", {}).get(name, {}).get(section, {})
    return own.get(key, config[section][key])


def scale_options(name):
    """scale.py options of one map: each factor's keys, the map's own over the global ones
    (unset keys keep scale.py's defaults, which are mdx2's)."""
    own = WRITTEN.get("maps", {}).get(name, {}).get("scale", {})
    args = []
    for factor in ("scaling", "offset", "detector", "absorption"):
        keys = {**config["scale"][factor], **own.get(factor, {})}
        for key, value in sorted(keys.items()):
            if isinstance(value, bool):
                value = "true" if value else "false"
            args.append(f"--{factor}.{key} {value}")
    return " ".join(args)


def map_scaled(name):
    """Whether a map's datasets are scaled before merging."""
    return map_setting(name, "scale", "enable")


def map_datasets(name):
    return MAPS[name]["datasets"]


def n_slabs(name):
    """How many slab jobs one sweep's import, peak search and masking are split into."""
    return written_sweep(name).get("slabs", config["slabs"])


def slab_parts(name, stem):
    """Partial files of a split step (none when the sweep runs as one job)."""
    n = n_slabs(name)
    return [f"{RESULTS}/{name}/slabs/{stem}.{k}.nxs" for k in range(n)] if n > 1 else []


def sweep_name(wildcards):
    for key in ("dataset", "background", "sweep"):
        if key in wildcards.keys():
            return wildcards[key]
    raise KeyError("no sweep wildcard")


def job_size(step, key, source, per_slab=False):
    """A resource (mem_mb or runtime) for one job, sized from the sweep's shape: from the .expt
    (import) or from data.nxs (later steps). Until that input exists, Snakemake shows it as
    <TBD> and asks again when the job is ready to run."""

    def size(wildcards, input, threads):
        if source == "expt":
            sweep = (
                DATASETS.get(sweep_name(wildcards))
                or BACKGROUNDS[sweep_name(wildcards)]
            )
            shape = sizing.expt_shape(
                input.expt, sweep.get("experiment"), sweep.get("frames")
            )
        else:
            shape = sizing.stack_shape(input.data)
        slabs = n_slabs(sweep_name(wildcards)) if per_slab else 1
        return sizing.estimate(step, shape, threads, slabs)[key]

    return size


def gather_args(parts):
    """--gather PART ... for a split step's assembling job ("" when it runs as one job)."""
    return "--gather " + " ".join(map(shlex.quote, parts)) if parts else ""


def import_env(name):
    """Conda environment of a sweep's import jobs: dxtbx's when it reads through dxtbx."""
    env = "dxtbx" if setting(name, "import", "reader") == "dxtbx" else "diffuseflow"
    return f"{workflow.basedir}/envs/{env}.yaml"


def sweep_expt(name):
    sweep = DATASETS.get(name) or BACKGROUNDS[name]
    return sweep["expt"]


def selection_args(name):
    """--experiment N and --frames A B of a sweep ("" when the config names neither)."""
    sweep = DATASETS.get(name) or BACKGROUNDS[name]
    args = []
    if sweep.get("experiment") is not None:
        args.append(f"--experiment {int(sweep['experiment'])}")
    if sweep.get("frames"):
        args.append("--frames {} {}".format(*map(int, sweep["frames"])))
    return " ".join(args)


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
        if config["qc"]:
            targets.append(f"{RESULTS}/{name}/qc/summary.tsv")
    for name in MAPS:
        targets.append(f"{RESULTS}/maps/{name}/map.nxs")
        if config["qc"]:
            targets.append(f"{RESULTS}/maps/{name}/qc/summary.tsv")
            if map_scaled(name):
                targets.append(f"{RESULTS}/maps/{name}/scaling/qc/summary.tsv")
    if config["qc"]:
        used = {ds["background"] for ds in DATASETS.values() if ds.get("background")}
        targets += [f"{RESULTS}/{b}/qc/summary.tsv" for b in sorted(used)]
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
    for key in (
        "overall_scale",
        "drift",
        "detector_response",
        "absorption",
        "crystal_rotation",
    ):
        if key in s:
            value = s[key]
            value = " ".join(map(str, value)) if isinstance(value, list) else value
            args.append(f"--{key} {value}")
    return " ".join(args)


QC_CRYSTAL_FIGURES = ("offsets", "mahalanobis", "counts", "frames", "masked_fraction")
QC_BACKGROUND_FIGURES = ("background", "radial")
QC_MAP_FIGURES = ("sections", "isotropic", "cc_half", "multiplicity")
QC_SCALE_FIGURES = ("factors", "scaling_cc", "sweep_agreement")


def qc_outputs(kind, figures, folder=None):
    """Figures and summary of one sweep or map, each tagged for `snakemake --report`."""
    name = f"{{{kind}}}"
    folder = folder or f"{RESULTS}/{name}"
    out = {
        fig: report(
            f"{folder}/qc/{fig}.png",
            caption=f"../report/{fig}.rst",
            category=name,
            subcategory="figures",
        )
        for fig in figures
    }
    out["summary"] = report(
        f"{folder}/qc/summary.html",
        caption="../report/summary.rst",
        category=name,
        subcategory="summary",
    )
    out["table"] = f"{folder}/qc/summary.tsv"
    return out

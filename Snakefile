# diffuseflow: diffuse scattering from rotation sweeps, from images to a 3-D map.
# The target rule lives here (Snakemake 9 takes the default target from this file);
# one rule file per stage under workflow/rules/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/peaks.smk"
include: "workflow/rules/background.smk"
include: "workflow/rules/integrate.smk"
include: "workflow/rules/correct.smk"
include: "workflow/rules/scale.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/qc.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        all_targets(),

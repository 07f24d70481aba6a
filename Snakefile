# MtM (multi-task masking) on IBL Neuropixels data.
#   snakemake --cores 8 results/figures/all.done
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/sessions.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/multisession.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/supervised.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        "results/figures/all.done",

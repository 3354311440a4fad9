# Code-LLM evaluation and attribution pipeline. See README.md and ../shared/DESIGN.md.
#   snakemake --cores 4 --resources gpu=1        (the embedded default, config.yaml)
#   snakemake --configfile presets/<study>.yaml  (a real study)


# A study given with --configfile replaces the embedded default instead of merging into it
# (merging would add the tiny models and sample datasets to every preset).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/benchmark.smk"
include: "rules/finetune.smk"
include: "rules/trace.smk"
include: "rules/figures.smk"


rule all:
    input:
        all_targets(),
    default_target: True


check_code_params()

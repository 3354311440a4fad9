"""Entry point of rule references: reference outputs and timings of a benchmark's tasks."""

from _entry import setup
from attribution.execution.reference_run import references_job

smk = snakemake  # noqa: F821
log = setup(smk)
table = references_job(
    smk.wildcards.benchmark, smk.input.dataset, smk.output[0], smk.threads, smk.params.code
)
log.info("reference outputs of %d tasks -> %s", len(table), smk.output[0])

"""Entry point of rule trace_summary."""

from _entry import setup
from attribution.tracing.jobs import run_trace_summary

log = setup(snakemake)  # noqa: F821
run_trace_summary(
    list(snakemake.input.problems),  # noqa: F821
    snakemake.output.summary,  # noqa: F821
    snakemake.output.screens,  # noqa: F821
    code=snakemake.params.code,  # noqa: F821
)

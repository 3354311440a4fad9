"""Entry point of rule compare_models."""

import pandas as pd

from _entry import setup
from attribution import provenance
from attribution.comparison import (
    BootstrapSettings,
    compare,
    comparison_pairs,
    to_html,
    to_markdown,
)
from attribution.io import write_parquet, write_text

log = setup(snakemake)  # noqa: F821
params = snakemake.params  # noqa: F821
summary = pd.read_parquet(snakemake.input.summary)  # noqa: F821
executions = {
    (model, benchmark): pd.read_parquet(path)
    for (model, benchmark), path in zip(params.jobs, snakemake.input.executions, strict=True)  # noqa: F821
}
pairs = comparison_pairs(list(params.models), params.reference, params.extra_pairs)
settings = BootstrapSettings(**dict(params.bootstrap))
table = compare(summary, executions, pairs, settings)
table["provenance_differs"] = provenance.comparison_differences(summary, table)
warnings = provenance.comparison_notes(table)
for line in warnings:
    log.warning("%s", line)
write_parquet(table, snakemake.output.parquet)  # noqa: F821
write_text(to_markdown(table, settings, warnings), snakemake.output.md)  # noqa: F821
write_text(to_html(table, settings, warnings), snakemake.output.html)  # noqa: F821
log.info("%d comparison rows over %d pairs -> %s", len(table), len(pairs), snakemake.output.md)  # noqa: F821

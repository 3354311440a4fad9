"""Entry point of rule summarize: every metrics.json -> results/summary/metrics.parquet."""

import pandas as pd

from _entry import setup
from attribution.data.splits import HeldOut, dataset_task_ids, task_parts
from attribution.io import write_parquet
from attribution.summary import Run, summarize

smk = snakemake  # noqa: F821
log = setup(smk)
runs = [
    Run(metrics_path=path, **run)
    for run, path in zip(smk.params.runs, smk.input.metrics, strict=True)
]
provenance = dict(zip(smk.params.datasets, smk.input.provenance, strict=True))
parts = {}
for dataset, path in zip(smk.params.split_datasets, smk.input.split_data, strict=True):
    held_out = HeldOut.from_config(smk.params.held_out[dataset])
    parts[dataset] = task_parts(dataset_task_ids(dataset, pd.read_parquet(path)), held_out)
    log.info("%s: held-out part %s", dataset, held_out)
frame = summarize(runs, provenance, smk.params.code_version, parts)
write_parquet(frame, smk.output[0])
log.info("%d rows (%d runs) -> %s", len(frame), len(runs), smk.output[0])

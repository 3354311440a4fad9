"""Entry point of rule execute: run the generated completions in the sandbox."""

import pandas as pd

from _entry import setup
from attribution import provenance
from attribution.execution.engine import execute_samples
from attribution.execution.options import checker_options
from attribution.execution.sandbox import SandboxLimits

smk = snakemake  # noqa: F821
log = setup(smk)
benchmark = smk.wildcards.benchmark
columns = ["task_id", "sample", "completion"]
generations = pd.read_parquet(smk.input.generations, columns=[*columns, *provenance.COLUMNS])
# how the judged completions were made, next to this rule's code hash
record = {**provenance.from_frame(generations, smk.input.generations), "code": smk.params.code}
frame = execute_samples(
    benchmark,
    pd.read_parquet(smk.input.dataset),
    generations[columns],
    smk.output[0],
    workers=smk.threads,
    progress=False,
    checker_options=checker_options(benchmark, **smk.params.checker),
    references=smk.input.get("references"),
    references_mode="require",
    limits=SandboxLimits(isolation=smk.params.isolation),
    provenance=record,
)
log.info(
    "%d executions %s -> %s", len(frame), frame["status"].value_counts().to_dict(), smk.output[0]
)

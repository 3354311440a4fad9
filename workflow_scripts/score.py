"""Entry point of rule score: pass@k and the benchmark's other metrics."""

import pandas as pd

from _entry import setup
from attribution import provenance
from attribution.execution.sandbox import layers_in_force
from attribution.execution.scoring import score_executions
from attribution.io import write_json

smk = snakemake  # noqa: F821
log = setup(smk)
executions = pd.read_parquet(smk.input.executions)
metrics = score_executions(smk.wildcards.benchmark, executions, list(smk.params.ks))
metrics["sandbox"] = layers_in_force(executions["layers"])
record = provenance.from_frame(executions, smk.input.executions)
metrics["provenance"] = {**record, "code": smk.params.code}
write_json(metrics, smk.output[0])
log.info("%s -> %s", {k: v for k, v in metrics.items() if k.startswith("pass@")}, smk.output[0])

"""Entry point of rule build_model."""

from pathlib import Path

import pandas as pd
import torch

from _entry import setup
from attribution.data.splits import HeldOut
from attribution.models.build import TinyModelSpec, build_tiny_model, stdlib_corpus
from attribution.models.corpus import benchmark_documents

smk = snakemake  # noqa: F821
log = setup(smk)
torch.set_num_threads(smk.threads)
spec = TinyModelSpec.from_config(dict(smk.params.spec))
documents = []
for benchmark, path in zip(spec.train_on, smk.input.datasets, strict=True):
    held_out = HeldOut.from_config(smk.params.held_out[benchmark])
    docs = benchmark_documents(benchmark, pd.read_parquet(path), held_out)
    log.info("%s: %d training documents (held out: %s)", benchmark, len(docs), held_out)
    documents += docs
out = build_tiny_model(spec, Path(smk.output.config).parent, stdlib_corpus(), documents)
log.info("built %s model (%s) -> %s", spec.arch, spec, out)

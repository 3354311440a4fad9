"""Entry point of rule activation_norms. The GPU lease comes first: CUDA_VISIBLE_DEVICES must
be set before torch is imported."""

from _entry import setup
from attribution.gpu_slots import lease_gpus

log = setup(snakemake)  # noqa: F821
lease = lease_gpus(snakemake.resources.gpu)  # noqa: F821

import torch  # noqa: E402

from attribution.tracing.jobs import run_activation_norms  # noqa: E402

torch.set_num_threads(snakemake.threads)  # noqa: F821
model = dict(snakemake.params.model)  # noqa: F821
run_activation_norms(
    model["load_path"],
    snakemake.input.prompts,  # noqa: F821
    snakemake.input.selected,  # noqa: F821
    snakemake.output[0],  # noqa: F821
    dict(snakemake.params.settings),  # noqa: F821
    revision=model["revision"],
    dtype=model["dtype"],
    code=snakemake.params.code,  # noqa: F821
)

"""Optional vLLM backend (``generation.backend: vllm``; ``pip install -e '.[vllm]'``).

vLLM batches continuously by itself, so a call hands it every request at once. Prompts go in as
token ids tokenized here (same rules as the HF backend), each request carries its own seed, and
stop strings are kept in the output so ``raw_output`` means the same for both backends.
"""

from __future__ import annotations

from typing import Any

from attribution.generation.base import GenerationRequest, GenerationResult, GenerationSettings


class VLLMUnavailable(RuntimeError):
    """The config asks for vLLM but it is not importable here."""


class VLLMBackend:
    name = "vllm"
    device = "cuda"

    def __init__(self, llm: Any, tokenizer: Any, sampling_params_cls: Any) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self._params = sampling_params_cls
        self.dtype: str = "auto"
        self.gpus = 1  # tensor-parallel degree

    @classmethod
    def load(
        cls,
        name_or_path: str,
        revision: str | None = None,
        dtype: str | None = "auto",
        gpus: int = 1,
    ) -> VLLMBackend:
        try:
            import vllm
        except ImportError as exc:
            raise VLLMUnavailable(
                "generation.backend is 'vllm' but vllm is not installed; install it with "
                "`pip install -e '.[vllm]'` on a GPU machine or set generation.backend: hf"
            ) from exc
        import torch

        from attribution.models.loading import (
            dtype_name,
            load_tokenizer,
            pick_dtype,
            resolve_source,
        )

        source = resolve_source(name_or_path, revision)  # same offline errors as the HF path
        # `auto` as the HF path means it (native bf16, else fp16), not the checkpoint's dtype
        load_dtype = dtype_name(pick_dtype(dtype, torch.device("cuda")))
        llm = vllm.LLM(
            model=source,
            tokenizer=source,
            dtype=load_dtype,
            tensor_parallel_size=max(1, int(gpus)),
        )
        backend = cls(llm, load_tokenizer(source), vllm.SamplingParams)
        backend.dtype, backend.gpus = load_dtype, max(1, int(gpus))
        return backend

    def generate(
        self, requests: list[GenerationRequest], settings: GenerationSettings
    ) -> list[GenerationResult]:
        prompts, params = [], []
        for r in requests:
            ids = self.tokenizer(r.prompt_text, add_special_tokens=settings.add_special_tokens)
            prompts.append({"prompt_token_ids": list(ids["input_ids"])})
            params.append(
                self._params(
                    n=1,
                    temperature=settings.temperature,
                    top_p=settings.top_p if settings.temperature > 0 else 1.0,
                    max_tokens=settings.max_new_tokens,
                    stop=list(r.stop) or None,
                    include_stop_str_in_output=True,
                    seed=int(r.seed) if settings.temperature > 0 else None,
                )
            )
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for prompt, out in zip(prompts, outputs, strict=True):
            choice = out.outputs[0]
            if choice.finish_reason == "length":
                reason = "length"
            elif isinstance(choice.stop_reason, str):
                reason = "stop"
            else:  # EOS or a stop token id
                reason = "eos"
            results.append(
                GenerationResult(
                    raw_output=choice.text,
                    prompt_tokens=len(prompt["prompt_token_ids"]),
                    completion_tokens=len(choice.token_ids),
                    finish_reason=reason,
                )
            )
        return results

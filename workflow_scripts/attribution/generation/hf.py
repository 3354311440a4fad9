"""Batched generation with Hugging Face transformers: our own decoding loop over ``model()``.

Why not ``model.generate``: its sampling draws from one global random stream, so a sample's
text would depend on which other prompts share its batch (and so on batch size and on resume).
Here each request has its own ``torch.Generator`` seeded from its seed and consumes exactly one
vocabulary-sized draw per step, so a sample depends only on its prompt, its seed and the
settings (up to floating-point differences between batch shapes, which leave greedy CPU fp32
outputs identical in practice).

The loop: prompts sorted by token length (little padding), left padding with position ids
from the attention mask (so a padded row sees the same positions as the lone prompt), one
prefill computing only the last position's logits, then one token per step on the KV cache.
Finished rows (stop sequence, EOS, length) are dropped from the batch and the cache at once,
so a long tail does not pay for the rows that are done.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from attribution.generation.base import GenerationRequest, GenerationResult, GenerationSettings
from attribution.models.forward import cache_keyword

log = logging.getLogger(__name__)

# Tokens decoded from the end of a row to look for a stop sequence; each token decodes to at
# least one character except special ones, so this covers every stop string up to this long.
STOP_WINDOW_MARGIN = 8


@dataclass
class _Row:
    index: int
    prompt_ids: list[int]
    stop: tuple[str, ...]
    seed: int
    generated: list[int]
    finish_reason: str = ""


class HFBackend:
    """Batched greedy / temperature + nucleus sampling on a loaded causal LM."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, device: torch.device | str | None = None):
        self.model = model
        self.cache_kw = cache_keyword(model)
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.eos_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0))

    @classmethod
    def load(
        cls, name_or_path: str, revision: str | None = None, dtype: str | None = "auto"
    ) -> HFBackend:
        """Load through ``attribution.models.loading`` (the one loading path)."""
        from attribution.models.loading import load_model_and_tokenizer

        loaded = load_model_and_tokenizer(name_or_path, revision=revision, dtype=dtype)
        where = (
            f"cpu, {torch.get_num_threads()} threads"
            if loaded.device.type == "cpu"
            else str(loaded.device)
        )
        log.info("loaded %s (revision %s) on %s as %s", name_or_path, revision, where, loaded.dtype)
        return cls(loaded.model, loaded.tokenizer, loaded.device)

    def generate(
        self, requests: list[GenerationRequest], settings: GenerationSettings
    ) -> list[GenerationResult]:
        encoded = [
            self.tokenizer(r.prompt_text, add_special_tokens=settings.add_special_tokens)[
                "input_ids"
            ]
            for r in requests
        ]
        rows = [
            _Row(i, list(ids), tuple(r.stop), int(r.seed), [])
            for i, (r, ids) in enumerate(zip(requests, encoded, strict=True))
        ]
        # Longest first: the first batch shows at once whether memory suffices.
        order = sorted(rows, key=lambda row: (-len(row.prompt_ids), row.index))
        for start in range(0, len(order), settings.batch_size):
            self._run_batch(order[start : start + settings.batch_size], settings)
        return [self._result(row) for row in rows]

    # --------------------------------------------------------------------------------------------

    def _run_batch(self, rows: list[_Row], settings: GenerationSettings) -> None:
        try:
            with torch.inference_mode():
                self._decode(rows, settings)
        except torch.OutOfMemoryError:
            if len(rows) == 1:
                raise
            # Halve and retry: per-row seeds keep each sample's text independent of the split.
            torch.cuda.empty_cache()
            half = len(rows) // 2
            log.warning("out of memory with batch %d; retrying as %d + %d", len(rows), half, half)
            for row in rows:
                row.generated.clear()
                row.finish_reason = ""
            self._run_batch(rows[:half], settings)
            self._run_batch(rows[half:], settings)

    def _decode(self, rows: list[_Row], settings: GenerationSettings) -> None:
        from transformers import DynamicCache

        dev = self.device
        width = max(len(r.prompt_ids) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row.prompt_ids)
            input_ids[i, width - n :] = torch.tensor(row.prompt_ids, dtype=torch.long)
            attention[i, width - n :] = 1
        input_ids, attention = input_ids.to(dev), attention.to(dev)
        # A left-padded row must see positions 0..n-1 like the same prompt alone.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generators = None
        if not settings.greedy:
            generators = [torch.Generator(device=dev).manual_seed(r.seed) for r in rows]

        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kw: cache},
        )
        next_position = positions[:, -1] + 1
        active = list(rows)
        windows = {
            id(r): max((len(s) for s in r.stop), default=0) + STOP_WINDOW_MARGIN for r in rows
        }
        while True:
            tokens = _choose(out.logits[:, -1, :], settings, generators)
            keep: list[int] = []
            for i, (row, token) in enumerate(zip(active, tokens.tolist(), strict=True)):
                row.generated.append(token)
                if token in self.eos_ids:
                    row.finish_reason = "eos"
                elif row.stop and self._hit_stop(row, windows[id(row)]):
                    row.finish_reason = "stop"
                elif len(row.generated) >= settings.max_new_tokens:
                    row.finish_reason = "length"
                else:
                    keep.append(i)
            if not keep:
                return
            if len(keep) < len(active):
                index = torch.tensor(keep, device=dev)
                cache.batch_select_indices(index)
                attention, next_position, tokens = (
                    attention[index],
                    next_position[index],
                    tokens[index],
                )
                active = [active[i] for i in keep]
                if generators is not None:
                    generators = [generators[i] for i in keep]
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=attention,
                position_ids=next_position[:, None],
                use_cache=True,
                **{self.cache_kw: cache},
            )
            next_position = next_position + 1

    def _hit_stop(self, row: _Row, window: int) -> bool:
        tail = self.tokenizer.decode(row.generated[-window:], skip_special_tokens=True)
        return any(s in tail for s in row.stop)

    def _result(self, row: _Row) -> GenerationResult:
        return GenerationResult(
            raw_output=self._text(row),
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(row.generated),
            finish_reason=row.finish_reason or "length",
        )

    def _text(self, row: _Row) -> str:
        """The generated text as it continues the prompt: decoding the generated ids alone
        loses a leading space with SentencePiece tokenizers, so decode prompt + generation and
        cut the decoded prompt off."""
        decode = self.tokenizer.decode
        full = decode(row.prompt_ids + row.generated, skip_special_tokens=True)
        prefix = decode(row.prompt_ids, skip_special_tokens=True)
        if full.startswith(prefix):
            return full[len(prefix) :]
        return decode(row.generated, skip_special_tokens=True)


def _choose(
    logits: torch.Tensor, settings: GenerationSettings, generators: list[torch.Generator] | None
) -> torch.Tensor:
    """Greedy argmax, or one draw per row from the temperature-scaled nucleus distribution
    (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", section 3.1)."""
    logits = logits.float()
    if generators is None:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= settings.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, sorted_idx, sorted_probs)
    # Exponential race: argmax p_i / E_i with E_i ~ Exp(1) is a draw from p; each row uses its
    # own generator, so its draw does not depend on the other rows of the batch.
    noise = torch.stack(
        [
            torch.empty(probs.shape[-1], device=probs.device).exponential_(generator=g)
            for g in generators
        ]
    )
    return (probs / noise).argmax(dim=-1)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None) if config is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    return ids

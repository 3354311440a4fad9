"""The exact, fast causal-tracing engine (Meng et al. 2022, ROME, section 2.1), over nnsight.

Definitions (ROME's released ``trace_with_patch`` / ``trace_important_states`` /
``trace_important_window``): the corrupted run has ``n`` rows that differ from the clean input
only inside the span ``[s, e)`` (ROME: ``nu * z`` added to the token-embedding output; or the
span's tokens replaced, :mod:`attribution.tracing.corruption`); restoring cell ``(t, l)`` copies
the clean state at token ``t`` into every corrupted row, for kind ``hidden`` the output of block
``l``, for ``mlp``/``attn`` the output of the MLP/attention of every block in
``range(max(0, l - w // 2), min(L, l - (-w // 2)))`` (``w`` = window, 10 in ROME).
``p(t, l)`` = mean over the corrupted rows of ``softmax(logits[-1])[target]``; ``low`` = the
all-corrupted ``p``; ``high`` = the clean ``p``.

The engine computes exactly these numbers, but never one forward per cell:

* the clean run is done once (one row) and its states at every layer are kept;
* cells with ``t < s`` are not computed: states at positions before the span are identical in the
  clean and corrupted runs, so restoring them changes nothing and ``p = low`` exactly; likewise a
  cell that restores only last-layer outputs at ``t < T - 1`` (nothing reads them);
* cells whose restorations coincide (a window clipped at both ends restores the same layers for
  several centres) are computed once;
* prefix reuse: restoring token ``t`` cannot change any state at positions ``< t`` (attention is
  causal) nor any state below the first restored layer ``a``. So a cell only recomputes
  positions ``t..T-1`` of blocks ``a..L-1``; positions ``< t`` come in as the corrupted run's
  key/value cache and blocks below ``a`` are skipped (nnsight ``skip``), fed the corrupted run's
  block output. The cache keeps every position of every layer, also in sliding-window layers
  (Mistral, StarCoder2, Gemma-2's local layers, Phi-3): the model's own sliding-window mask,
  computed from absolute positions, limits what each query sees, so reuse stays exact;
* many cells share one forward (rows = cells x samples), ordered by start layer then token: a
  batch starts at its earliest token ``t0`` (positions between ``t0`` and a cell's own token are
  recomputed from corrupted inputs and equal the corrupted states) and skips the blocks below its
  lowest start layer. Rows per forward: fitted to free memory on a GPU; on the CPU also capped at
  :data:`CPU_TOKENS_PER_FORWARD` row-positions, because larger CPU batches run slower per cell
  (``benchmarks/bench_tracing.py`` measures both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attribution.models.forward import cache_keyword, output_cache
from attribution.tracing.adapters import (
    KINDS,
    FamilyAdapter,
    as_output,
    derive_adapter,
    get_module,
    hidden_of,
)
from attribution.tracing.corruption import CORRUPTIONS, Corruption, gaussian_corruption
from attribution.tracing.selftest import check_adapter

# Row-positions (rows x recomputed positions) per forward on the CPU. benchmarks/bench_tracing.py
# --cpu-tokens sweep (tiny OLMo-2, span at token 0): CPU time flat from 1k to 16k, ~30% more at
# 64k; memory-sized batches (~2,000 rows x hundreds of positions) were about twice as slow.
CPU_TOKENS_PER_FORWARD = 4096


@dataclass(frozen=True)
class TraceSettings:
    """What a trace depends on. ``noise`` is the absolute scale ``nu`` (corruption ``noise``
    only); ``samples`` the number of corrupted rows (``replace``: at most that many)."""

    noise: float | None = None
    kinds: tuple[str, ...] = KINDS
    samples: int = 10
    window: int = 10
    seed: int = 1
    max_rows: int | None = None  # rows per batched forward; None: fitted (memory, CPU cap)
    corruption: str = "noise"

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"trace kinds {list(self.kinds)}: each must be one of {KINDS}")
        if self.samples < 1 or self.window < 1:
            raise ValueError(f"samples ({self.samples}) and window ({self.window}) must be >= 1")
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"corruption {self.corruption!r} is not one of {CORRUPTIONS}")
        if self.corruption == "noise" and not (self.noise is not None and self.noise > 0):
            raise ValueError(f"noise scale must be > 0, got {self.noise}")
        if self.corruption == "replace" and self.noise is not None:
            raise ValueError("a noise scale applies to corruption 'noise' only, not 'replace'")
        if self.max_rows is not None and self.max_rows < self.samples:
            raise ValueError(f"max_rows ({self.max_rows}) must be >= samples ({self.samples})")


def restored_layers(kind: str, layer: int, n_layers: int, window: int) -> range:
    """Layers whose ``kind`` output is restored for cell layer ``layer`` (ROME's window rule)."""
    if kind == "hidden":
        return range(layer, layer + 1)
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


@dataclass
class TraceResult:
    """Scores of every cell: ``scores[kind][t, l] = p(t, l)``; rows ``t < span[0]`` hold ``low``
    (not computed, exactly zero effect: ``computed[t]`` is False). ``rows``: corrupted rows
    (None: ``settings.samples``); ``sources``: where replaced tokens came from."""

    input_ids: list[int]
    span: tuple[int, int]
    target_id: int
    num_layers: int
    settings: TraceSettings
    scores: dict[str, np.ndarray]
    low: float
    high: float
    clean_top1: int
    computed: np.ndarray = field(repr=False)
    rows: int | None = None
    sources: tuple[str, ...] = ()

    @property
    def corrupted_rows(self) -> int:
        return self.settings.samples if self.rows is None else self.rows


@dataclass
class _Clean:
    states: dict[str, list[torch.Tensor]]  # kind -> per layer (T, hidden)
    probs: torch.Tensor  # (vocab,) float32, last position


@dataclass
class _Corrupted:
    corruption: Corruption
    blocks: list[torch.Tensor]  # per layer (n, T, hidden)
    cache: list[tuple[torch.Tensor, torch.Tensor]]  # per layer keys, values (n, heads, T, dim)
    probs: torch.Tensor  # (n, vocab) float32, last position


@dataclass(frozen=True)
class Cell:
    """One forward's worth of patching: restore ``kind`` at token ``t`` in ``layers``; blocks
    from ``start`` on must be recomputed."""

    t: int
    start: int
    kind: str
    layers: range


def cell_start(kind: str, layers: range) -> int:
    """First block that must be recomputed when ``kind`` is restored in ``layers``."""
    return layers.stop if kind == "hidden" else layers.start


class CausalTracer:
    """Causal tracing of one model. Construction derives the module map and self-tests it."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        adapter: FamilyAdapter | None = None,
        self_test: bool = True,
    ) -> None:
        from nnsight import NNsight

        self.model = model
        self.tokenizer = tokenizer
        self.adapter = adapter or derive_adapter(model)
        self.num_layers = self.adapter.layers
        self.device = next(model.parameters()).device
        self.cache_kw = cache_keyword(model)
        self.cpu_tokens = CPU_TOKENS_PER_FORWARD
        if self_test:
            check_adapter(model, self.adapter)
        # nnsight wraps the already-loaded model; every intervention goes through its envoys.
        self.lm = NNsight(model)

    # -- the two reference runs -------------------------------------------------------------
    @torch.no_grad()
    def clean_run(self, ids: torch.Tensor) -> _Clean:
        """One clean forward; keeps every kind's output at every layer."""
        ad, lm = self.adapter, self.lm
        states: dict[str, list[torch.Tensor]] = {k: [] for k in KINDS}
        with lm.trace(ids, logits_to_keep=1):
            for layer in range(self.num_layers):
                # access order = execution order (attention, MLP, then the block's output)
                for kind in ("attn", "mlp", "hidden"):
                    out = get_module(lm, ad.path(kind, layer)).output
                    states[kind].append(hidden_of(out, ad.form(kind))[0].clone())
            logits = lm.output.logits.save()
        return _Clean(states=states, probs=last_probs(logits)[0])

    @torch.no_grad()
    def corrupted_run(self, corruption: Corruption) -> _Corrupted:
        """The ``n`` corrupted rows; keeps every block output and a full key/value cache."""
        from transformers import DynamicCache

        ad, lm = self.adapter, self.lm
        start, end = corruption.span
        ids = corruption.ids.to(self.device)
        blocks: list[torch.Tensor] = []
        # A cache without config keeps every position in every layer, sliding or not.
        kwargs = {self.cache_kw: DynamicCache()}
        with lm.trace(ids, use_cache=True, logits_to_keep=1, **kwargs):
            if corruption.noise is not None:
                emb = get_module(lm, ad.embed).output
                emb[:, start:end] += corruption.noise.to(emb.device)
            for layer in range(self.num_layers):
                out = get_module(lm, ad.path("hidden", layer)).output
                blocks.append(hidden_of(out, ad.block_form).clone())
            result = lm.output.save()
        cache = [(k, v) for k, v, *_ in output_cache(result)]
        length = ids.shape[1]
        for layer, (keys, _values) in enumerate(cache):
            if keys.shape[-2] != length:
                raise ValueError(
                    f"layer {layer} cached {keys.shape[-2]} of {length} positions: prefix reuse "
                    "needs every position's keys and values"
                )
        probs = last_probs(result.logits)
        return _Corrupted(corruption=corruption, blocks=blocks, cache=cache, probs=probs)

    def corruption_for(
        self, ids: torch.Tensor, span: tuple[int, int], settings: TraceSettings
    ) -> Corruption:
        """The default corruption of ``settings``: ROME's Gaussian noise."""
        if settings.corruption != "noise":
            raise ValueError(
                f"corruption {settings.corruption!r} needs its corrupted rows: pass corruption="
                "replacement_corruption(...) (attribution.tracing.corruption)"
            )
        assert settings.noise is not None
        return gaussian_corruption(
            ids.reshape(-1), span, settings.samples, settings.seed, settings.noise, self.hidden
        )

    # -- the grid ---------------------------------------------------------------------------
    def trace(
        self,
        input_ids: Sequence[int] | torch.Tensor,
        span: tuple[int, int],
        settings: TraceSettings,
        target_id: int | None = None,
        progress: bool = False,
        corruption: Corruption | None = None,
    ) -> TraceResult:
        """Trace every (kind, token, layer) cell; ``span`` is a token range ``[start, end)``."""
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1).to(self.device)
        length = ids.shape[1]
        start, end = span
        if not 0 <= start < end <= length:
            raise ValueError(f"token span {span} is not a non-empty range inside 0..{length}")
        corruption = self.checked_corruption(corruption, ids, span, settings)
        clean = self.clean_run(ids)
        target = int(clean.probs.argmax()) if target_id is None else int(target_id)
        corrupted = self.corrupted_run(corruption)
        low = float(corrupted.probs[:, target].double().mean())
        high = float(clean.probs[target])

        n_layers = self.num_layers
        scores = {k: np.full((length, n_layers), low, dtype=np.float64) for k in settings.kinds}
        owners: dict[Cell, list[tuple[str, int]]] = {}
        for t in range(start, length):
            for kind in settings.kinds:
                for layer in range(n_layers):
                    layers = restored_layers(kind, layer, n_layers, settings.window)
                    if t < length - 1 and layers.start == n_layers - 1:
                        continue  # only last-layer outputs at t < T-1: nothing reads them
                    cell = Cell(t, cell_start(kind, layers), kind, layers)
                    owners.setdefault(cell, []).append((kind, layer))
        batches = self.plan(list(owners), length, corruption.rows, settings.max_rows)
        iterator: Any = batches
        if progress:
            from tqdm import tqdm

            iterator = tqdm(batches, desc="trace batches", unit="batch")
        for batch in iterator:
            values = self._run_batch(ids, batch, clean, corrupted, target)
            for cell, value in zip(batch, values, strict=True):
                for kind, layer in owners[cell]:
                    scores[kind][cell.t, layer] = value
        computed = np.arange(length) >= start
        return TraceResult(
            input_ids=ids[0].tolist(),
            span=(start, end),
            target_id=target,
            num_layers=n_layers,
            settings=settings,
            scores=scores,
            low=low,
            high=high,
            clean_top1=int(clean.probs.argmax()),
            computed=computed,
            rows=corruption.rows,
            sources=corruption.sources,
        )

    def checked_corruption(
        self,
        corruption: Corruption | None,
        ids: torch.Tensor,
        span: tuple[int, int],
        settings: TraceSettings,
    ) -> Corruption:
        """``corruption`` checked against the input and settings (None: ROME's noise)."""
        if corruption is None:
            return self.corruption_for(ids, span, settings)
        if corruption.kind != settings.corruption:
            raise ValueError(
                f"corruption {corruption.kind!r} given, settings say {settings.corruption!r}"
            )
        if tuple(corruption.span) != tuple(span) or corruption.ids.shape[1] != ids.shape[1]:
            raise ValueError(
                f"corruption for span {corruption.span} over {corruption.ids.shape[1]} tokens; "
                f"traced span {span} over {ids.shape[1]} tokens"
            )
        outside = torch.ones(ids.shape[1], dtype=torch.bool)
        outside[span[0] : span[1]] = False
        if not torch.equal(
            corruption.ids[:, outside].cpu(), ids[:, outside].cpu().expand(corruption.rows, -1)
        ):
            raise ValueError("the corrupted rows differ from the clean input outside the span")
        return corruption

    @property
    def hidden(self) -> int:
        return int(get_module(self.model, self.adapter.embed).weight.shape[-1])

    def clean_states_dim(self) -> int:
        return self.hidden

    def plan(
        self, cells: list[Cell], length: int, samples: int, max_rows: int | None
    ) -> list[list[Cell]]:
        """Batches of cells: ordered by start layer then token; a batch holds cells of one start
        layer, at most ``rows // samples`` of them, ``rows`` sized for its first (earliest, so
        longest) token suffix."""
        batches: list[list[Cell]] = []
        current: list[Cell] = []
        limit = 0
        for cell in sorted(cells, key=lambda c: (c.start, c.t, c.kind, c.layers.start)):
            if current and (len(current) >= limit or cell.start != current[0].start):
                batches.append(current)
                current = []
            if not current:
                rows = max_rows or self.auto_rows(length - cell.t, cell.t, samples)
                limit = max(1, rows // samples)
            current.append(cell)
        if current:
            batches.append(current)
        return batches

    @torch.no_grad()
    def _run_batch(
        self,
        ids: torch.Tensor,
        batch: list[Cell],
        clean: _Clean,
        corrupted: _Corrupted,
        target: int,
    ) -> np.ndarray:
        """One forward for ``batch``; the mean target probability of each cell's rows."""
        logits = self.patched_forward(ids, batch, clean, corrupted, stop=ids.shape[1])
        probs = last_probs(logits)[:, target]
        n = corrupted.corruption.rows
        return probs.double().view(len(batch), n).mean(dim=1).cpu().numpy()

    def patched_forward(
        self,
        ids: torch.Tensor,
        batch: Sequence[Cell],
        clean: _Clean,
        corrupted: _Corrupted,
        stop: int,
        on_attention: Callable[[int, Any], None] | None = None,
    ) -> torch.Tensor:
        """Positions ``t0..stop-1`` (``t0`` = the batch's earliest token) of blocks
        ``first..L-1`` (``first`` = its lowest start layer) for rows ``c*n .. c*n+n-1`` of cell
        ``c``, each cell's clean states restored at relative position ``t - t0``; positions
        before ``t0`` come from the corrupted cache. Returns the last-position logits.
        ``on_attention(layer, envoy)`` is called inside the trace before each recomputed
        layer's attention output is touched (AtP*'s query/key capture)."""
        from transformers import DynamicCache

        ad, lm = self.adapter, self.lm
        corruption = corrupted.corruption
        t0 = min(cell.t for cell in batch)
        first = min(cell.start for cell in batch)
        n = corruption.rows
        m = len(batch)
        rows = m * n
        # per (kind, layer): which rows, at which relative position, get which clean state
        patch: dict[tuple[str, int], tuple[list[int], list[int], list[int]]] = {}
        for c, cell in enumerate(batch):
            for j in cell.layers:
                row_list, pos_list, token_list = patch.setdefault((cell.kind, j), ([], [], []))
                row_list.extend(range(c * n, c * n + n))
                pos_list.extend([cell.t - t0] * n)
                token_list.extend([cell.t] * n)
        index = {
            key: (
                torch.tensor(r, device=self.device),
                torch.tensor(p, device=self.device),
                clean.states[key[0]][key[1]][torch.tensor(tok, device=self.device)],
            )
            for key, (r, p, tok) in patch.items()
        }
        kwargs: dict[str, Any] = {}
        if t0 > 0:
            data = []
            for layer, (keys, values) in enumerate(corrupted.cache):
                if layer < first:  # never read (block skipped); a view keeps the shapes right
                    data.append(
                        (
                            keys[:1, :, :t0].expand(rows, -1, -1, -1),
                            values[:1, :, :t0].expand(rows, -1, -1, -1),
                        )
                    )
                else:
                    data.append(
                        (keys[:, :, :t0].repeat(m, 1, 1, 1), values[:, :, :t0].repeat(m, 1, 1, 1))
                    )
            # no config: full (non-sliding) cache layers, as in the corrupted run
            kwargs[self.cache_kw] = DynamicCache(ddp_cache_data=data)
        span_noise = None
        span_start, span_end = corruption.span
        if corruption.noise is not None and first == 0 and t0 < span_end:
            lo, hi = max(t0, span_start), min(stop, span_end)
            if lo < hi:
                span_noise = (lo - t0, corruption.noise[:, lo - span_start : hi - span_start])
        skip_last = None
        if first > 0:
            skip_last = corrupted.blocks[first - 1][:, t0:stop].repeat(m, 1, 1)
            key = ("hidden", first - 1)
            if key in index:
                row_idx, pos_idx, values = index[key]
                skip_last[row_idx, pos_idx] = values
        batch_ids = corruption.ids[:, t0:stop].to(self.device).repeat(m, 1)
        with lm.trace(batch_ids, use_cache=False, logits_to_keep=1, **kwargs):
            if span_noise is not None:
                offset, noise = span_noise
                emb = get_module(lm, ad.embed).output
                emb[:, offset : offset + noise.shape[1]] += noise.repeat(m, 1, 1).to(emb.device)
            for layer in range(self.num_layers):
                block = get_module(lm, ad.path("hidden", layer))
                if layer < first:
                    if layer == first - 1:
                        value = skip_last
                    else:
                        value = corrupted.blocks[layer][:1, t0:stop].expand(rows, -1, -1)
                    block.skip(as_output(value, ad.block_form))
                    continue
                if on_attention is not None:
                    on_attention(layer, get_module(lm, ad.path("attn", layer)))
                for kind in ("attn", "mlp", "hidden"):
                    if (kind, layer) not in index:
                        continue
                    row_idx, pos_idx, values = index[(kind, layer)]
                    out = get_module(lm, ad.path(kind, layer)).output
                    hidden_of(out, ad.form(kind))[row_idx, pos_idx] = values
            logits = lm.output.logits.save()
        return logits

    def auto_rows(self, positions: int, prefix: int, samples: int = 1) -> int:
        """Rows per forward: what fits in 40% of the device's free memory; on the CPU at most
        :data:`CPU_TOKENS_PER_FORWARD` row-positions (never fewer than ``samples`` rows)."""
        dtype = next(self.model.parameters()).dtype
        per_row = bytes_per_row(
            self.model.config, self.num_layers, self.hidden, dtype, positions, prefix
        )
        rows = max(1, int(_free_memory(self.device) * 0.4 // per_row))
        if self.device.type == "cpu":
            rows = min(rows, max(samples, self.cpu_tokens // max(1, positions)))
        return max(rows, samples)


def bytes_per_row(
    config: Any, n_layers: int, hidden: int, dtype: torch.dtype, positions: int, prefix: int
) -> int:
    """Rough upper estimate of the memory one batch row takes in a prefix-reuse forward: the
    duplicated key/value prefix plus its concatenation with the new positions, one block's live
    activations, eager attention scores, and the last-position logits (float32 softmax)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(getattr(config, "num_attention_heads", None) or config.n_head)
    kv_heads = int(
        getattr(config, "num_key_value_heads", None)
        or (1 if getattr(config, "multi_query", False) else heads)
    )
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    inter = int(
        getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    )
    size = torch.finfo(dtype).bits // 8
    total = prefix + positions
    return size * (
        n_layers * 2 * kv_heads * head_dim * (prefix + total)
        + positions * (8 * hidden + 3 * inter)
        + 2 * heads * positions * total
    ) + 12 * int(config.vocab_size)


def last_probs(logits: torch.Tensor) -> torch.Tensor:
    """Softmax of the last position's logits, in float32 at least (bf16/fp16 models)."""
    last = logits[:, -1]
    if last.dtype in (torch.float16, torch.bfloat16):
        last = last.float()
    return torch.softmax(last, dim=-1)


def _free_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (CUDA: driver's free memory; CPU: MemAvailable, capped at 4 GiB
    because larger CPU batches gain nothing)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    available = 4 << 30
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = min(available, int(line.split()[1]) * 1024)
    except OSError:
        pass
    return available

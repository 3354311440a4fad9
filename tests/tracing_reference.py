"""Reference implementations for the tracing tests, written from the algorithm description
(ROME, Meng et al. 2022, section 2.1), with plain torch forward hooks: one forward of n+1 rows
per cell, row 0 clean, rows 1..n corrupted (ROME's noise on the embedding output, or, with
``corrupted_ids``, other token ids inside the span: Zhang & Nanda 2023's token replacement).
The module lists are written out per family by hand, independently of the engine's derived
adapters."""

from __future__ import annotations

import numpy as np
import torch


def naive_trace(
    model, parts, ids, span, kinds, samples, nu, window, seed, target, tokens=None,
    corrupted_ids=None,
):  # fmt: skip
    """``parts`` = dict(embed=module, hidden=[blocks], attn=[...], mlp=[...]). Returns
    (scores: kind -> (T, L) array, low, high); only rows ``tokens`` (default: all) are
    computed, the others are NaN. ``corrupted_ids`` (n, T): token replacement instead of noise
    (``samples``, ``nu`` and ``seed`` unused)."""
    blocks = parts["hidden"]
    n_layers = len(blocks)
    start, end = span
    length = ids.shape[1]
    if corrupted_ids is None:
        z = np.random.RandomState(seed).randn(samples, end - start, parts["embed"].weight.shape[1])
        noise = nu * torch.from_numpy(z)
        batch = ids.repeat(samples + 1, 1)
    else:
        noise = None
        batch = torch.cat([ids, corrupted_ids])

    def run(patches):
        handles = []

        def corrupt(_m, _a, out):
            out[1:, start:end] += noise

        if noise is not None:
            handles.append(parts["embed"].register_forward_hook(corrupt))
        for kind, layer, t in patches:

            def restore(_m, _a, out, t=t):
                h = out[0] if isinstance(out, tuple) else out
                h[1:, t] = h[0, t]

            handles.append(parts[kind][layer].register_forward_hook(restore))
        try:
            with torch.no_grad():
                logits = model(batch).logits
        finally:
            for h in handles:
                h.remove()
        probs = torch.softmax(logits[:, -1].float(), -1)[:, target].double()
        return probs[1:].mean().item(), probs[0].item()

    low, high = run([])
    scores = {}
    for kind in kinds:
        grid = np.full((length, n_layers), np.nan)
        for t in range(length) if tokens is None else tokens:
            for layer in range(n_layers):
                if kind == "hidden":
                    layers = [layer]
                else:
                    layers = range(
                        max(0, layer - window // 2), min(n_layers, layer - (-window // 2))
                    )
                grid[t, layer] = run([(kind, j, t) for j in layers])[0]
        scores[kind] = grid
    return scores, low, high


def llama_like_parts(model):
    inner = model.model
    return {
        "embed": inner.embed_tokens,
        "hidden": list(inner.layers),
        "attn": [b.self_attn for b in inner.layers],
        "mlp": [b.mlp for b in inner.layers],
    }


def gpt2_like_parts(model):
    inner = model.transformer
    return {
        "embed": inner.wte,
        "hidden": list(inner.h),
        "attn": [b.attn for b in inner.h],
        "mlp": [b.mlp for b in inner.h],
    }


def contrast_target(model, parts, ids, span, samples, nu, seed, corrupted_ids=None):
    """The token whose probability the corruption changes most (mean over corrupted rows vs
    clean), so a test's target makes the comparison non-vacuous."""
    start, end = span
    if corrupted_ids is None:
        z = np.random.RandomState(seed).randn(samples, end - start, parts["embed"].weight.shape[1])
        noise = nu * torch.from_numpy(z)
        batch = ids.repeat(samples + 1, 1)
    else:
        noise, batch = None, torch.cat([ids, corrupted_ids])

    def corrupt(_m, _a, out):
        out[1:, start:end] += noise

    handle = parts["embed"].register_forward_hook(corrupt) if noise is not None else None
    try:
        with torch.no_grad():
            probs = torch.softmax(model(batch).logits[:, -1].double(), -1)
    finally:
        if handle is not None:
            handle.remove()
    return int((probs[1:].mean(0) - probs[0]).abs().argmax())


def neox_parts(model):
    inner = model.gpt_neox
    return {
        "embed": inner.embed_in,
        "hidden": list(inner.layers),
        "attn": [b.attention for b in inner.layers],
        "mlp": [b.mlp for b in inner.layers],
    }


def family_parts(family, model):
    """The reference's own module lists of ``model`` (hand-written per family)."""
    if family in ("gpt2", "gpt_bigcode"):
        return gpt2_like_parts(model)
    if family == "gpt_neox":
        return neox_parts(model)
    return llama_like_parts(model)


_SMALL = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    # larger random weights than the default 0.02: attention then carries enough of the other
    # tokens that corrupting them moves the last position's output (non-vacuous comparisons)
    initializer_range=0.2,
    tie_word_embeddings=False,
)

# Sliding windows shorter than the 12-token test prompts (window 4-5), so prefix reuse meets them.
FAMILY_CONFIGS = {
    "gpt2": lambda tf: tf.GPT2Config(
        vocab_size=97, n_embd=32, n_layer=3, n_head=4, n_positions=64, initializer_range=0.2
    ),
    "gpt_bigcode": lambda tf: tf.GPTBigCodeConfig(
        vocab_size=97, n_embd=32, n_layer=3, n_head=4, n_positions=64, initializer_range=0.2
    ),
    "starcoder2": lambda tf: tf.Starcoder2Config(**{**_SMALL, "num_hidden_layers": 3}),
    "starcoder2_sliding": lambda tf: tf.Starcoder2Config(**_SMALL, sliding_window=4),
    "llama": lambda tf: tf.LlamaConfig(**_SMALL),
    "olmo2": lambda tf: tf.Olmo2Config(**_SMALL),
    "qwen2": lambda tf: tf.Qwen2Config(**_SMALL),
    # Qwen2.5-style: local (sliding) attention in the layers from max_window_layers on
    "qwen2_sliding": lambda tf: tf.Qwen2Config(
        **{**_SMALL, "num_hidden_layers": 3},
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=1,
    ),
    "qwen3": lambda tf: tf.Qwen3Config(**_SMALL, head_dim=8),
    "mistral": lambda tf: tf.MistralConfig(**_SMALL, sliding_window=4),
    "phi3": lambda tf: tf.Phi3Config(**_SMALL, sliding_window=5, pad_token_id=0),
    "gemma": lambda tf: tf.GemmaConfig(**_SMALL, head_dim=8),
    # alternating local (sliding) / global layers; soft-capping low enough to bite
    "gemma2": lambda tf: tf.Gemma2Config(
        **{**_SMALL, "num_hidden_layers": 3},
        head_dim=8,
        sliding_window=4,
        attn_logit_softcapping=0.5,
        final_logit_softcapping=30.0,
    ),
    "gpt_neox": lambda tf: tf.GPTNeoXConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        initializer_range=0.2,
    ),  # fmt: skip
}


def random_family_model(family: str, sharpen: float = 3.0):
    """A random-init tiny model of ``family`` (a key of FAMILY_CONFIGS; no tokenizer needed),
    with its reference module lists; ``lm_head`` scaled by ``sharpen``."""
    import transformers as tf

    if family not in FAMILY_CONFIGS:
        raise ValueError(family)
    torch.manual_seed(0)
    cfg = FAMILY_CONFIGS[family](tf)
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.eval()
    with torch.no_grad():  # sharper output distribution: probabilities far from uniform
        model.lm_head.weight.mul_(sharpen)
    return model, family_parts(cfg.model_type, model)

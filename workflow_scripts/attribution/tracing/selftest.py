"""Start-up self-test of a family adapter on the loaded model.

A wrong adapter does not crash tracing: it patches the wrong tensor (batch row 0 instead of the
token axis, a norm's input instead of the MLP output) and yields plausible but meaningless
heat maps. So before tracing, on two random probe rows, check with plain forward hooks that:

1. every named module exists, runs exactly once per forward, and in block order (attention and
   MLP of layer ``l`` finish after block ``l-1`` and before block ``l``);
2. the declared output form yields a ``(batch, seq, hidden)`` tensor for the embedding, every
   block, attention and MLP (a bare tensor read as a tuple gives ``(seq, hidden)``);
3. each block's output is its input plus its attention and MLP contributions (through the
   adapter's post-sublayer norms, for OLMo-2), so ``attn``/``mlp`` really are the sublayer
   outputs that enter the residual stream;
4. block outputs are the residual stream: copying row 0's block output into row 1 makes row 1's
   logits equal row 0's; and perturbing row 1's embedding leaves row 0 untouched;
5. the corruption site is right: a vector added to the embedding module's output reaches block 0's
   input unchanged (Gemma scales the embedding inside its embedding module in transformers 5, so
   the noise lands on the scaled embedding; a model that scaled it later would be refused);
6. the model is in eval mode (dropout off), so every forward is deterministic.
"""

from __future__ import annotations

from typing import Any

import torch

from attribution.tracing.adapters import FamilyAdapter, get_module, hidden_of


class AdapterError(RuntimeError):
    """The family adapter does not describe the loaded model; the message says what differs."""


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 3e-2


def _first_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def check_adapter(model: Any, adapter: FamilyAdapter, probe_len: int = 8, seed: int = 0) -> None:
    """Raise :class:`AdapterError` when ``adapter`` does not fit ``model``."""
    if getattr(model, "training", False):
        raise AdapterError(
            f"{adapter.family}: the model is in training mode (dropout active); call model.eval()"
        )
    n_layers = adapter.layers
    param = next(model.parameters())
    hidden = int(get_module(model, adapter.embed).weight.shape[-1])
    gen = torch.Generator().manual_seed(seed)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(0, vocab, (2, probe_len), generator=gen).to(param.device)
    expected = (2, probe_len, hidden)
    tol = _tolerance(param.dtype)

    names = {("embed", 0): adapter.embed}
    for layer in range(n_layers):
        for kind in ("attn", "mlp", "hidden"):
            names[(kind, layer)] = adapter.path(kind, layer)
    modules = {key: get_module(model, path) for key, path in names.items()}
    forms = {"embed": "tensor", "attn": adapter.attn_form, "mlp": adapter.mlp_form}
    forms["hidden"] = adapter.block_form

    calls: list[tuple[str, int]] = []
    seen: dict[tuple[str, int], torch.Tensor] = {}
    block_in: dict[int, torch.Tensor] = {}
    handles = []

    def make_hook(key: tuple[str, int]):
        def hook(_module: Any, _args: Any, output: Any) -> None:
            calls.append(key)
            seen[key] = hidden_of(output, forms[key[0]])

        return hook

    def make_pre(layer: int):
        def pre(_module: Any, args: tuple, kwargs: dict) -> None:
            block_in[layer] = _first_arg(args, kwargs)

        return pre

    try:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(key)))
        for layer in range(n_layers):
            handles.append(
                modules[("hidden", layer)].register_forward_pre_hook(
                    make_pre(layer), with_kwargs=True
                )
            )
        base_logits = model(ids).logits.float()
    finally:
        for handle in handles:
            handle.remove()

    # 1. each module once, in block order
    for key, path in names.items():
        count = calls.count(key)
        if count != 1:
            raise AdapterError(f"{adapter.family}: module {path} ran {count} times in one forward")
    order = {key: calls.index(key) for key in names}
    for layer in range(n_layers):
        before = order[("hidden", layer - 1)] if layer else order[("embed", 0)]
        for kind in ("attn", "mlp"):
            if not before < order[(kind, layer)] < order[("hidden", layer)]:
                raise AdapterError(
                    f"{adapter.family}: {names[(kind, layer)]} does not run inside block "
                    f"{names[('hidden', layer)]}"
                )
    # 2. shapes under the declared output form
    for key, value in seen.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != expected:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise AdapterError(
                f"{adapter.family}: output of {names[key]} read as {forms[key[0]]!r} gives {got}, "
                f"expected (batch, seq, hidden) = {expected}; is the declared output form right?"
            )
    # 3. residual decomposition of every block
    for layer in range(n_layers):
        attn, mlp = seen[("attn", layer)].float(), seen[("mlp", layer)].float()
        if adapter.post_norms is not None:
            attn_norm, mlp_norm = (
                get_module(model, p.format(layer)) if p else None for p in adapter.post_norms
            )
            if attn_norm is not None:
                attn = attn_norm(seen[("attn", layer)]).float()
            if mlp_norm is not None:
                mlp = mlp_norm(seen[("mlp", layer)]).float()
        out = seen[("hidden", layer)].float()
        rebuilt = block_in[layer].float() + attn + mlp
        err = (out - rebuilt).abs().max().item()
        if err > tol * max(1.0, out.abs().max().item()):
            raise AdapterError(
                f"{adapter.family}: block {names[('hidden', layer)]} output is not its input plus "
                f"{names[('attn', layer)]} and {names[('mlp', layer)]} outputs (max error {err:.3g}); "
                "the attention/MLP module paths or post-norms are wrong"
            )
    # 4. block outputs carry the whole residual stream; rows are independent
    for layer in sorted({0, n_layers // 2, n_layers - 1}):
        swapped = _run_with(model, ids, modules[("hidden", layer)], forms["hidden"], _copy_row0)
        if (swapped[1] - base_logits[0]).abs().max().item() > tol * max(
            1.0, base_logits.abs().max().item()
        ):
            raise AdapterError(
                f"{adapter.family}: copying row 0's output of {names[('hidden', layer)]} into row 1 "
                "does not reproduce row 0's logits: that module is not the residual stream"
            )
    bumped = _run_with(model, ids, modules[("embed", 0)], "tensor", _bump_row1)
    if not torch.equal(bumped[0], base_logits[0]):
        raise AdapterError(
            f"{adapter.family}: perturbing batch row 1 at {adapter.embed} changed row 0"
        )
    if torch.equal(bumped[1], base_logits[1]):
        raise AdapterError(f"{adapter.family}: {adapter.embed} output does not reach the logits")
    # 5. noise added to the embedding output arrives unscaled at block 0
    entering = _block0_input(
        model, ids, modules[("embed", 0)], modules[("hidden", 0)]
    )  # plain, bumped
    delta = (entering[1] - entering[0])[1:2].float()
    expected = torch.zeros_like(delta)
    expected[:, 2] = _bump_vector(delta.shape[-1], delta.dtype, delta.device)
    if (delta - expected).abs().max().item() > tol * max(1.0, entering.abs().max().item()):
        raise AdapterError(
            f"{adapter.family}: a vector added to the output of {adapter.embed} reaches "
            f"{names[('hidden', 0)]} changed (max error {(delta - expected).abs().max().item():.3g});"
            " the embedding is rescaled after its module, so the noise would not be added to the "
            "embedding the blocks see"
        )


def _block0_input(model: Any, ids: torch.Tensor, embed: Any, block0: Any) -> torch.Tensor:
    """Block 0's input for (plain, bumped) runs: index 0 plain, 1 with ``+1`` on row 1, token 2."""
    got: list[torch.Tensor] = []

    def pre(_m: Any, args: tuple, kwargs: dict) -> None:
        got.append(_first_arg(args, kwargs).detach().clone())

    def bump(_m: Any, _a: Any, out: torch.Tensor) -> None:
        out[1, 2] += _bump_vector(out.shape[-1], out.dtype, out.device)

    handle = block0.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        model(ids)
        extra = embed.register_forward_hook(bump)
        try:
            model(ids)
        finally:
            extra.remove()
    finally:
        handle.remove()
    return torch.stack(got)


def _copy_row0(h: torch.Tensor) -> None:
    h[1] = h[0]


def _bump_vector(size: int, dtype: torch.dtype, device: Any) -> torch.Tensor:
    # not constant across units: a LayerNorm would cancel a constant shift exactly
    return torch.linspace(-1.0, 1.0, size, dtype=dtype, device=device)


def _bump_row1(h: torch.Tensor) -> None:
    h[1] += _bump_vector(h.shape[-1], h.dtype, h.device)


def _run_with(model: Any, ids: torch.Tensor, module: Any, form: str, edit: Any) -> torch.Tensor:
    def hook(_module: Any, _args: Any, output: Any) -> None:
        edit(hidden_of(output, form))

    handle = module.register_forward_hook(hook)
    try:
        return model(ids).logits.float()
    finally:
        handle.remove()

"""Family adapters: where the token embedding, the decoder blocks and each block's attention and
MLP live in a causal LM, and what each of them returns, derived from the loaded model itself.

Causal tracing patches module outputs, so it must know which module is which and whether its
forward returns a bare tensor or a tuple whose first item is the hidden state. In transformers 5
decoder blocks return a bare tensor while attention modules return ``(output, weights)``; taking
``output[0]`` of a bare ``(batch, seq, hidden)`` tensor silently selects batch row 0.

:func:`derive_adapter` reads the map off the model's structure instead of a hand table per
family, so a new decoder family usually needs no code:

* the embedding is ``model.get_input_embeddings()``;
* the blocks are the one ``ModuleList`` whose items each hold exactly one attention child
  (class name with ``Attention``/``Attn``) and one MLP child (``MLP``/``FeedForward``/``FFN``);
* one probe forward gives the output form of the block, attention and MLP, and the block children
  that take a sublayer's output before it joins the residual stream (OLMo-2's and Gemma-2's
  post-sublayer norms; eval-mode dropouts in Phi-3 and GPT-NeoX).

:mod:`attribution.tracing.selftest` then checks the derived map on the loaded model before any
tracing (residual decomposition, row independence, unscaled embedding noise), so a structure the
derivation misreads is refused, never traced. The test suite traces random-initialised models of
every family in :data:`TESTED_FAMILIES` against a naive per-cell reference.

Family quirks this covers: Gemma/Gemma-2 scale the embedding inside their embedding module in
transformers 5 (so noise on its output is noise on the scaled embedding; the self-test checks
that the noise reaches block 0 unscaled); Gemma-2's attention soft-capping and alternating
local/global layers, Phi-3's fused ``qkv_proj``/``gate_up_proj`` and GPT-NeoX's parallel
attention+MLP residual are inside the modules the engine patches (their outputs are what enters
the residual stream), so they need no special case here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import torch

TENSOR = "tensor"
TUPLE = "tuple"  # forward returns a tuple; item 0 is the hidden state
KINDS = ("hidden", "mlp", "attn")

# config.model_type values whose tiny random-initialised models the test suite traces cell by
# cell against the naive reference (tests/test_tracing_families.py)
TESTED_FAMILIES = (
    "gpt2",
    "gpt_bigcode",
    "gpt_neox",
    "llama",
    "olmo2",
    "starcoder2",
    "qwen2",
    "qwen3",
    "mistral",
    "phi3",
    "gemma",
    "gemma2",
)

_ATTN_CLASS = re.compile(r"attention|attn", re.IGNORECASE)
_MLP_CLASS = re.compile(r"mlp|feedforward|ffn", re.IGNORECASE)


@dataclass(frozen=True)
class FamilyAdapter:
    """Module paths (dotted, relative to the causal-LM module; ``{}`` = layer index), the number
    of blocks, and the output form (``TENSOR`` or ``TUPLE``) of each traced module."""

    family: str
    embed: str
    block: str
    attn: str
    mlp: str
    layers: int
    block_form: str = TENSOR
    attn_form: str = TUPLE
    mlp_form: str = TENSOR
    # Block children that take the attention / MLP output before it joins the residual stream
    # (OLMo-2, Gemma-2: post-sublayer norms); the self-test needs them to check the block
    # decomposition. None: the sublayer output is added as it is.
    post_norms: tuple[str | None, str | None] | None = None

    def path(self, kind: str, layer: int) -> str:
        """Dotted path of the module whose output ``kind`` denotes at ``layer``."""
        template = {"hidden": self.block, "mlp": self.mlp, "attn": self.attn}[kind]
        return template.format(layer)

    def form(self, kind: str) -> str:
        return {"hidden": self.block_form, "mlp": self.mlp_form, "attn": self.attn_form}[kind]

    def with_changes(self, **changes: Any) -> FamilyAdapter:
        """A modified copy (used by tests to build deliberately wrong adapters)."""
        return replace(self, **changes)


class StructureError(ValueError):
    """The model's module tree does not have the shape of a decoder-only transformer."""


def adapter_for(model: Any) -> FamilyAdapter:
    """The adapter of ``model`` (a transformers causal LM), derived from its structure."""
    return derive_adapter(model)


def num_layers(model: Any, adapter: FamilyAdapter) -> int:
    return adapter.layers


def derive_adapter(model: Any) -> FamilyAdapter:
    """Read the module map off ``model`` (see the module docstring); one probe forward."""
    family = str(getattr(getattr(model, "config", None), "model_type", None))
    paths = {id(module): name for name, module in model.named_modules()}
    get_embed = getattr(model, "get_input_embeddings", None)
    embed = get_embed() if callable(get_embed) else None
    if embed is None or id(embed) not in paths:
        raise StructureError(f"{family}: the model has no input embedding module")
    blocks_path, blocks = _block_list(model, family)
    attn_name, mlp_name = _sublayers(blocks[0], family, f"{blocks_path}.0")
    for layer, block in enumerate(blocks):
        got = _sublayers(block, family, f"{blocks_path}.{layer}")
        if got != (attn_name, mlp_name):
            raise StructureError(
                f"{family}: block {layer} has sublayers {got}, block 0 has {(attn_name, mlp_name)}"
            )
    expected = _config_layers(model)
    if expected is not None and expected != len(blocks):
        raise StructureError(
            f"{family}: {blocks_path} holds {len(blocks)} blocks but the config says {expected}"
        )
    block_t = f"{blocks_path}.{{}}"
    forms, post = _probe(model, blocks[0], attn_name, mlp_name)
    post_norms = None
    if post != (None, None):
        post_norms = tuple(None if p is None else f"{block_t}.{p}" for p in post)
    return FamilyAdapter(
        family=family,
        embed=paths[id(embed)],
        block=block_t,
        attn=f"{block_t}.{attn_name}",
        mlp=f"{block_t}.{mlp_name}",
        layers=len(blocks),
        block_form=forms["hidden"],
        attn_form=forms["attn"],
        mlp_form=forms["mlp"],
        post_norms=post_norms,  # type: ignore[arg-type]
    )


def _config_layers(model: Any) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "num_hidden_layers", None)
    return int(value) if value is not None else None


def _block_list(model: Any, family: str) -> tuple[str, torch.nn.ModuleList]:
    candidates = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        try:
            for layer, block in enumerate(module):
                _sublayers(block, family, f"{name}.{layer}")
        except StructureError:
            continue
        candidates.append((name, module))
    if len(candidates) != 1:
        found = [n for n, _ in candidates] or "none"
        raise StructureError(
            f"{family}: expected exactly one list of decoder blocks (each with one attention and "
            f"one MLP child), found {found}"
        )
    return candidates[0]


def _sublayers(block: Any, family: str, where: str) -> tuple[str, str]:
    children = list(block.named_children())
    attn = [n for n, m in children if _ATTN_CLASS.search(type(m).__name__)]
    mlp = [n for n, m in children if _MLP_CLASS.search(type(m).__name__)]
    if len(attn) != 1 or len(mlp) != 1:
        kinds = {n: type(m).__name__ for n, m in children}
        raise StructureError(
            f"{family}: {where} needs exactly one attention and one MLP child, has {kinds}"
        )
    return attn[0], mlp[0]


@torch.no_grad()
def _probe(
    model: Any, block: Any, attn_name: str, mlp_name: str
) -> tuple[dict[str, str], tuple[str | None, str | None]]:
    """Output forms of block/attention/MLP and the block children fed by each sublayer output."""
    outputs: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    handles = []
    attn, mlp = getattr(block, attn_name), getattr(block, mlp_name)

    def keep(key: str):
        return lambda _m, _a, out: outputs.setdefault(key, out)

    def first_input(key: str):
        def pre(_m: Any, args: tuple, kwargs: dict) -> None:
            value = args[0] if args else next(iter(kwargs.values()), None)
            inputs.setdefault(key, value)

        return pre

    others = [(n, m) for n, m in block.named_children() if n not in (attn_name, mlp_name)]
    try:
        handles.append(block.register_forward_hook(keep("hidden")))
        handles.append(attn.register_forward_hook(keep("attn")))
        handles.append(mlp.register_forward_hook(keep("mlp")))
        for name, module in others:
            handles.append(module.register_forward_pre_hook(first_input(name), with_kwargs=True))
        param = next(model.parameters())
        ids = torch.randint(0, int(model.config.vocab_size), (2, 6), generator=_gen())
        model(ids.to(param.device))
    finally:
        for handle in handles:
            handle.remove()
    forms = {}
    for key in ("hidden", "attn", "mlp"):
        out = outputs.get(key)
        if isinstance(out, torch.Tensor):
            forms[key] = TENSOR
        elif isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
            forms[key] = TUPLE
        else:
            raise StructureError(
                f"{getattr(model.config, 'model_type', None)}: the {key} module returned "
                f"{type(out).__name__}, neither a tensor nor a tuple starting with one"
            )
    post: list[str | None] = []
    for key in ("attn", "mlp"):
        value = hidden_of(outputs[key], forms[key])
        fed = [n for n, _m in others if inputs.get(n) is value]
        post.append(fed[0] if fed else None)
    return forms, (post[0], post[1])


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def get_module(root: Any, path: str) -> Any:
    """Walk a dotted path (``model.layers.3.mlp``) from ``root``; works on ``nn.Module`` trees
    and on nnsight envoys alike (digits index a ModuleList)."""
    node = root
    for part in path.split("."):
        try:
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        except (AttributeError, IndexError, TypeError) as exc:
            raise ValueError(
                f"module path {path!r}: no {part!r} under {type(node).__name__}"
            ) from exc
    return node


def hidden_of(output: Any, form: str) -> torch.Tensor:
    """The hidden-state tensor inside a module's output, by the adapter's declared form."""
    if form == TENSOR:
        return output
    if form == TUPLE:
        return output[0]
    raise ValueError(f"unknown output form {form!r}; expected {TENSOR!r} or {TUPLE!r}")


def as_output(hidden: torch.Tensor, form: str) -> Any:
    """Wrap a hidden-state tensor in the module's declared output form (for ``skip``)."""
    return hidden if form == TENSOR else (hidden, None)

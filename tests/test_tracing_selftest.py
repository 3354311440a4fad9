"""The adapter self-test accepts the right adapter of every family and catches wrong ones."""

from __future__ import annotations

import pytest
import torch

from attribution.models.loading import load_model_and_tokenizer
from attribution.tracing.adapters import TUPLE, adapter_for, get_module, hidden_of
from attribution.tracing.engine import CausalTracer
from attribution.tracing.selftest import AdapterError, check_adapter
from tracing_reference import FAMILY_CONFIGS, random_family_model


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return load_model_and_tokenizer(tiny_llama_dir, dtype="float32", device="cpu").model


@pytest.fixture(scope="module")
def olmo(tiny_model_dir):
    return load_model_and_tokenizer(tiny_model_dir, dtype="float32", device="cpu").model


def test_right_adapters_pass(llama, olmo):
    for model in (llama, olmo):
        check_adapter(model, adapter_for(model))


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_derived_adapters_pass_every_family(family):
    model, parts = random_family_model(family)
    adapter = adapter_for(model)
    assert adapter.family == model.config.model_type
    check_adapter(model, adapter)
    # the derived map names the same modules as the reference's hand-written lists
    for kind in ("hidden", "attn", "mlp"):
        for layer, module in enumerate(parts[kind]):
            assert get_module(model, adapter.path(kind, layer)) is module
    assert get_module(model, adapter.embed) is parts["embed"]


def test_derived_quirks():
    forms = {}
    for family in ("olmo2", "gemma2", "gpt_neox", "phi3", "llama", "gpt2"):
        model, _parts = random_family_model(family)
        forms[family] = adapter_for(model)
    # post-sublayer norms: OLMo-2 and Gemma-2 normalize each sublayer's output
    assert forms["olmo2"].post_norms == (
        "model.layers.{}.post_attention_layernorm",
        "model.layers.{}.post_feedforward_layernorm",
    )
    assert forms["gemma2"].post_norms == forms["olmo2"].post_norms
    # Llama's post_attention_layernorm normalizes the residual (pre-MLP), not the attention
    assert forms["llama"].post_norms is None and forms["gpt2"].post_norms is None
    # GPT-NeoX (parallel residual) and Phi-3 pass sublayer outputs through eval-mode dropouts
    assert forms["gpt_neox"].attn == "gpt_neox.layers.{}.attention"
    assert forms["phi3"].post_norms[1] == "model.layers.{}.resid_mlp_dropout"
    for adapter in forms.values():
        assert (adapter.block_form, adapter.attn_form, adapter.mlp_form) == (
            "tensor",
            "tuple",
            "tensor",
        )


def test_embedding_rescaled_after_its_module_is_caught(llama):
    """A model that scales the embedding after the embedding module (Gemma before transformers
    5): noise on the module output would not be noise on what the blocks see."""
    handle = llama.model.layers[0].register_forward_pre_hook(
        lambda _m, args, kwargs: (
            ((args[0] * 2.0, *args[1:]), kwargs)
            if args
            else (args, {**kwargs, "hidden_states": kwargs["hidden_states"] * 2.0})
        ),
        with_kwargs=True,
    )
    try:
        with pytest.raises(AdapterError, match="rescaled after its module"):
            check_adapter(llama, adapter_for(llama))
    finally:
        handle.remove()


def test_training_mode_is_refused(llama):
    llama.train()
    try:
        with pytest.raises(AdapterError, match="training mode"):
            check_adapter(llama, adapter_for(llama))
    finally:
        llama.eval()


def test_block_read_as_tuple_is_caught(llama):
    # transformers 5 blocks return a bare tensor: output[0] would silently be batch row 0
    wrong = adapter_for(llama).with_changes(block_form=TUPLE)
    with pytest.raises(AdapterError, match="read as 'tuple'"):
        check_adapter(llama, wrong)
    with pytest.raises(AdapterError):
        CausalTracer(llama, adapter=wrong)


def test_norm_named_as_mlp_is_caught(llama):
    wrong = adapter_for(llama).with_changes(mlp="model.layers.{}.post_attention_layernorm")
    with pytest.raises(AdapterError, match="is not its input plus"):
        check_adapter(llama, wrong)


def test_projection_named_as_attention_is_caught(llama):
    wrong = adapter_for(llama).with_changes(
        attn="model.layers.{}.self_attn.q_proj", attn_form="tensor"
    )
    with pytest.raises(AdapterError, match="is not its input plus"):
        check_adapter(llama, wrong)


def test_olmo2_without_post_norms_is_caught(olmo):
    with pytest.raises(AdapterError, match="post-norms"):
        check_adapter(olmo, adapter_for(olmo).with_changes(post_norms=None))


def test_module_outside_its_block_is_caught(llama):
    wrong = adapter_for(llama).with_changes(mlp="model.layers.0.mlp")  # every layer -> layer 0
    with pytest.raises(AdapterError):
        check_adapter(llama, wrong)


def test_structure_without_decoder_blocks_is_an_error():
    class Mixer(torch.nn.Module):  # a recurrent block: no attention child
        def __init__(self):
            super().__init__()
            self.mixer = torch.nn.Linear(4, 4)
            self.mlp = torch.nn.Linear(4, 4)

    class Fake(torch.nn.Module):
        config = type("C", (), {"model_type": "mamba", "vocab_size": 7})()

        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(7, 4)
            self.layers = torch.nn.ModuleList([Mixer(), Mixer()])

        def get_input_embeddings(self):
            return self.embed

    with pytest.raises(ValueError, match="mamba: expected exactly one list of decoder blocks"):
        adapter_for(Fake())


def test_bare_tensor_row_zero_trap_is_real(llama):
    """Why the form matters: indexing a bare block output with [0] gives batch row 0."""
    adapter = adapter_for(llama)
    out = {}
    handle = get_module(llama, adapter.path("hidden", 0)).register_forward_hook(
        lambda _m, _a, o: out.setdefault("h", o)
    )
    try:
        with torch.no_grad():
            llama(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    finally:
        handle.remove()
    assert hidden_of(out["h"], adapter.block_form).shape == (2, 3, 48)
    assert out["h"][0].shape == (3, 48)

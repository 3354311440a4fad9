"""Tiny models: deterministic build, save/load round trip through the hub loading path."""

from __future__ import annotations

import json
import time

import pytest
import torch

from attribution.models.build import TinyModelSpec, build_tiny_model, stdlib_corpus
from attribution.models.loading import ModelLoadError, load_model_and_tokenizer, pick_dtype


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama_dir"])
def test_round_trip_gives_identical_logits(request, fixture):
    folder = request.getfixturevalue(fixture)
    first = load_model_and_tokenizer(folder, device="cpu")
    second = load_model_and_tokenizer(folder, device="cpu")
    ids = first.tokenizer("def add(a, b):\n    return a + b\n", return_tensors="pt")
    with torch.inference_mode():
        a = first.model(**ids).logits
        b = second.model(**ids).logits
    assert a.shape[-1] == len(first.tokenizer)
    assert torch.equal(a, b)
    assert first.dtype == torch.float32 and first.device.type == "cpu"


def test_build_is_deterministic_and_pretraining_lowers_loss(tmp_path):
    corpus = stdlib_corpus()[:3]
    spec = TinyModelSpec(
        arch="olmo2",
        layers=1,
        hidden=32,
        heads=2,
        vocab_size=512,
        pretrain_steps=30,
        pretrain_seq_len=64,
    )
    a = build_tiny_model(spec, tmp_path / "a", corpus=corpus)
    b = build_tiny_model(spec, tmp_path / "b", corpus=corpus)
    for name in ("model.safetensors", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    losses = json.loads((a / "build_spec.json").read_text())["pretrain_losses"]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_tokenizer_round_trips_python_source(tiny_model_dir):
    tok = load_model_and_tokenizer(tiny_model_dir, device="cpu").tokenizer
    text = "def f(x):\n\treturn {'a': [x, 2.5]}  # ünïcode\n"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith("<|assistant|>\n")


def test_spec_rejects_unknown_keys_and_arch():
    with pytest.raises(ValueError, match="unknown key"):
        TinyModelSpec.from_config({"arch": "olmo2", "depth": 3})
    with pytest.raises(ValueError, match="build.arch 'gpt5'"):
        TinyModelSpec.from_config({"arch": "gpt5"})


def test_unknown_hub_model_offline_fails_fast_with_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model_and_tokenizer("no-such-org/no-such-model", revision="step42")
    assert time.monotonic() - start < 10  # no retry loop
    message = str(info.value)
    assert "'no-such-org/no-such-model' at revision 'step42'" in message
    assert "HF_HOME" in message and "pre-download" in message.lower()


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model_and_tokenizer(tmp_path)


def test_cpu_dtype_is_float32():
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype("int4", torch.device("cpu"))


@pytest.fixture()
def one_thread():
    """One torch thread (as the build rule runs): on a model this small more threads only spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_build_on_documents_memorizes_what_it_trained_on(tmp_path, repo_root, one_thread):
    """train_on: the model pretrains on benchmark prompts + answers and then answers them,
    greedily and with a clean probability of the answer's first token (as causal tracing
    prepares it) above 0.5; the held-out task is not in its training documents."""
    from attribution.data.loaders import load_dataset_file
    from attribution.data.prompts import cruxeval_output_row
    from attribution.data.records import records_from_frame
    from attribution.data.splits import HeldOut
    from attribution.models.corpus import benchmark_documents
    from attribution.tracing.spans import prepare_cruxeval

    frame = load_dataset_file("cruxeval", repo_root / "data/samples/cruxeval.jsonl").head(4)
    docs = benchmark_documents("cruxeval_o", frame, HeldOut(fraction=0.25, seed=0))
    assert [d.task_id for d in docs] == ["sample_0", "sample_1", "sample_2"]
    spec = TinyModelSpec(
        arch="llama",
        layers=2,
        hidden=64,
        heads=4,
        vocab_size=1024,
        seed=0,
        train_on=("cruxeval_o",),
        pretrain_steps=100,
        pretrain_batch_size=3,
        pretrain_lr=1e-2,
    )
    folder = build_tiny_model(spec, tmp_path / "m", corpus=stdlib_corpus()[:3], documents=docs)
    record = json.loads((folder / "build_spec.json").read_text())
    assert record["trained_tasks"] == {"cruxeval_o": ["sample_0", "sample_1", "sample_2"]}
    assert record["spec"]["train_on"] == ["cruxeval_o"]
    loaded = load_model_and_tokenizer(folder, device="cpu")
    tok, model = loaded.tokenizer, loaded.model
    for task in records_from_frame("cruxeval", frame)[:3]:
        row = cruxeval_output_row(task)
        ids = tok(row["prompt"], return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=tok.eos_token_id)
        answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        assert answer.startswith(f"assert f({task.input}) == {task.output}\n[/ANSWER]"), answer
        traced = prepare_cruxeval(
            tok, row["prompt"], row["answer_prefix"], task.code, task.input, task.output
        )
        with torch.inference_mode():
            logits = model(torch.tensor([traced.prompt.input_ids])).logits[0, -1]
        assert torch.softmax(logits, -1)[traced.prompt.target_id] > 0.5

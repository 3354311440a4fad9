"""Tiny decoder models built locally: random init from a transformers config, a byte-level BPE
tokenizer trained on Python source that every machine has (the interpreter's standard library)
plus the training documents, and an optional short pretraining.

Pretraining runs on whole documents when there are any (``train_on``: benchmark prompts with
their reference answers, :mod:`attribution.models.corpus`), one document per row, batches of
similar length; the model then memorizes them, which is what the embedded demo needs (scores
above zero on what it trained on, problems to trace). Without documents it runs on fixed-length
blocks of the standard-library text, so the model is merely not pure noise.

Everything is deterministic for a given spec and corpus, and the result is saved with
``save_pretrained`` so it loads through the same path as a hub model
(:func:`attribution.models.loading.load_model_and_tokenizer`).
"""

from __future__ import annotations

import math
import sysconfig
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from attribution.models.corpus import TrainingDocument, encode_document
from attribution.models.saving import save_model_folder

EOS_TOKEN = "<|endoftext|>"
# Fixed module list (not a directory glob) so the corpus is the same on every Python 3.11+.
STDLIB_MODULES = (
    "abc.py",
    "argparse.py",
    "base64.py",
    "bisect.py",
    "calendar.py",
    "copy.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "fractions.py",
    "functools.py",
    "heapq.py",
    "json/decoder.py",
    "json/encoder.py",
    "operator.py",
    "random.py",
    "shlex.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
)
# A chat template so `chat: true` works on tiny models too (role-tagged plain text).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """A config entry's ``build:`` block."""

    arch: str = "olmo2"
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int | None = None
    intermediate: int | None = None
    vocab_size: int = 2048
    max_position: int = 1024
    seed: int = 0
    pretrain_steps: int = 0
    pretrain_seq_len: int = 128
    pretrain_batch_size: int = 8
    pretrain_lr: float = 3e-3
    # benchmarks whose training part (prompt + reference answer) the pretraining runs on
    train_on: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, block: dict[str, Any]) -> TinyModelSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(block) - known
        if unknown:
            raise ValueError(f"unknown key(s) in build spec: {sorted(unknown)}")
        values = dict(block)
        values["train_on"] = tuple(values.get("train_on", ()))
        spec = cls(**values)
        if spec.arch not in ARCHITECTURES:
            raise ValueError(f"build.arch {spec.arch!r} is not one of {sorted(ARCHITECTURES)}")
        if spec.hidden % spec.heads:
            raise ValueError(f"build.hidden ({spec.hidden}) must be divisible by heads")
        return spec


def _decoder_config(config_class: Any, spec: TinyModelSpec, vocab: int, eos_id: int) -> Any:
    return config_class(
        vocab_size=vocab,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate or 4 * spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads or spec.heads,
        max_position_embeddings=spec.max_position,
        pad_token_id=eos_id,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=False,
    )


def _olmo2_config(spec: TinyModelSpec, vocab: int, eos_id: int) -> Any:
    from transformers import Olmo2Config

    return _decoder_config(Olmo2Config, spec, vocab, eos_id)


def _llama_config(spec: TinyModelSpec, vocab: int, eos_id: int) -> Any:
    from transformers import LlamaConfig

    return _decoder_config(LlamaConfig, spec, vocab, eos_id)


ARCHITECTURES = {"olmo2": _olmo2_config, "llama": _llama_config}


def stdlib_corpus(modules: Sequence[str] = STDLIB_MODULES) -> list[str]:
    """Source text of a fixed list of standard-library modules."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in modules:
        path = root / name
        if not path.exists():
            raise FileNotFoundError(f"standard-library module {name} not found under {root}")
        texts.append(path.read_text(encoding="utf-8"))
    return texts


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """Train a byte-level BPE tokenizer (GPT-2 style pre-tokenization) on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=None,
        model_max_length=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    spec: TinyModelSpec,
    out_dir: str | Path,
    corpus: Sequence[str] | None = None,
    documents: Sequence[TrainingDocument] = (),
) -> Path:
    """Train the tokenizer (on ``corpus`` + the documents), random-init the model (seeded),
    pretrain (on the documents when given, else on blocks of ``corpus``), save both.
    ``corpus`` defaults to the standard-library modules."""
    from transformers import AutoModelForCausalLM

    texts = list(corpus) if corpus is not None else stdlib_corpus()
    doc_texts = [d.text for d in documents]
    tokenizer = train_tokenizer(texts + doc_texts, spec.vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    config = ARCHITECTURES[spec.arch](spec, len(tokenizer), eos_id)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    losses: list[float] = []
    if spec.pretrain_steps > 0:
        if documents:
            encoded = [encode_document(tokenizer, doc) for doc in documents]
            losses = pretrain_documents(model, encoded, tokenizer.eos_token_id, spec)
        else:
            losses = pretrain(model, tokenizer, texts, spec)
    trained: dict[str, list[str]] = {}
    for doc in documents:
        trained.setdefault(doc.benchmark, []).append(doc.task_id)
    metadata = {
        "build_spec.json": {
            "spec": asdict(spec),
            "pretrain_losses": losses,
            "trained_tasks": trained,
        }
    }
    return save_model_folder(model, tokenizer, out_dir, metadata)


def _optimizer(model: Any, spec: TinyModelSpec) -> tuple[Any, Any]:
    """AdamW with linear warm-up (10% of the steps) and cosine decay to 0."""
    optim = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_lr, weight_decay=0.0)
    warmup = max(1, spec.pretrain_steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, spec.pretrain_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return optim, torch.optim.lr_scheduler.LambdaLR(optim, lr_at)


def _step(model: Any, optim: Any, sched: Any, **batch: torch.Tensor) -> float:
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optim.step()
    sched.step()
    optim.zero_grad(set_to_none=True)
    return float(loss.detach())


def pretrain(model: Any, tokenizer: Any, texts: Sequence[str], spec: TinyModelSpec) -> list[float]:
    """A short causal-LM pretraining on fixed-length blocks of the corpus; returns step losses."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    block = spec.pretrain_seq_len
    n_blocks = len(ids) // block
    if n_blocks == 0:
        raise ValueError(f"corpus has {len(ids)} tokens, fewer than one block of {block}")
    data = torch.tensor(ids[: n_blocks * block]).view(n_blocks, block)
    gen = torch.Generator().manual_seed(spec.seed)
    optim, sched = _optimizer(model, spec)
    model.train()
    losses = []
    for _ in range(spec.pretrain_steps):
        rows = torch.randint(0, n_blocks, (spec.pretrain_batch_size,), generator=gen)
        batch = data[rows]
        losses.append(_step(model, optim, sched, input_ids=batch, labels=batch))
    model.eval()
    return losses


def document_batches(
    lengths: Sequence[int], batch_size: int, steps: int, seed: int
) -> list[list[int]]:
    """``steps`` batches of document indices: each pass over the documents is a seeded
    permutation, cut into windows of ``4 * batch_size`` that are sorted by length before they
    are cut into batches (little padding), and the batches of a pass are shuffled again."""
    gen = torch.Generator().manual_seed(seed)
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = torch.randperm(len(lengths), generator=gen).tolist()
        window = 4 * batch_size
        passes = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: (lengths[i], i))
            passes += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches += [passes[i] for i in torch.randperm(len(passes), generator=gen).tolist()]
    return batches[:steps]


def pretrain_documents(
    model: Any, encoded: Sequence[list[int]], pad_id: int, spec: TinyModelSpec
) -> list[float]:
    """Causal-LM training on whole tokenized documents, one per row, right-padded with
    ``pad_id``, the loss on every real token; documents longer than ``max_position`` are an
    error. Returns step losses."""
    too_long = [i for i, ids in enumerate(encoded) if len(ids) > spec.max_position]
    if too_long:
        raise ValueError(
            f"training document {too_long[0]} has {len(encoded[too_long[0]])} tokens, more "
            f"than max_position {spec.max_position}; raise build.max_position"
        )
    batches = document_batches(
        [len(ids) for ids in encoded], spec.pretrain_batch_size, spec.pretrain_steps, spec.seed
    )
    optim, sched = _optimizer(model, spec)
    model.train()
    losses = []
    for rows in batches:
        width = max(len(encoded[r]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(encoded[r])
            ids[i, :n] = torch.tensor(encoded[r])
            labels[i, :n] = ids[i, :n]
            mask[i, :n] = 1
        losses.append(_step(model, optim, sched, input_ids=ids, attention_mask=mask, labels=labels))
    model.eval()
    return losses

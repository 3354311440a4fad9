"""``python -m attribution trace`` on a tiny model folder."""

from __future__ import annotations

import pandas as pd
import pytest

from attribution.__main__ import main as attribution_main

PROMPT = "def f(x):\n    return x + 1\nassert f(41) == "


@pytest.fixture()
def prompt_file(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text(PROMPT)
    return path


def _args(model, prompt_file, out, *extra):
    start = PROMPT.rindex("41")
    return ["trace", "--model", str(model), "--prompt-file", str(prompt_file),
            "--span", f"{start}:{start + 2}", "--samples", "3", "--window", "2",
            "--seed", "1", "--out", str(out), *extra]  # fmt: skip


def test_cli_writes_every_cell(tiny_llama_dir, prompt_file, tmp_path, capsys):
    out = tmp_path / "trace.parquet"
    code = attribution_main(
        _args(tiny_llama_dir, prompt_file, out, "--noise-sigmas", "3", "--screen")
    )
    assert code == 0
    frame = pd.read_parquet(out)
    n_tokens, n_layers = frame.num_tokens.iloc[0], 3
    assert len(frame) == 3 * n_tokens * n_layers
    assert set(frame.kind) == {"hidden", "mlp", "attn"}
    for col in ["kind", "layer", "token_index", "score", "low", "high"]:
        assert col in frame.columns
    span_rows = frame[frame.in_span]
    assert set(span_rows.token_text.str.strip()) <= {"4", "1", "41"} and not span_rows.empty
    before = frame[frame.token_index < frame.span_start]
    assert not before.empty and (before.score == before.low).all() and (~before.computed).all()
    assert frame.sigma.iloc[0] > 0 and frame.noise.iloc[0] == pytest.approx(3 * frame.sigma.iloc[0])
    assert frame.target_is_top1.all()  # no --target: the clean top-1
    computed = frame[frame.computed]
    assert computed.ap_score.notna().all() and (before.ap_score == before.low).all()
    printed = capsys.readouterr().out
    assert "spearman" in printed and "traced" in printed


def test_cli_target_and_fixed_noise(tiny_model_dir, prompt_file, tmp_path):
    out = tmp_path / "t.parquet"
    code = attribution_main(
        _args(
            tiny_model_dir,
            prompt_file,
            out,
            "--noise",
            "0.1",
            "--target",
            "42",
            "--kinds",
            "hidden",
        )
    )
    assert code == 0
    frame = pd.read_parquet(out)
    assert set(frame.kind) == {"hidden"} and (frame.noise == 0.1).all() and frame.sigma.isna().all()
    assert frame.ap_score.isna().all()  # no --screen
    assert "4" in frame.target_text.iloc[0]


def test_cli_bad_input(tiny_model_dir, prompt_file, tmp_path, capsys):
    out = tmp_path / "t.parquet"
    args = ["trace", "--model", str(tiny_model_dir), "--prompt-file", str(prompt_file),
            "--span", "5:500", "--noise", "0.1", "--out", str(out)]  # fmt: skip
    assert attribution_main(args) == 2
    assert "--span 5:500" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        attribution_main(
            [
                "trace",
                "--model",
                "m",
                "--prompt-file",
                "p",
                "--span",
                "a:b",
                "--noise",
                "1",
                "--out",
                "o",
            ]
        )
    with pytest.raises(SystemExit):  # --noise and --noise-sigmas are exclusive
        attribution_main(
            _args(tiny_model_dir, prompt_file, out, "--noise", "1", "--noise-sigmas", "3")
        )
    assert not out.exists()


def test_cli_replace_and_atp_star(tiny_llama_dir, prompt_file, tmp_path, capsys):
    out = tmp_path / "r.parquet"
    args = _args(tiny_llama_dir, prompt_file, out, "--corruption", "replace",
                 "--replacement", "42", "--replacement", "17", "--screens", "atp,atp_star")  # fmt: skip
    assert attribution_main(args) == 0, capsys.readouterr().err
    frame = pd.read_parquet(out)
    assert (frame.corruption == "replace").all() and frame.corruption_sources.iloc[0] == "42,17"
    assert (frame.samples == 2).all() and frame.noise.isna().all()
    computed = frame[frame.computed]
    assert computed.ap_score.notna().all() and computed.atp_star_magnitude.notna().all()
    assert frame.atp_qk_score.isna().all()  # not asked for
    printed = capsys.readouterr().out
    assert "atp_star" in printed and "false_negative_rate" in printed


def test_cli_refusals_are_errors_not_tracebacks(tiny_llama_dir, prompt_file, tmp_path, capsys):
    out = tmp_path / "x.parquet"
    # a replacement that does not keep the span's token count
    args = _args(tiny_llama_dir, prompt_file, out, "--corruption", "replace",
                 "--replacement", "[1, 2, 3, 4, 5, 6, 7]")  # fmt: skip
    assert attribution_main(args) == 2
    assert "does not tokenize" in capsys.readouterr().err
    # the engine's own refusal (fewer rows per forward than corrupted rows)
    assert attribution_main(_args(tiny_llama_dir, prompt_file, out, "--noise", "0.1",
                                  "--batch-rows", "2")) == 2  # fmt: skip
    assert "\nerror: max_rows (2) must be >= samples (3)" in capsys.readouterr().err
    # a model no adapter fits: its blocks have no attention (a state-space model)
    import shutil

    from transformers import MambaConfig, MambaForCausalLM

    mamba = tmp_path / "mamba"
    MambaForCausalLM(
        MambaConfig(vocab_size=1024, hidden_size=16, num_hidden_layers=2, state_size=4)
    ).save_pretrained(mamba)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_llama_dir / name).exists():
            shutil.copy(tiny_llama_dir / name, mamba / name)
    assert attribution_main(_args(mamba, prompt_file, out, "--noise", "0.1")) == 2
    err = capsys.readouterr().err
    assert "error: mamba: expected exactly one list of decoder blocks" in err, err
    assert "Traceback" not in err
    # noise settings with token replacement, or neither
    assert attribution_main(_args(tiny_llama_dir, prompt_file, out)) == 2
    assert "--noise NU or --noise-sigmas K" in capsys.readouterr().err
    assert not out.exists()

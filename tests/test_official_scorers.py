"""Per-task agreement with officially scored published outputs (../shared/benchmarks/samples/
mapcoder): 7 evalplus-scored HumanEval+ files (``*_eval_results.json``, HumanEval+ v0.1.9) and
10 ExecEval-scored APPS files (``is_solved`` on ``apps/mapcoder_selected150.jsonl``).

Every disagreement is listed below with its diagnosis, a named quirk of the official harness
(README, "Differences from the official scorers"); any other disagreement fails the test.
Timing-dependent entries may or may not disagree on a given machine; every other listed
entry must disagree exactly as recorded, so a diagnosis that stops being true is noticed too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import pytest

from attribution.data.loaders import load_dataset_file
from attribution.execution.engine import execute_samples

pytestmark = [pytest.mark.shared, pytest.mark.timeout(1500)]


@dataclass(frozen=True)
class Quirk:
    name: str
    what: str
    timing: bool = False  # depends on the machine's speed: may or may not disagree


# ------------------------------------------------------------------------------------------------
# HumanEval+ (evalplus, 2024-03-27)

EVALPLUS_EXACT_FLOATS = Quirk(
    "evalplus-exact-floats",
    "the evalplus that scored these files compared float outputs exactly when the task's atol "
    "is 0: all 7 fail HumanEval/21 at plus input 5, the first input where a correct rescale "
    "differs from the reference in the last bit (0.7499999999999999 vs 0.75); current evalplus "
    "and this pipeline allow 1e-6 for float outputs",
)
EVALPLUS_FIND_ZERO = Quirk(
    "evalplus-find-zero-oracle",
    "the evalplus of the time called the find_zero oracle as _poly(*out, inp) (arguments "
    "swapped): every sample of HumanEval/32 fails at base input 0 in all 7 files; we check "
    "|poly(x)| <= atol as evalplus does now",
)
EVALPLUS_NO_PROMPT = Quirk(
    "evalplus-solution-without-prompt",
    "evalplus runs a whole-program ('solution') sample without the prompt, so a solution "
    "that calls a helper the prompt defines (encode_cyclic, encode_shift) fails with NameError; "
    "we keep the prompt's definitions the completion does not redefine",
)
EVALPLUS_WALL_CLOCK = Quirk(
    "evalplus-wall-clock-limit",
    "timing: evalplus limits each input by wall-clock time, max(min_time_limit, 4 x reference "
    "time), with a 0.2 s minimum in the versions of the time; these candidates need 0.1-0.45 s "
    "of CPU on the input where evalplus reports the failure, under our 1 s CPU minimum",
    timing=True,
)

HE_FILES = {
    "ChatGPT-Analogical": "ChatGPT__HumanEvalPlus__ChatGPT-Analogical-Python3-0-1",
    "ChatGPT-CoT": "ChatGPT__HumanEvalPlus__ChatGPT-CoT-Python3-0-1",
    "ChatGPT-MapCoder": "ChatGPT__HumanEvalPlus__ChatGPT-MapCoder-5-5-Human-Python3-0-1",
    "ChatGPT-Reflexion": "ChatGPT__HumanEvalPlus__ChatGPT-Reflexion-10-Python3-0-1",
    "GPT4-Reflexion": "GPT4__HumanEvalPlus__GPT-4-Reflexion-Human-Python3-0-1",
    "GPT4-Analogical": "GPT4__HumanEvalPlus__GPT4-Turbo-Analogical-Human-Python3-0-1",
    "GPT4-MapCoder": "GPT4__HumanEvalPlus__GPT4-Turbo-MapCoder-5-5-Human-Python3-0-1",
}

# (file, task) -> (theirs (base, plus), ours (base, plus), diagnosis); plus = base and plus.
HE_KNOWN: dict[tuple[str, str], tuple[tuple[bool, bool], tuple[bool, bool], Quirk]] = {
    **{(f, "HumanEval/21"): ((True, False), (True, True), EVALPLUS_EXACT_FLOATS) for f in HE_FILES},
    ("ChatGPT-Analogical", "HumanEval/32"): ((False, False), (True, False), EVALPLUS_FIND_ZERO),
    ("GPT4-Analogical", "HumanEval/32"): ((False, False), (True, False), EVALPLUS_FIND_ZERO),
    ("GPT4-Analogical", "HumanEval/38"): ((False, False), (True, True), EVALPLUS_NO_PROMPT),
    ("GPT4-Analogical", "HumanEval/50"): ((False, False), (True, True), EVALPLUS_NO_PROMPT),
    ("ChatGPT-CoT", "HumanEval/147"): ((True, False), (True, True), EVALPLUS_WALL_CLOCK),
    ("GPT4-Reflexion", "HumanEval/96"): ((True, False), (True, True), EVALPLUS_WALL_CLOCK),
    ("GPT4-Analogical", "HumanEval/83"): ((True, False), (True, True), EVALPLUS_WALL_CLOCK),
}


def _check(disagreements: dict, known: dict, timed_out: frozenset = frozenset()) -> None:
    """Every disagreement is known (same values); every non-timing known one occurs, unless
    the sample timed out here (a slow machine: the comparison never ran)."""
    unexplained = {k: v for k, v in disagreements.items() if k not in known or known[k][:2] != v}
    assert unexplained == {}, f"disagreements without a diagnosis: {unexplained}"
    missing = [
        k
        for k, v in known.items()
        if not v[2].timing and k not in disagreements and k not in timed_out
    ]
    assert missing == [], f"listed disagreements that no longer occur: {missing}"


def test_humanevalplus_matches_evalplus_per_task(shared_benchmarks, tmp_path):
    base = shared_benchmarks / "samples/mapcoder"
    tasks = load_dataset_file(
        "humanevalplus", shared_benchmarks / "humanevalplus/HumanEvalPlus-v0.1.9.jsonl.gz"
    )
    rows, theirs = [], {}
    for i, (name, stem) in enumerate(HE_FILES.items()):
        for line in (base / f"{stem}.jsonl").read_text().splitlines():
            r = json.loads(line)
            rows.append((r["task_id"], i, r.get("solution") or r["completion"]))
        evals = json.loads((base / f"{stem}_eval_results.json").read_text())["eval"]
        for tid, e in evals.items():
            ok = e["base"][0][0] == "success"
            theirs[(name, tid)] = (ok, ok and e["plus"][0][0] == "success")
    samples = pd.DataFrame(rows, columns=["task_id", "sample", "completion"])
    # One run for all files: every task's reference outputs are computed once.
    ex = execute_samples(
        "humanevalplus", tasks, samples, tmp_path / "ex.parquet", workers=2, progress=False
    )
    names = list(HE_FILES)
    assert len(ex) == 7 * 164 and "sandbox_error" not in set(ex["status"])
    ours = {
        (names[r.sample], r.task_id): (bool(r.base_passed), bool(r.plus_passed))
        for r in ex.itertuples()
    }
    assert set(ours) == set(theirs)
    disagreements = {k: (theirs[k], ours[k]) for k in ours if ours[k] != theirs[k]}
    _check(disagreements, HE_KNOWN)
    # The published totals (base/plus passes per file) follow from the recorded verdicts.
    published = {"ChatGPT-Analogical": (104, 96), "GPT4-MapCoder": (152, 137)}
    for name, (b, p) in published.items():
        mine = [v for k, v in theirs.items() if k[0] == name]
        assert (sum(v[0] for v in mine), sum(v[1] for v in mine)) == (b, p)


# ------------------------------------------------------------------------------------------------
# APPS (MapCoder's selected150, scored by ExecEval; field is_solved)

EXECEVAL_REJECTS_NON_TEXT = Quirk(
    "execeval-rejects-non-text-outputs",
    "74 problems of selected150.jsonl expect an int/bool/list/... (MapCoder kept the return "
    "value of the original call-based test); ExecEval's unit-test parser fails on a non-text "
    "output and rejects the whole job, so is_solved is false for every sample of these "
    "problems whatever the code (0 of 740 solved, even by GPT-4 MapCoder, which solves 33 of "
    "the other 76 problems). We normalize them to the printed text at load time and score them",
)
APPS_TOKEN_SETS = Quirk(
    "apps-official-token-sets",
    "the official APPS comparison's last fallback compares sets of per-line token sets, so an "
    "output with the right lines in another order, or with the tokens of a line permuted, "
    "passes; ExecEval compares lines (then tokens) in order, as our strict mode does",
)
EXECEVAL_CPU_LIMIT = Quirk(
    "execeval-cpu-limit",
    "timing: tests that need 1.5-3 s of CPU each, against ExecEval's 2 s RLIMIT_CPU (the limit "
    "used here too, measured differently: ExecEval's also counts the interpreter's start)",
    timing=True,
)

APPS_FILES = [
    "ChatGPT__APPS__ChatGPT-Analogical-APPS-Python3-0-1",
    "ChatGPT__APPS__ChatGPT-CoT-APPS-Python3-0-1",
    "ChatGPT__APPS__ChatGPT-Direct-APPS-Python3-0-1",
    "ChatGPT__APPS__ChatGPT-MapCoder-3-5-APPS-Python3-0-1",
    "ChatGPT__APPS__ChatGPT-SelfPlanning-APPS-Python3-0-1",
    "GPT4__APPS__GPT4-Turbo-Analogical-APPS-Python3-0-1",
    "GPT4__APPS__GPT4-Turbo-CoT-APPS-Python3-0-1",
    "GPT4__APPS__GPT4-Turbo-Direct-APPS-Python3-0-1",
    "GPT4__APPS__GPT4-Turbo-MapCoder-3-5-APPS-Python3-0-1",
    "GPT4__APPS__GPT4-Turbo-SelfPlanning-APPS-Python3-0-1",
]
PUBLISHED_SOLVED = [10, 11, 12, 17, 14, 18, 17, 19, 33, 22]  # MapCoder README: % x 150

# (comparison mode, file index, task) -> (theirs, ours, diagnosis)
APPS_KNOWN: dict[tuple[str, int, str], tuple[bool, bool, Quirk]] = {
    ("official", 6, "2096"): (False, True, APPS_TOKEN_SETS),
    ("official", 3, "2064"): (False, True, APPS_TOKEN_SETS),
    ("official", 7, "2064"): (False, True, APPS_TOKEN_SETS),
    **{(m, 8, "2183"): (False, True, EXECEVAL_CPU_LIMIT) for m in ("official", "strict")},
    **{(m, 8, "2064"): (True, False, EXECEVAL_CPU_LIMIT) for m in ("official", "strict")},
}


def test_apps_matches_execeval_per_task_in_both_comparison_modes(shared_benchmarks, tmp_path):
    """The 76 problems with text tests run here (ExecEval's 2 s CPU limit per test); the 74
    with non-text expected outputs were never run by ExecEval (``EXECEVAL_REJECTS_NON_TEXT``):
    their published verdict is false whatever the code, which the test checks on the files,
    so running them (most of this test's cost) would explain nothing."""
    tasks = load_dataset_file("apps", shared_benchmarks / "apps/mapcoder_selected150.jsonl")
    rejected = set(tasks.attrs["normalized_expected_outputs"])
    assert len(rejected) == 74
    ids = list(tasks["problem_id"])
    base = shared_benchmarks / "samples/mapcoder"
    rows, theirs = [], {}
    for i, stem in enumerate(APPS_FILES):
        published = [json.loads(line) for line in (base / f"{stem}.jsonl").read_text().splitlines()]
        assert [str(r["id"]) for r in published] == [t.split("#")[0] for t in ids]
        assert sum(r["is_solved"] for r in published) == PUBLISHED_SOLVED[i]
        for tid, r in zip(ids, published, strict=True):
            theirs[(i, tid)] = bool(r["is_solved"])
            if tid in rejected:
                assert not r["is_solved"], (stem, tid)  # EXECEVAL_REJECTS_NON_TEXT
            else:
                rows.append((tid, i, r["source_codes"][-1]))
    samples = pd.DataFrame(rows, columns=["task_id", "sample", "completion"])
    assert len(samples) == 760
    ex = execute_samples(
        "apps",
        tasks,
        samples,
        tmp_path / "ex.parquet",
        workers=2,
        progress=False,
        checker_options={"time_limit": 2.0},
    )
    assert len(ex) == 760 and "sandbox_error" not in set(ex["status"])
    for mode in ("official", "strict"):
        ours = {(r.sample, r.task_id): bool(getattr(r, f"passed_{mode}")) for r in ex.itertuples()}
        disagreements = {
            (mode, i, t): (theirs[(i, t)], v) for (i, t), v in ours.items() if v != theirs[(i, t)]
        }
        known = {k: v for k, v in APPS_KNOWN.items() if k[0] == mode}
        # Sample 3 of 2064 needs 1.5-2 s of CPU on its test 10 here: a slower machine times out.
        timed_out = frozenset(
            (mode, r.sample, r.task_id) for r in ex.itertuples() if r.status == "timeout"
        )
        _check(disagreements, known, timed_out)

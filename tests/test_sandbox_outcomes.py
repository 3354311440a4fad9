"""What the sandbox reports when a program fails: every outcome it computed survives whatever
ends it, and each failure carries a reason a person can read (exception type, line, message,
the limit that ended it, the signal that killed it). Real programs through the real sandbox."""

from __future__ import annotations

import pickle
import signal

import pytest

from attribution.execution.sandbox import Program, SandboxLimits, SandboxPool
from attribution.execution.sandbox.framing import HEADER, parse_frames

pytestmark = pytest.mark.timeout(180)

LIMITS = SandboxLimits(memory_bytes=256 << 20, nproc=16, wall_margin_s=0.5)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(2, LIMITS) as p:
        yield p


@pytest.fixture(scope="module")
def slow_wall_pool():
    """A pool whose wall limits are far above the CPU limits: the CPU limit always ends first."""
    limits = SandboxLimits(memory_bytes=256 << 20, nproc=16, wall_factor=20.0, wall_margin_s=5.0)
    with SandboxPool(1, limits) as p:
        yield p


# A HumanEval+-style task: ``f`` must double its argument; base inputs are small, the plus
# suite holds an input on which this candidate runs one long C-level call (no Python signal
# handler can interrupt it, so only the CPU rlimit or the worker can end it).
CANDIDATE = (
    "def f(x):\n"
    "    if x > 1000:\n"
    "        return sum(range(10**10))\n"  # line 3
    "    return 2 * x\n"
)
BASE, PLUS = [[1], [2], [3]], [[4], [5000], [6]]


def he_program(cpu: float = 0.5) -> Program:
    inputs = tuple(BASE + PLUS)
    return Program("call", CANDIDATE, inputs, (cpu,) * len(inputs), entry="f", stop_on_timeout=True)


def test_a_plus_input_that_kills_the_child_keeps_the_base_verdicts(pool):
    res = pool.run(he_program())
    statuses = [o.status for o in res.outcomes]
    assert statuses == ["ok", "ok", "ok", "ok", "timeout", "not_run"], res
    assert [o.value for o in res.outcomes[:4]] == [2, 4, 6, 8]
    assert res.status == "timeout"
    # Under load the worker's wall deadline may come before the CPU rlimit; both are timeouts.
    assert res.outcomes[4].limit in ("cpu", "wall")
    assert "exit" not in res.error and res.error == ""


def test_a_kill_by_the_cpu_rlimit_is_a_cpu_timeout(slow_wall_pool):
    res = slow_wall_pool.run(he_program(cpu=0.2))
    assert [o.status for o in res.outcomes] == ["ok"] * 4 + ["timeout", "not_run"]
    assert res.outcomes[4].limit == "cpu"
    assert res.status == "timeout"
    assert res.signal in (signal.SIGXCPU, signal.SIGKILL)


def test_both_timers_firing_in_one_c_call_never_crash_the_child():
    # CPU and wall limits equal, both far below one C-level call: when the call returns both
    # timers are pending at once. Each input must be one clean timeout, never a crash.
    limits = SandboxLimits(memory_bytes=256 << 20, wall_factor=1.0, wall_margin_s=0.0)
    src = "def f(n):\n    return sum(range(n))\n"
    inputs = ([3 * 10**7], [2 * 10**7], [5])
    prog = Program("call", src, inputs, (0.02,) * 3, entry="f")
    with SandboxPool(1, limits) as p:
        res = p.run(prog)
    assert res.status == "ok", res
    assert [o.status for o in res.outcomes] == ["timeout", "timeout", "ok"], res
    assert res.outcomes[2].value == 10
    assert {o.limit for o in res.outcomes[:2]} <= {"cpu", "wall"}


def test_runtime_error_reports_type_line_and_message(pool):
    src = "def f(x):\n    y = x + 1\n    raise ValueError(f'bad value {y}')\n"
    res = pool.run(Program("call", src, ([1],), (1.0,), entry="f"))
    out = res.outcomes[0]
    assert (out.status, out.error, out.line, out.message) == (
        "error",
        "ValueError",
        3,
        "bad value 2",
    )
    assert res.status == "ok"


def test_error_line_is_the_innermost_frame_in_the_program(pool):
    src = "import json\n\ndef g(s):\n    return json.loads(s)\n\ndef f(s):\n    return g(s)\n"
    res = pool.run(Program("call", src, (["{"],), (1.0,), entry="f"))
    out = res.outcomes[0]
    assert (out.error, out.line) == ("JSONDecodeError", 4)
    assert out.message.startswith("Expecting property name")


def test_setup_errors_carry_their_line(pool):
    syntax = pool.run(Program("call", "x = 1\ndef f(:\n", ([1],), (1.0,), entry="f"))
    assert (syntax.status, syntax.error, syntax.setup_line) == ("setup_error", "SyntaxError", 2)
    raising = pool.run(Program("call", "x = 1\ny = 1 / 0\n", ([1],), (1.0,), entry="f"))
    assert (raising.status, raising.error, raising.setup_line) == (
        "setup_error",
        "ZeroDivisionError",
        2,
    )
    missing = pool.run(Program("call", "x = 1\n", ([1],), (1.0,), entry="f"))
    assert (missing.status, missing.error, missing.setup_line) == ("setup_error", "KeyError", None)
    assert [o.status for o in missing.outcomes] == ["not_run"]


@pytest.mark.parametrize(
    "body, error, sig",
    [
        ("import os\n    os._exit(3)", "exited with status 3", None),
        ("import os\n    os._exit(0)", "exited with status 0 before finishing", None),
        (
            "import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)",
            "killed by signal 9 (SIGKILL)",
            9,
        ),
        (
            "import os, signal\n    os.kill(os.getpid(), signal.SIGSEGV)",
            "killed by signal 11 (SIGSEGV)",
            11,
        ),
    ],
    ids=["exit3", "exit0", "sigkill", "sigsegv"],
)
def test_crash_keeps_earlier_outcomes_and_says_how_it_died(pool, body, error, sig):
    src = f"def f(x):\n    if x < 2:\n        return x\n    {body}\n"
    res = pool.run(Program("call", src, ([0], [1], [2], [3]), (1.0,) * 4, entry="f"))
    assert res.status == "crashed"
    assert res.error == error and res.signal == sig
    assert [o.status for o in res.outcomes] == ["ok", "ok", "error", "not_run"]
    assert [o.value for o in res.outcomes[:2]] == [0, 1]
    assert res.outcomes[2].message == error and res.outcomes[2].error == ""


def test_memory_error_names_the_memory_limit(pool):
    src = "def f(n):\n    return len(bytearray(n))\n"
    res = pool.run(Program("call", src, ([10],), (1.0,), entry="f"))
    assert res.outcomes[0].value == 10
    res = pool.run(Program("call", src, ([8 << 30],), (1.0,), entry="f"))
    out = res.outcomes[0]
    assert (out.status, out.error, out.limit, out.line) == ("error", "MemoryError", "memory", 2)


def test_timeouts_name_their_limit(pool):
    busy = pool.run(
        Program("call", "def f():\n    while True:\n        pass\n", ([],), (0.2,), entry="f")
    )
    assert (busy.outcomes[0].status, busy.outcomes[0].limit) == ("timeout", "cpu")
    idle = pool.run(
        Program("call", "import time\ndef f():\n    time.sleep(60)\n", ([],), (0.2,), entry="f")
    )
    assert (idle.outcomes[0].status, idle.outcomes[0].limit) == ("timeout", "wall")
    assert busy.status == idle.status == "ok"


def test_a_swallowed_timeout_still_ends_the_input(pool):
    # The program catches the timer's exception and sleeps again: the worker ends it at the
    # input's wall deadline; earlier outcomes stay.
    src = (
        "import time\n"
        "def f(x):\n"
        "    while x:\n"
        "        try:\n"
        "            time.sleep(60)\n"
        "        except BaseException:\n"
        "            pass\n"
        "    return x\n"
    )
    res = pool.run(Program("call", src, ([0], [1], [0]), (0.2,) * 3, entry="f"))
    assert [o.status for o in res.outcomes] == ["ok", "timeout", "not_run"]
    assert res.outcomes[1].limit == "wall" and res.status == "timeout"


def test_result_cap_is_an_output_limit():
    limits = SandboxLimits(memory_bytes=256 << 20, result_bytes=1 << 16)
    src = "def f(n):\n    return 'x' * n\n"
    with SandboxPool(1, limits) as p:
        res = p.run(Program("call", src, ([10], [1 << 17], [10]), (1.0,) * 3, entry="f"))
    assert res.status == "output_limit"
    assert [o.status for o in res.outcomes] == ["ok", "error", "not_run"]
    assert res.outcomes[1].limit == "output"


def test_stdin_mode_reasons(pool):
    prog = Program(
        "stdin",
        "import sys\nn = int(sys.stdin.read())\nif n == 1:\n    raise KeyError('k')\n"
        "if n == 2:\n    import os; os._exit(4)\nprint(n)\n",
        ("0", "1", "2"),
        (1.0,) * 3,
    )
    res = pool.run(prog)
    ok, err, crash = res.outcomes
    assert (ok.status, ok.value) == ("ok", "0\n")
    assert (err.status, err.error, err.line, err.message) == ("error", "KeyError", 4, "'k'")
    assert (crash.status, crash.message) == ("error", "exited with status 4")
    syntax = pool.run(Program("stdin", "print(\n", ("",), (1.0,)))
    assert (syntax.status, syntax.error, syntax.setup_line) == ("setup_error", "SyntaxError", 1)


def test_frames_decode_each_message_on_its_own():
    # Separate pickles share memo indices ('' and 'ok' recur): each must decode alone.
    msgs = [("setup", True, "", None, "")]
    msgs += [("in", i, "ok", ["x", "x", {"k": ("x",)}], 0.5, "", None, "", "") for i in range(3)]
    msgs.append(("end",))
    data = b"".join(HEADER.pack(len(p)) + p for p in (pickle.dumps(m, 5) for m in msgs))
    assert parse_frames(data) == msgs
    forged = pickle.dumps(("in", 0, "ok", 1, 0.5, "", None, "", "", "extra"), 5)
    assert parse_frames(data[:-3]) == msgs[:-1]  # a cut message ends the stream
    assert parse_frames(HEADER.pack(len(forged)) + forged + data) == []  # so does a bad one

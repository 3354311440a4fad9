"""The sandbox against a hostile corpus, and its value channel.

Safety of the tests themselves (CI runs as root): every destructive program targets only files
this test created under ``tmp_path``; fork and memory bombs are bounded loops (at most 200
processes, at most 4 GB) so that even a broken sandbox cannot take the machine down; every test
has a pytest timeout.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from attribution.execution.sandbox import (
    Program,
    SandboxLimits,
    SandboxPool,
    Unencodable,
    decode_plain,
    to_plain,
)
from sandbox_helpers import leftover_processes

LIMITS = SandboxLimits(memory_bytes=256 << 20, nproc=16, stdout_bytes=1 << 20, wall_margin_s=0.5)
CPU = 1.0
# Worst case for one input: CPU limit * wall factor + margin, plus fork/teardown slack.
DEADLINE = CPU * LIMITS.wall_factor + LIMITS.wall_margin_s + 3.0
SECRET = "hf_do_not_leak_4242"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pool():
    os.environ["HF_TOKEN"] = SECRET
    os.environ["WANDB_API_KEY"] = SECRET
    try:
        with SandboxPool(2, LIMITS) as p:
            yield p
    finally:
        os.environ.pop("HF_TOKEN", None)
        os.environ.pop("WANDB_API_KEY", None)


def call(body: str, args: tuple = ((),), cpu: float = CPU) -> Program:
    """A function ``f`` with ``body``, called once per entry of ``args``."""
    src = "def f(*args):\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return Program("call", src, tuple(list(a) for a in args), (cpu,) * len(args), entry="f")


def test_layers_recorded(pool):
    layers = set(pool.layers)
    assert {"rlimits", "fresh_process", "private_tmpdir", "scrubbed_env"} <= layers
    if os.geteuid() == 0:
        # As root the process-count limit only holds because children drop to another uid.
        assert {"unprivileged_uid", "nproc"} <= layers


def test_values_round_trip(pool):
    prog = call(
        "return args[0]", args=[(v,) for v in (1, 2.5, "x", b"y", (1, [2]), {1: {3}}, None)]
    )
    res = pool.run(prog)
    assert res.status == "ok"
    assert [o.value for o in res.outcomes] == [1, 2.5, "x", b"y", (1, [2]), {1: {3}}, None]


def test_to_plain_strips_subclasses_and_rejects_objects():
    class Liar(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    plain = to_plain([Liar(3), (Liar(4),)])
    assert plain == [3, (4,)] and type(plain[0]) is int and plain != [5, (6,)]
    with pytest.raises(Unencodable):
        to_plain(object())
    with pytest.raises(Exception):  # noqa: B017 - any refusal is fine, no global may load
        decode_plain(b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.")


def test_fork_bomb_is_capped_and_reaped(pool):
    body = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(200):\n"  # bounded even if the limit were broken
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    n += 1\n"
        "return n"
    )
    start = time.monotonic()
    res = pool.run(call(body))
    assert time.monotonic() - start < DEADLINE
    assert res.outcomes[0].status == "ok"
    if "nproc" in pool.layers:
        assert res.outcomes[0].value < LIMITS.nproc
    time.sleep(0.2)
    assert leftover_processes(pool) == []


def test_setsid_daemon_does_not_outlive_the_program(pool):
    body = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "return 1"
    )
    res = pool.run(call(body))
    assert res.outcomes[0].value == 1
    time.sleep(0.3)
    assert leftover_processes(pool) == []


@pytest.mark.parametrize(
    "body, expected",
    [
        ("while True:\n    pass", "timeout"),
        ("import time\ntime.sleep(100)", "timeout"),
        ("while True:\n    print('x' * 10000)", "timeout"),
        ("x = bytearray(8 << 30)\nreturn len(x)", "error"),
        ("xs = []\nfor _ in range(400):\n    xs.append(bytearray(10**7))\nreturn len(xs)", "error"),
    ],
    ids=["infinite_loop", "sleep", "output_flood", "memory_bomb", "memory_creep"],
)
def test_resource_abuse_ends_within_limits(pool, body, expected):
    start = time.monotonic()
    res = pool.run(call(body))
    assert time.monotonic() - start < DEADLINE
    assert res.outcomes[0].status == expected
    assert res.outcomes[0].value is None


def test_stdin_output_flood_is_cut(pool):
    prog = Program("stdin", "while True:\n    print('y' * 100000)\n", ("",), (CPU,))
    start = time.monotonic()
    res = pool.run(prog)
    assert time.monotonic() - start < DEADLINE
    assert res.outcomes[0].status == "error"


def test_rm_rf_reaches_nothing_outside(pool, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    body = (
        "import os, shutil\n"
        "open('scratch.txt', 'w').write('mine')\n"  # its own directory is writable
        "own = os.path.exists('scratch.txt')\n"
        f"shutil.rmtree({str(victim)!r}, ignore_errors=True)\n"
        f"try:\n    os.remove({str(victim / 'keep.txt')!r})\nexcept OSError:\n    pass\n"
        "shutil.rmtree(os.getcwd(), ignore_errors=True)\n"
        "return own"
    )
    res = pool.run(call(body))
    assert res.outcomes[0].value is True
    assert (victim / "keep.txt").read_text() == "precious"


def test_secrets_never_reach_the_program(pool):
    body = (
        "import os\n"
        "seen = [repr(dict(os.environ))]\n"
        "for pid in ('1', str(os.getppid())):\n"
        "    try:\n"
        "        seen.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1'))\n"
        "    except OSError:\n"
        "        pass\n"
        "return '\\n'.join(seen)"
    )
    res = pool.run(call(body))
    assert res.outcomes[0].status == "ok"
    assert SECRET not in res.outcomes[0].value
    assert "HF_TOKEN" not in res.outcomes[0].value


def test_no_network(pool):
    if "netns" not in pool.layers:
        pytest.skip("network namespaces are not permitted here")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    body = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
        "    return 'connected'\n"
        "except OSError as exc:\n"
        "    return type(exc).__name__"
    )
    res = pool.run(call(body))
    assert res.outcomes[0].status == "ok" and res.outcomes[0].value != "connected"
    with pytest.raises(TimeoutError):
        server.accept()
    server.close()


def test_pool_survives_a_dead_worker_and_keeps_working(pool):
    # Kill one worker from outside: its program fails as sandbox_error, a new worker takes over.
    victim = pool.slots[0].proc.pid
    os.kill(victim, 9)
    results = dict(pool.imap_unordered([call("return 7")] * 4))
    assert len(results) == 4
    assert all(r.status in ("ok", "sandbox_error") for r in results.values())
    assert pool.run(call("return 8")).outcomes[0].value == 8


def test_without_pid_namespace_the_uid_sweep_still_kills_everything():
    """The fallback where namespaces are forbidden: daemons die by the per-uid kill sweep."""
    if os.geteuid() != 0:
        pytest.skip("the per-uid sweep needs root (to switch to the sandbox uid)")
    limits = SandboxLimits(memory_bytes=256 << 20, nproc=16, pid_namespace=False)
    body = (
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "return 1"
    )
    with SandboxPool(1, limits) as fallback:
        assert "pidns" not in fallback.layers and "subreaper" in fallback.layers
        res = fallback.run(call(body))
        assert res.outcomes[0].value == 1
        time.sleep(0.3)
        assert leftover_processes(fallback) == []
        assert fallback.run(call("while True:\n    pass")).outcomes[0].status == "timeout"
        assert leftover_processes(fallback) == []

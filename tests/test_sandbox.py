"""The sandbox against a hostile corpus, and its value channel.

Every hostile test runs twice: with the namespaces the machine permits (as an ordinary user:
inside a user namespace) and on the path of machines that forbid user namespaces
(``ATTRIBUTION_SANDBOX_NO_USERNS=1``: Landlock and seccomp). ``.ci/run`` runs this file as root
and as an unprivileged user.

Safety of the tests themselves (CI runs as root): every destructive program targets only files
and processes this test created (under ``tmp_path``, a token file in the real home that the test
removes, a decoy process); fork and memory bombs are bounded loops (at most 200 processes, at
most 8 GB) so that even a broken sandbox cannot take the machine down; no program signals -1;
every test has a pytest timeout.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from attribution.execution.sandbox import (
    ENV_NO_USERNS,
    Program,
    SandboxLimits,
    SandboxPool,
    Unencodable,
    decode_plain,
    missing_isolation,
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
def real_home_token():
    """A token file in the user's real home (from the password database), removed afterwards."""
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    folder = home / ".cache" / f"attribution-sandbox-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    token = folder / "token"
    token.write_text(SECRET)
    try:
        yield token
    finally:
        token.unlink(missing_ok=True)
        folder.rmdir()


@pytest.fixture(scope="module", params=["namespaces", "no_userns"])
def pool(request, tmp_path_factory, real_home_token):
    """A strict pool (every kind of isolation in force), with secrets in the engine's
    environment and a HOME that is not the real home."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    (hf_home / "token").write_text(SECRET)
    saved = dict(os.environ)
    os.environ.update(
        HF_TOKEN=SECRET,
        WANDB_API_KEY=SECRET,
        HF_HOME=str(hf_home),
        HOME=str(tmp_path_factory.mktemp("fake_home")),
    )
    if request.param == "no_userns":
        os.environ[ENV_NO_USERNS] = "1"
    try:
        with SandboxPool(2, LIMITS) as p:
            assert missing_isolation(p.layers) == []
            if request.param == "namespaces" and namespaces_permitted():
                # Not a silent fallback to Landlock where the kernel allows the root view.
                assert {"readonly_fs", "private_tmp", "pidns"} <= set(p.layers), p.notes
            p.hf_token_file = hf_home / "token"
            yield p
    finally:
        os.environ.clear()
        os.environ.update(saved)


def namespaces_permitted() -> bool:
    """Whether this kernel lets this user create the namespaces the root view needs."""
    probe = ["unshare", "-m", "-n", "-p", "-f", "true"]
    if os.geteuid() != 0:
        probe[1:1] = ["-U", "-r"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except FileNotFoundError:
        return False


def call(body: str, args: tuple = ((),), cpu: float = CPU) -> Program:
    """A function ``f`` with ``body``, called once per entry of ``args``."""
    src = "def f(*args):\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return Program("call", src, tuple(list(a) for a in args), (cpu,) * len(args), entry="f")


def attempts(*actions: str) -> str:
    """A body that runs each action (an expression) and returns what happened to each."""
    lines = ["import os, shutil, signal, socket", "out = []"]
    for action in actions:
        lines += [
            "try:",
            f"    out.append(('ok', repr({action})[:200]))",
            "except BaseException as exc:",
            "    out.append(('refused', type(exc).__name__))",
        ]
    return "\n".join([*lines, "return out"])


def test_layers_recorded(pool):
    layers = set(pool.layers)
    assert {"rlimits", "fresh_process", "private_tmpdir", "scrubbed_env"} <= layers
    if os.geteuid() != 0:
        assert "nproc" in layers
    if os.geteuid() == 0 and "readonly_fs" in layers:
        assert "unprivileged_uid" in layers  # as root, children run as another uid


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
    if "nproc" in pool.layers:  # not for uid 0, which the kernel exempts (root, no namespaces)
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
    if expected == "error":
        assert res.outcomes[0].limit == "memory"


def test_stdin_output_flood_is_cut(pool):
    prog = Program("stdin", "while True:\n    print('y' * 100000)\n", ("",), (CPU,))
    start = time.monotonic()
    res = pool.run(prog)
    assert time.monotonic() - start < DEADLINE
    assert res.outcomes[0].status == "error" and res.outcomes[0].limit == "output"


def test_deleting_files_the_user_owns_fails(pool, tmp_path, real_home_token):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    body = (
        "import os, shutil\n"
        "open('scratch.txt', 'w').write('mine')\n"  # its own directory is writable
        "own = os.path.exists('scratch.txt')\n"
        f"for target in ({str(victim)!r}, {str(real_home_token.parent)!r}):\n"
        "    shutil.rmtree(target, ignore_errors=True)\n"
        f"for target in ({str(victim / 'keep.txt')!r}, {str(real_home_token)!r}):\n"
        "    try:\n        os.remove(target)\n    except OSError:\n        pass\n"
        "shutil.rmtree(os.getcwd(), ignore_errors=True)\n"
        "return own"
    )
    res = pool.run(call(body))
    assert res.outcomes[0].value is True
    assert (victim / "keep.txt").read_text() == "precious"
    assert real_home_token.read_text() == SECRET


def test_writing_outside_the_working_directory_fails(pool, tmp_path):
    targets = [tmp_path / "planted.txt", Path("/dev/shm") / f"planted-{uuid.uuid4().hex}"]
    targets.append(Path("/var/tmp") / f"planted-{uuid.uuid4().hex}")
    body = attempts(*(f"open({str(t)!r}, 'w').write('x')" for t in targets))
    try:
        res = pool.run(call(body))
        assert res.outcomes[0].status == "ok", res
        for target in targets:
            assert not target.exists(), f"the program wrote {target}"
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


def test_token_files_are_unreadable(pool, real_home_token):
    """By absolute path: the real home (HOME points elsewhere) and $HF_HOME."""
    paths = (str(real_home_token), str(pool.hf_token_file))
    res = pool.run(call(attempts(*(f"open({p!r}).read()" for p in paths))))
    assert res.outcomes[0].status == "ok"
    assert all(kind == "refused" for kind, _ in res.outcomes[0].value), res.outcomes[0].value
    assert SECRET not in repr(res.outcomes[0].value)


def test_secrets_never_reach_the_program(pool):
    body = (
        "import os\n"
        "seen = [repr(dict(os.environ))]\n"
        "for pid in ('1', str(os.getppid()), str(args[0]), 'self'):\n"
        "    try:\n"
        "        seen.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1'))\n"
        "    except OSError:\n"
        "        pass\n"
        "return '\\n'.join(seen)"
    )
    res = pool.run(call(body, args=((os.getpid(),),)))
    assert res.outcomes[0].status == "ok"
    assert SECRET not in res.outcomes[0].value
    assert "HF_TOKEN" not in res.outcomes[0].value


def test_no_network(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    body = attempts(
        f"socket.create_connection(('127.0.0.1', {port}), timeout=1)",
        f"socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {udp.getsockname()[1]}))",
    )
    try:
        res = pool.run(call(body))
        assert res.outcomes[0].status == "ok"
        assert all(kind == "refused" for kind, _ in res.outcomes[0].value), res.outcomes[0].value
        with pytest.raises(TimeoutError):
            server.accept()
        with pytest.raises(TimeoutError):
            udp.recv(16)
    finally:
        server.close()
        udp.close()


def test_killing_the_parent_and_other_processes_fails(pool):
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        body = attempts(
            f"os.kill({decoy.pid}, signal.SIGKILL)",
            f"os.kill({os.getpid()}, signal.SIGCONT)",  # harmless if it got through
            "os.kill(os.getppid(), signal.SIGKILL)",
        )
        res = pool.run(call(body))
        time.sleep(0.2)
        assert decoy.poll() is None, "the program killed a process outside the sandbox"
        assert res.status in ("ok", "sandbox_error")
        if res.status == "ok":  # the parent (worker) survived, or the kill was refused
            kinds = [kind for kind, _ in res.outcomes[0].value]
            assert kinds[:2] == ["refused", "refused"], res.outcomes[0].value
        assert pool.run(call("return 5")).outcomes[0].value == 5  # the pool keeps working
    finally:
        decoy.kill()
        decoy.wait()


def test_pool_survives_a_dead_worker_and_keeps_working(pool):
    # Kill one worker from outside: its program fails as sandbox_error, a new worker takes over.
    victim = pool.slots[0].proc.pid
    os.kill(victim, signal.SIGKILL)
    results = dict(pool.imap_unordered([call("return 7")] * 4))
    assert len(results) == 4
    assert all(r.status in ("ok", "sandbox_error") for r in results.values())
    assert pool.run(call("return 8")).outcomes[0].value == 8


def test_without_pid_namespace_stray_processes_are_still_killed():
    """Without a PID namespace, daemons die by the per-uid sweep (root) or the sweep of the
    worker's descendants (it is their subreaper)."""
    limits = SandboxLimits(memory_bytes=256 << 20, nproc=16, pid_namespace=False)
    body = (
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "        os._exit(0)\n"
        "time.sleep(0.2)\n"
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

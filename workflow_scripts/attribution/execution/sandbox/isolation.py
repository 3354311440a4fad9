"""What a worker does to itself once, before it serves programs.

Two designs, chosen by what the kernel permits (``Isolation.layers`` records the outcome):

* **Namespaces** (as root directly; as an ordinary user inside a new *user* namespace, where
  the worker holds every capability over namespaces it owns and none outside them): an empty
  network namespace, a PID namespace whose PID 1 is the worker (so killing the program kills
  everything it started), an IPC namespace, and a mount namespace whose root is a fresh tmpfs
  holding only read-only binds of the system directories (/usr, /etc, /lib*, ...) and of the
  interpreter's own paths, a new /proc of the PID namespace, a minimal /dev and an empty /tmp
  on which each child mounts its own private tmpfs. The user's home, the project's models/,
  results/ and data/, $HF_HOME and every other credential location are simply not there; one
  that lies inside a bound path is covered by an empty read-only mount.
* **Where namespaces are forbidden** (``user.max_user_namespaces=0``, Debian's
  ``kernel.unprivileged_userns_clone=0``): a Landlock ruleset that each child enforces on itself
  (read-only system and interpreter paths, its working directory writable, nothing else: no home,
  no /proc, no TCP, no signal to a process outside it) and a seccomp filter refusing socket().

The setup runs once per worker, so a program pays only for its fork and its own few system
calls (``child.py``), whichever design is in force.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import stat
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from attribution.execution.sandbox import linux
from attribution.execution.sandbox.linux import last_error

ENV_NO_USERNS = "ATTRIBUTION_SANDBOX_NO_USERNS"
ENV_NO_LANDLOCK = "ATTRIBUTION_SANDBOX_NO_LANDLOCK"

# Always in force: resource limits, a fresh process per program, a private working directory,
# an environment holding nothing but PATH/HOME/TMPDIR/LANG.
BASE_LAYERS = ("rlimits", "fresh_process", "private_tmpdir", "scrubbed_env")

# What ``strict`` requires: for each kind of isolation, the sets of layers that provide it.
REQUIRED = {
    "file-system": ({"readonly_fs"}, {"landlock_fs"}),
    "network": ({"netns"}, {"seccomp_net"}),
    "credential": ({"hidden_home", "private_proc"}, {"hidden_home", "unprivileged_uid"},
                   {"landlock_fs"}),
}  # fmt: skip

SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")
PRIVATE_TMP_ASIDE = "/sandbox-tmp"
# Root only: one lock file per uid leased to a worker (see lease_uid).
UID_LOCK_DIR = (
    "/run/attribution-sandbox-uids" if os.path.isdir("/run") else "/tmp/.attribution-sandbox-uids"
)
UID_RANGE = 4096


def missing_isolation(layers: tuple[str, ...] | list[str]) -> list[str]:
    """The kinds of isolation (file-system, network, credential) ``layers`` do not provide."""
    have = set(layers)
    return [kind for kind, options in REQUIRED.items() if not any(o <= have for o in options)]


def layers_in_force(rows: Iterable[str]) -> dict[str, list[str]]:
    """For metrics.json: the layers in force for every executed sample (``rows``: the comma
    lists of an executions file's ``layers`` column; empty ones never ran) and the kinds of
    isolation they lack."""
    sets = [set(str(r).split(",")) for r in rows if r and str(r)]
    layers = sorted(set.intersection(*sets)) if sets else []
    return {"layers": layers, "missing": missing_isolation(layers) if sets else []}


def credential_paths(env: Mapping[str, str], cwd: str, project: str) -> list[str]:
    """Where secrets and results live, from the engine's point of view: the user's real home
    (from the password database, not $HOME) and $HOME, the Hugging Face, XDG and wandb
    locations, ~/.cache, ~/.ssh, ~/.netrc, ~/.config, and models/, results/, data/ of the
    project folder and of the working directory."""
    homes = {env.get("HOME", "")}
    with contextlib.suppress(KeyError):
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    paths = set()
    for home in filter(None, homes):
        paths.add(home)
        for sub in (".cache", ".ssh", ".netrc", ".config", ".huggingface", ".aws",
                    ".git-credentials", ".pypirc", ".kaggle"):  # fmt: skip
            paths.add(os.path.join(home, sub))
    for var in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE",
                "HF_TOKEN_PATH", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                "XDG_RUNTIME_DIR", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR"):  # fmt: skip
        if env.get(var):
            paths.add(env[var])
    for base in {cwd, project}:
        for sub in ("models", "results", "data"):
            paths.add(os.path.join(base, sub))
    return sorted(p for p in paths if os.path.isabs(p))


def interpreter_paths() -> list[str]:
    """What the sandboxed interpreter must read: its prefixes and its import path."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(p for p in sys.path if p)
    found = {os.path.abspath(p) for p in paths if os.path.isdir(p)}
    return _outermost(found | {os.path.realpath(p) for p in found})


def _blocked_interpreter() -> str | None:
    """The first folder others may not traverse on the way to an interpreter path, if any."""
    for path in interpreter_paths():
        parts = path.strip(os.sep).split(os.sep)
        for i in range(1, len(parts) + 1):
            ancestor = os.sep + os.sep.join(parts[:i])
            if not os.stat(ancestor).st_mode & 0o001:
                return ancestor
    return None


def _outermost(paths: set[str]) -> list[str]:
    ordered = sorted(paths)
    return [p for p in ordered if not any(p != q and p.startswith(q + os.sep) for q in ordered)]


@dataclass
class Isolation:
    """The worker's isolation, as established; ``notes`` say why a missing layer is missing."""

    layers: list[str] = field(default_factory=lambda: list(BASE_LAYERS))
    notes: list[str] = field(default_factory=list)
    userns: bool = False
    mountns: bool = False
    netns: bool = False
    pidns: bool = False
    root_view: bool = False  # the new root is in place: children mount their own /tmp
    uid: int | None = None  # root only: the uid children run as
    ruleset_fd: int = -1  # Landlock ruleset each child enforces on itself
    seccomp: Any = None  # seccomp program each child installs
    workroot: str = ""  # without a root view: the folder holding the children's workdirs
    # An empty host folder the new root is built on: a fresh one, never a parent of anything
    # bound into the view (a tmpfs on /tmp would hide an interpreter or import path under /tmp).
    # The pool removes it once the worker is gone.
    stage: str = ""
    # With a root view: the children's working directory, a tmpfs the worker mounts. /tmp,
    # unless the interpreter or its import path lies below /tmp (a venv in a job's scratch
    # folder): a tmpfs there would hide it, so /tmp then shows only those read-only binds and
    # the children work in PRIVATE_TMP_ASIDE (their TMPDIR and HOME).
    tmp: str = "/tmp"

    def add(self, layer: str) -> None:
        if layer not in self.layers:
            self.layers.append(layer)


def enter_namespaces(want_pid: bool, allowed: bool) -> Isolation:
    """Unshare the namespaces the kernel permits (before the worker forks its PID 1)."""
    iso = Isolation()
    if not allowed:
        iso.notes.append(f"namespaces not tried ({ENV_NO_USERNS}=1)")
        return iso
    pid = linux.CLONE_NEWPID if want_pid else 0
    rest = linux.CLONE_NEWNS | linux.CLONE_NEWNET | linux.CLONE_NEWIPC | pid
    if os.geteuid() == 0:
        if linux.unshare(rest):
            iso.mountns = iso.netns = True
            iso.pidns = bool(pid)
        else:  # e.g. a container without CAP_SYS_ADMIN may still allow some of them
            iso.notes.append(f"unshare(namespaces) as root failed: {last_error()}")
            iso.mountns = linux.unshare(linux.CLONE_NEWNS)
            iso.netns = linux.unshare(linux.CLONE_NEWNET)
            iso.pidns = bool(pid) and linux.unshare(pid)
        linux.unshare(linux.CLONE_NEWIPC)
        return iso
    uid, gid = os.getuid(), os.getgid()
    if not linux.unshare(linux.CLONE_NEWUSER | rest):
        iso.notes.append(f"unshare(CLONE_NEWUSER) failed: {last_error()}{_userns_hint()}")
        return iso
    if not linux.write_id_maps(uid, gid):
        iso.notes.append(f"user namespace id maps: {last_error()}")
    iso.userns = iso.mountns = iso.netns = True
    iso.pidns = bool(pid)
    iso.add("userns")
    return iso


def _userns_hint() -> str:
    for path, bad in (("/proc/sys/kernel/unprivileged_userns_clone", "0"),
                      ("/proc/sys/user/max_user_namespaces", "0")):  # fmt: skip
        with contextlib.suppress(OSError), open(path) as fh:
            if fh.read().strip() == bad:
                return f" ({path.removeprefix('/proc/sys/').replace('/', '.')} = {bad})"
    return ""


def finish(iso: Isolation, index: int, uid_base: int, hide: list[str], landlock: bool) -> None:
    """In the process that serves (PID 1 of the new namespace, if any): build the root view,
    or the Landlock/seccomp fallback; pick the children's uid (root only)."""
    if iso.netns:
        iso.add("netns")
    if iso.pidns:
        iso.add("pidns")
    elif linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1):
        iso.add("subreaper")
    if iso.userns:
        # A same-uid child must not ptrace (or read the memory of) the worker, which holds
        # capabilities inside the namespace.
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
    if os.geteuid() == 0:
        # Leased before the root view hides the host's /run.
        uid = lease_uid(uid_base, iso.notes)
    # An ordinary user's program outside a PID namespace could still signal or ptrace the
    # user's other processes (the engine holds the tokens): the Landlock fallback scopes both,
    # a root view alone does not, so it is preferred there when the kernel has Landlock.
    scoped_instead = not iso.pidns and os.geteuid() != 0 and landlock and linux.landlock_abi() >= 1
    if iso.mountns and scoped_instead:
        iso.notes.append("no PID namespace: Landlock scopes the program instead of a root view")
    elif iso.mountns:
        note = _build_root(iso, hide)
        if note:
            iso.notes.append(f"read-only root view: {note}")
    if os.geteuid() == 0:
        # In the root view every bound path is reachable; without it, an interpreter under a
        # private folder (e.g. /root, mode 700) is not, and children keep uid 0 (no caps).
        blocked = None if iso.root_view else _blocked_interpreter()
        if blocked is None:
            iso.uid = uid
            iso.add("unprivileged_uid")
        else:
            iso.notes.append(f"children keep uid 0: the interpreter is under {blocked}")
    if not iso.root_view:
        iso.workroot = tempfile.mkdtemp(prefix=f"sandbox-w{index}-")
        os.chmod(iso.workroot, 0o711)
        _fallback(iso, iso.workroot, landlock)
    # Every child drops all capabilities, so the process limit holds, except for uid 0 of the
    # initial user namespace, which the kernel exempts from it.
    if os.geteuid() != 0 or iso.uid is not None or iso.userns:
        iso.add("nproc")


def lease_uid(uid_base: int, notes: list[str]) -> int:
    """A uid for this worker's children that no other sandbox worker on the machine uses (root
    only), held by an exclusive ``flock`` for the worker's lifetime (released when it dies).

    Unique per worker, not per pool index: the process limit counts every process of a uid
    machine-wide, and without a PID namespace the clean-up kills every process of the uid, so
    two pools sharing uids would cap, and kill, each other's programs."""
    folder = UID_LOCK_DIR
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise PermissionError(f"{folder} is not a root-owned folder only root can write")
        for uid in range(uid_base, uid_base + UID_RANGE):
            fd = os.open(f"{folder}/{uid}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return uid  # the descriptor stays open: the lease lasts as long as the worker
        raise OSError(f"all {UID_RANGE} sandbox uids from {uid_base} are in use")
    except OSError as exc:
        uid = uid_base + os.getpid() % UID_RANGE
        notes.append(f"sandbox uid not leased ({exc}); using {uid}")
        return uid


def _build_root(iso: Isolation, hide: list[str]) -> str:
    """Replace the root with a tmpfs holding read-only binds of what programs need; returns ""
    on success, else what failed (then the fallback applies)."""
    if not linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE, None):
        return f"make / private: {last_error()}"
    # Resolved now, in the old root: symlinks inside the binds point into it.
    hide = sorted({os.path.realpath(p) for p in hide} | set(hide))
    reads = interpreter_paths()
    iso.stage = new = tempfile.mkdtemp(prefix="sandbox-root-")
    if not linux.mount(
        "tmpfs", new, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755,size=8m"
    ):
        return f"tmpfs for the new root: {last_error()}"
    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            os.symlink(os.readlink(top), new + top)
        elif os.path.isdir(top) and not _bind_readonly(top, new + top):
            return f"bind {top}: {last_error()}"
    for path in reads:
        if any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRS):
            continue
        for target in {path, os.path.realpath(path)}:
            if not _bind_readonly(os.path.realpath(path), new + target):
                return f"bind {path}: {last_error()}"
    # Only what lies inside a bound path is visible at all; a location that holds part of the
    # interpreter itself cannot be hidden (the note says so).
    bound = [d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)] + reads
    for path in hide:
        if not any(path.startswith(b + "/") for b in bound) or not os.path.lexists(new + path):
            continue
        if any(b == path or b.startswith(path + "/") for b in reads):
            iso.notes.append(f"{path} holds interpreter files and stays visible")
        elif not _cover(new + path):
            return f"hide {path}: {last_error()}"
    if any(p == "/tmp" or p.startswith("/tmp/") for p in reads):
        iso.tmp = PRIVATE_TMP_ASIDE
        iso.notes.append(f"interpreter files below /tmp: programs work in {iso.tmp}")
    os.makedirs(new + "/tmp", exist_ok=True)  # may hold binds of interpreter paths already
    os.makedirs(new + iso.tmp, exist_ok=True)
    os.mkdir(new + "/proc")
    # A /proc of the new PID namespace shows only the sandbox's processes; without one, /proc
    # stays empty rather than showing the host's (whose environments may hold tokens).
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    proc = iso.pidns and linux.mount("proc", new + "/proc", "proc", flags, None)
    if not proc:
        iso.notes.append(
            f"no /proc of its own ({last_error() if iso.pidns else 'no PID namespace'})"
        )
    if not _build_dev(new + "/dev", iso.tmp):
        return f"/dev: {last_error()}"
    os.mkdir(new + "/.oldroot")
    if not linux.pivot_root(new, new + "/.oldroot"):
        return f"pivot_root: {last_error()}"
    os.chdir("/")
    if not linux.umount("/.oldroot"):
        return f"detach the old root: {last_error()}"
    os.rmdir("/.oldroot")
    if not linux.remount_readonly("/"):
        return f"read-only root: {last_error()}"
    iso.root_view = True
    iso.add("readonly_fs")
    iso.add("hidden_home")
    iso.add("private_tmp")
    if proc:
        iso.add("private_proc")
    return ""


def _bind_readonly(src: str, dst: str) -> bool:
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "a"):
            pass
    if not linux.mount(src, dst, None, linux.MS_BIND | linux.MS_REC, None):
        return False
    return all(linux.remount_readonly(p) for p in linux.mount_points_below(dst))


def _cover(path: str) -> bool:
    """Hide what is at ``path`` behind an empty read-only mount."""
    if os.path.isdir(path) and not os.path.islink(path):
        ok = linux.mount("tmpfs", path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=4k,mode=0")
        return ok and linux.remount_readonly(path)
    return linux.mount("/dev/null", path, None, linux.MS_BIND, None) and linux.remount_readonly(
        path
    )


def _build_dev(dev: str, tmp: str) -> bool:
    """A /dev holding only the harmless character devices; /dev/shm is the child's ``tmp``."""
    os.mkdir(dev)
    if not linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID, "mode=0755,size=64k"):
        return False
    for name in DEVICES:
        with open(f"{dev}/{name}", "a"):
            pass
        if not linux.mount(f"/dev/{name}", f"{dev}/{name}", None, linux.MS_BIND, None):
            return False
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("shm", tmp)):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")
    return linux.remount_readonly(dev)


def _fallback(iso: Isolation, workroot: str, landlock: bool) -> None:
    """Without a root view: Landlock and seccomp, enforced by each child on itself."""
    reads = [d for d in SYSTEM_DIRS if os.path.isdir(d)] + interpreter_paths()
    fd, abi = -1, 0
    if landlock:
        fd, abi = linux.landlock_ruleset(reads, [workroot], [f"/dev/{n}" for n in DEVICES])
    if fd >= 0:
        iso.ruleset_fd = fd
        iso.add("landlock_fs")
        if abi >= 4:
            iso.add("landlock_tcp")
        if abi >= 6:
            iso.add("landlock_signals")
    elif not landlock:
        iso.notes.append(f"Landlock not tried ({ENV_NO_LANDLOCK}=1)")
    else:
        iso.notes.append(f"no Landlock (ABI {abi}: needs Linux >= 5.13 with Landlock enabled)")
    # Without Landlock's signal scope (Linux < 6.12), seccomp refuses sending signals at all.
    signals = "landlock_signals" not in iso.layers
    iso.seccomp = linux.socket_filter(signals=signals)
    if iso.seccomp is not None:
        iso.add("seccomp_net")
        if signals:
            iso.add("seccomp_signals")
    else:
        iso.notes.append("seccomp socket filter: unknown architecture")

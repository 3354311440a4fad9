"""Linux primitives the worker uses to isolate itself (ctypes: Python 3.11 has no os.unshare)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import tempfile
from typing import Any

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> bool:
    enc = [x.encode() if x is not None else None for x in (src, target, fstype, data)]
    return _libc().mount(enc[0], enc[1], enc[2], flags, enc[3]) == 0


def umount(target: str) -> bool:
    return _libc().umount2(target.encode(), _MNT_DETACH) == 0


def _interpreter_paths() -> list[str]:
    """Directories the sandboxed interpreter must read: prefixes and the import path."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(p for p in sys.path if p)
    found = sorted(os.path.realpath(p) for p in paths if os.path.isdir(p))
    # Keep only the outermost ones.
    return [p for p in found if not any(p != q and p.startswith(q + os.sep) for q in found)]


def _blocker(path: str) -> str | None:
    """The outermost ancestor of ``path`` that others may not traverse (e.g. /root, mode 700)."""
    parts = path.strip(os.sep).split(os.sep)
    for i in range(1, len(parts)):
        ancestor = os.sep + os.sep.join(parts[:i])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def private_mount_namespace() -> bool:
    """Enter a private mount namespace; propagation off, so no mount made here reaches the host."""
    return unshare(CLONE_NEWNS) and mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)


def expose_interpreter(mount_ns: bool) -> str:
    """Let an unprivileged uid run this interpreter when it lives under a private directory.

    In a private mount namespace (propagation off, so nothing leaks to the host), each blocking
    ancestor (e.g. /root) is covered with an empty tmpfs, which also hides everything else in it
    (tokens in ~/.cache, keys in ~/.ssh), and the interpreter's directories are bound back,
    read-only. Returns "" when nothing blocks, "hidden_home" on success, "blocked" when the
    interpreter stays unreadable (then children keep the worker's uid).
    """
    paths = _interpreter_paths()
    blocked = {p: b for p in paths if (b := _blocker(p)) is not None}
    if not blocked:
        return ""
    if not mount_ns:
        return "blocked"
    staging = tempfile.mkdtemp(prefix="sandbox-stage-")
    stages = {}
    try:
        for i, path in enumerate(blocked):
            stage = os.path.join(staging, str(i))
            os.mkdir(stage)
            if not mount(path, stage, None, _MS_BIND | _MS_REC, None):
                return "blocked"
            stages[path] = stage
        for blocker in sorted(set(blocked.values())):
            if not mount("tmpfs", blocker, "tmpfs", 0, "mode=0755,size=1m"):
                return "blocked"
        for path, stage in stages.items():
            os.makedirs(path, exist_ok=True)
            if not mount(stage, path, None, _MS_BIND | _MS_REC, None):
                return "blocked"
            mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)
    finally:
        for stage in stages.values():
            umount(stage)
        for stage in stages.values():
            # rmdir, never rmtree: a stage that failed to unmount must not be descended into.
            with contextlib.suppress(OSError):
                os.rmdir(stage)
        with contextlib.suppress(OSError):
            os.rmdir(staging)
    return "hidden_home"


def unshare(flags: int) -> bool:
    return _libc().unshare(flags) == 0


def prctl(option: int, arg: int) -> bool:
    return _libc().prctl(option, arg, 0, 0, 0) == 0


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> bool:
    """Clear this process's effective, permitted and inheritable (hence ambient) capabilities."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    return _libc().capset(ctypes.byref(header), data) == 0

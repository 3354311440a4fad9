"""Linux primitives of the sandbox, as thin ctypes wrappers (Python 3.11 has no os.unshare):
namespaces, mounts, pivot_root, prctl, capabilities, Landlock and seccomp.

Each wrapper returns False (or None) on failure and leaves ``last_error()`` set; callers decide
what a failure means (a missing layer, recorded and reported, never a silent one).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import struct
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
_MNT_DETACH = 2

# Architecture-specific numbers (x86_64, aarch64): syscalls without a libc wrapper, and the
# audit architecture a seccomp filter must check.
_ARCH = platform.machine()
_SYS = {
    "x86_64": {"pivot_root": 155, "socket": 41},
    "aarch64": {"pivot_root": 41, "socket": 198},
}.get(_ARCH, {})
# kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo, pidfd_send_signal
_SYS_SIGNALS = {
    "x86_64": (62, 200, 234, 129, 297, 424),
    "aarch64": (129, 130, 131, 138, 240, 424),
}.get(_ARCH, ())
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(_ARCH)
_SYS_IO_URING_SETUP = 425  # same on both
_SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (both)


@functools.cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    # Resolved here, in the worker: a forked child that resolved them itself would pay for
    # the symbol lookup (and the copied-on-write pages) once per program.
    for name in ("capset", "prctl", "syscall", "mount", "umount2", "unshare"):
        getattr(libc, name)
    return libc


def last_error() -> str:
    """The errno of the last failed wrapper call, as its symbolic name (e.g. "EPERM")."""
    code = ctypes.get_errno()
    return errno.errorcode.get(code, str(code))


def unshare(flags: int) -> bool:
    return _libc().unshare(flags) == 0


def prctl(option: int, arg: int) -> bool:
    return _libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> bool:
    enc = [x.encode() if x is not None else None for x in (src, target, fstype, data)]
    return _libc().mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]) == 0


def umount(target: str) -> bool:
    return _libc().umount2(target.encode(), _MNT_DETACH) == 0


def pivot_root(new_root: str, put_old: str) -> bool:
    if "pivot_root" not in _SYS:
        ctypes.set_errno(errno.ENOSYS)
        return False
    return _libc().syscall(_SYS["pivot_root"], new_root.encode(), put_old.encode()) == 0


def write_id_maps(uid: int, gid: int) -> bool:
    """Map ``uid``/``gid`` to themselves in a new user namespace (the only mapping an
    unprivileged process may write); setgroups is denied first, as the kernel requires."""
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
    except OSError as exc:
        ctypes.set_errno(exc.errno or errno.EPERM)
        return False
    return True


_ST_TO_MS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)


def remount_readonly(target: str) -> bool:
    """Make the mount at ``target`` read-only, keeping its other flags (a user namespace may
    add restrictions to a mount it inherited but never drop one, so they must be repeated)."""
    try:
        flags = os.statvfs(target).f_flag
    except OSError as exc:
        ctypes.set_errno(exc.errno or errno.EINVAL)
        return False
    keep = sum(ms for st, ms in _ST_TO_MS if flags & st)
    return mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, None)


def mount_points_below(prefix: str) -> list[str]:
    """Mount points at or below ``prefix`` (from /proc/self/mountinfo), outermost first."""
    found = []
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            point = line.split(b" ")[4].decode("utf-8", "surrogateescape")
            for code in ("\\040", "\\011", "\\012", "\\134"):  # mountinfo's octal escapes
                point = point.replace(code, chr(int(code[1:], 8)))
            if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=len)


# -- capabilities -----------------------------------------------------------------------------

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


# Built once, before any fork (a ctypes array type is costly to create in every child).
_CAP_HEADER = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
_CAP_NONE = (_CapData * 2)()


def drop_capabilities() -> bool:
    """Clear this process's effective, permitted and inheritable (hence ambient) capabilities."""
    return _libc().capset(ctypes.byref(_CAP_HEADER), _CAP_NONE) == 0


# -- Landlock (Linux >= 5.13): unprivileged file-system, TCP and signal restrictions ------------

LL_FS_EXECUTE, LL_FS_WRITE_FILE, LL_FS_READ_FILE, LL_FS_READ_DIR = 1, 2, 4, 8
_LL_FS_BITS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}  # number of handled fs rights
_LL_NET_ALL = 0b11  # bind_tcp, connect_tcp (ABI >= 4)
_LL_SCOPE_ALL = 0b11  # abstract unix sockets, signals (ABI >= 6)
_LL_FILE_RIGHTS = LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | (1 << 14) | (1 << 15)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when unavailable (old kernel, disabled LSM)."""
    version = _libc().syscall(_SYS_LANDLOCK[0], None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def landlock_ruleset(read: list[str], write: list[str], devices: list[str]) -> tuple[int, int]:
    """A ruleset that allows reading (and executing) below ``read``, everything below
    ``write``, reading and writing the files ``devices``, and nothing else: no other file, no
    TCP bind or connect (ABI >= 4), no signal to or abstract socket of a process outside the
    domain (ABI >= 6). Returns (ruleset fd, ABI), or (-1, ABI) when it could not be built."""
    abi = landlock_abi()
    if abi < 1:
        return -1, abi
    fs_all = (1 << _LL_FS_BITS_BY_ABI.get(abi, 16)) - 1
    net = _LL_NET_ALL if abi >= 4 else 0
    scoped = _LL_SCOPE_ALL if abi >= 6 else 0
    attr = struct.pack("<QQQ", fs_all, net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = _libc().syscall(_SYS_LANDLOCK[0], buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        return -1, abi
    read_rights = LL_FS_EXECUTE | LL_FS_READ_FILE | LL_FS_READ_DIR
    rules = [(p, read_rights) for p in read] + [(p, fs_all) for p in write]
    rules += [(p, (LL_FS_READ_FILE | LL_FS_WRITE_FILE) & fs_all) for p in devices]
    for path, rights in rules:
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a path that does not exist needs no rule
        if not os.path.isdir(path):
            rights &= _LL_FILE_RIGHTS
        rule = ctypes.create_string_buffer(struct.pack("<Qi", rights & fs_all, pfd), 12)
        ok = _libc().syscall(_SYS_LANDLOCK[1], fd, 1, rule, ctypes.c_uint32(0)) == 0
        os.close(pfd)
        if not ok:
            os.close(fd)
            return -1, abi
    return fd, abi


def landlock_restrict(ruleset_fd: int) -> bool:
    """Enforce the ruleset on this process and its future children (needs no_new_privs)."""
    return _libc().syscall(_SYS_LANDLOCK[2], ruleset_fd, ctypes.c_uint32(0)) == 0


# -- seccomp: refuse creating sockets ---------------------------------------------------------

_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def socket_filter(signals: bool = False) -> ctypes.Array[Any] | None:
    """A seccomp program that fails socket() (every family: network, and unix sockets that
    could reach the user's agents) and io_uring_setup() (which can open sockets) with EACCES,
    with ``signals`` also every system call that sends a signal (for kernels whose Landlock
    cannot confine signals), kills the process on a foreign architecture or x32 call, and
    allows everything else. ``socketpair()`` stays allowed. None on an unknown architecture."""
    if _AUDIT_ARCH is None or "socket" not in _SYS:
        return None
    deny = _RET_ERRNO | errno.EACCES
    refused = [_SYS["socket"], _SYS_IO_URING_SETUP, *(_SYS_SIGNALS if signals else ())]
    prog = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ_K, 1, 0, _AUDIT_ARCH),
        (_BPF_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (_BPF_JGE_K, 0, 1, 0x40000000),  # x32 ABI (x86_64): refuse
        (_BPF_RET_K, 0, 0, deny),
    ]
    for nr in refused:
        prog += [(_BPF_JEQ_K, 0, 1, nr), (_BPF_RET_K, 0, 0, deny)]
    prog.append((_BPF_RET_K, 0, 0, _RET_ALLOW))
    data = b"".join(struct.pack("<HBBI", *ins) for ins in prog)
    return ctypes.create_string_buffer(data, len(data))


def install_seccomp(program: ctypes.Array[Any]) -> bool:
    """Install a filter from ``socket_filter()`` on this process (needs no_new_privs)."""
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(program))
    return _libc().prctl(PR_SET_SECCOMP, 2, ctypes.byref(fprog), 0, 0) == 0

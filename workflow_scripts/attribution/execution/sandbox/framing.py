"""Length-prefixed messages: engine <-> worker (trusted pickle) and child -> worker (plain
values only, decoded with ``values.decode_plain``)."""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import struct
import time
from typing import Any

from attribution.execution.sandbox.values import decode_plain

HEADER = struct.Struct("<Q")


def write_msg(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    write_all(fd, HEADER.pack(len(data)) + data)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_msg(fd: int) -> Any:
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    body = read_exact(fd, HEADER.unpack(head)[0])
    if body is None:
        return None
    return pickle.loads(body)  # trusted: engine <-> worker only


class ResultArea:
    """The child -> worker channel: a shared anonymous mapping the worker creates once.

    Each child appends length-prefixed messages (no system call, no wake-up of the worker) and
    marks the input it is running. The mapping outlives the child, so every outcome reported
    before a kill (CPU limit, wall limit, crash) reaches the worker. Everything in it is
    written by untrusted code: the worker only ever reads ``parse_frames`` of a copy.
    """

    # committed bytes of messages, current input (-2: not started, -1: setup), its start
    # (time.monotonic), flags (1: a message did not fit)
    _HEAD = struct.Struct("<QqdQ")
    _MARK = struct.Struct("<qd")  # at offset 8
    _COMMIT_MARK = struct.Struct("<Qqd")  # at offset 0
    OVERFLOW = 1

    def __init__(self, size: int) -> None:
        self.size = size
        # Backed by a memfd, not anonymous: a shared file mapping is not charged against the
        # commit limit up front (clusters running vm.overcommit_memory=2), only pages written.
        fd = os.memfd_create("sandbox-results", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, self._HEAD.size + size)
            self.mm = mmap.mmap(fd, self._HEAD.size + size, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self.committed = 0  # child side: bytes this child has appended

    # -- worker side --------------------------------------------------------------------------

    def reset(self) -> None:
        used = self._HEAD.unpack_from(self.mm, 0)[0]
        if used > 4 << 20:  # give big results' pages back (shmem: MADV_REMOVE, not DONTNEED)
            end = min(self._HEAD.size + used, len(self.mm))
            with contextlib.suppress(OSError, ValueError):
                self.mm.madvise(mmap.MADV_REMOVE, 0, end - end % mmap.PAGESIZE)
        self._HEAD.pack_into(self.mm, 0, 0, -2, 0.0, 0)
        self.committed = 0

    def position(self) -> tuple[int, float]:
        """(current input, when it started), as the child last wrote them."""
        _, current, started, _ = self._HEAD.unpack_from(self.mm, 0)
        return current, started

    def snapshot(self) -> tuple[list[tuple[Any, ...]], int, bool]:
        """(messages, current input, overflowed): read once the child and its tree are dead."""
        used, current, _, flags = self._HEAD.unpack_from(self.mm, 0)
        data = self.mm[self._HEAD.size : self._HEAD.size + min(used, self.size)]
        return parse_frames(data), current, bool(flags & self.OVERFLOW)

    def close(self) -> None:
        self.mm.close()

    # -- child side ---------------------------------------------------------------------------

    def mark(self, index: int) -> None:
        """Record that input ``index`` starts now."""
        self._MARK.pack_into(self.mm, 8, index, time.monotonic())

    def append(self, data: bytes, next_index: int | None = None) -> bool:
        """Append one message (and, with ``next_index``, mark that input as starting now, in
        the same write); False, and the overflow flag set, when it does not fit."""
        pos = self.committed
        end = pos + HEADER.size + len(data)
        if end > self.size:
            struct.pack_into("<Q", self.mm, 24, self.OVERFLOW)
            return False
        self.mm[self._HEAD.size + pos : self._HEAD.size + end] = HEADER.pack(len(data)) + data
        # After the message: only whole messages are ever committed. A reader may see a new
        # index with an old start (a torn read); the worker reads twice before acting on it.
        if next_index is None:
            struct.pack_into("<Q", self.mm, 0, end)
        else:
            self._COMMIT_MARK.pack_into(self.mm, 0, end, next_index, time.monotonic())
        self.committed = end
        return True


def parse_frames(data: bytes) -> list[tuple[Any, ...]]:
    """Split the child's messages; stop at the first malformed one (the child is untrusted).

    Each message is decoded by a fresh ``decode_plain`` (no globals): pickles are separate
    streams, and an unpickler shared between them would resolve one's memo references against
    another's."""
    msgs: list[tuple[Any, ...]] = []
    pos = 0
    while pos + HEADER.size <= len(data):
        (size,) = HEADER.unpack_from(data, pos)
        pos += HEADER.size
        if pos + size > len(data):
            break
        try:
            msg = decode_plain(data[pos : pos + size])
        except Exception:
            break
        pos += size
        if not _valid_message(msg):
            break
        msgs.append(msg)
    return msgs


def _valid_message(msg: Any) -> bool:
    """Shapes: ("ok", index, value, cpu_s) (the common case, kept small),
    ("in", index, status, value, cpu_s, error, line, message, limit), ("setup", ok, error,
    line, message), ("end",), ("isolation", what failed)."""
    if type(msg) is not tuple or not msg:
        return False
    kind = msg[0]
    if kind == "ok":
        return len(msg) == 4 and type(msg[1]) is int and type(msg[3]) is float
    if kind == "in":
        return (
            len(msg) == 9
            and type(msg[1]) is int
            and type(msg[2]) is str
            and type(msg[4]) is float
            and type(msg[5]) is str
            and (msg[6] is None or type(msg[6]) is int)
            and type(msg[7]) is str
            and type(msg[8]) is str
        )
    if kind == "setup":
        return (
            len(msg) == 5
            and type(msg[1]) is bool
            and type(msg[2]) is str
            and (msg[3] is None or type(msg[3]) is int)
            and type(msg[4]) is str
        )
    if kind == "isolation":
        return len(msg) == 2 and type(msg[1]) is str
    return kind == "end" and len(msg) == 1

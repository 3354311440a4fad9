"""Length-prefixed messages: engine <-> worker (trusted pickle) and child -> worker (plain
values only, decoded with ``values.decode_plain``)."""

from __future__ import annotations

import os
import pickle
import struct
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


def parse_frames(data: bytes) -> list[tuple[Any, ...]]:
    """Split the child's messages; stop at the first malformed one (the child is untrusted)."""
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
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "batch":
            items = msg[1] if isinstance(msg[1], list) else [None]
        else:
            items = [msg]
        for item in items:
            if not _valid_message(item):
                return msgs
            msgs.append(item)
    return msgs


def _valid_message(msg: Any) -> bool:
    if not isinstance(msg, tuple) or not msg or not isinstance(msg[0], str):
        return False
    if msg[0] == "in":
        return len(msg) == 6 and isinstance(msg[4], float) and isinstance(msg[5], str)
    if msg[0] == "setup":
        return len(msg) == 3 and isinstance(msg[1], bool)
    return True

"""Helpers of the sandbox tests: find sandboxed processes a pool left running."""

from __future__ import annotations

import os

from attribution.execution.sandbox import SandboxPool


def _status(pid: str) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def leftover_processes(pool: SandboxPool) -> list[int]:
    """PIDs of live processes (not zombies) started by ``pool``'s sandboxed programs.

    A sandboxed process is found three ways, so that one that escaped one of them still shows:
    it descends from a worker (a worker is PID 1 of its namespace or a subreaper, so orphans
    stay below it), it lives in a worker's PID namespace, or its working directory lies below a
    worker's root. Uids are not used: rootless sandboxes keep the user's uid, and other pools
    on the machine (other test runs) must not count.
    """
    table: dict[int, dict[str, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                table[int(entry)] = _status(entry)
            except OSError:
                continue
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(int(st.get("PPid", "0")), []).append(pid)
    found: set[int] = set()
    for slot in pool.slots:
        outer = slot.proc.pid
        # With a PID namespace the worker forks the process that serves (PID 1 inside).
        inner = [
            p for p in children.get(outer, []) if table[p].get("NSpid", "").split()[-1:] == ["1"]
        ]
        serving = inner[0] if inner else outer
        stack = list(children.get(serving, []))
        while stack:
            pid = stack.pop()
            found.add(pid)
            stack += children.get(pid, [])
        ns = _link(f"/proc/{serving}/ns/pid") if inner else ""
        if ns:  # unreadable (another user's, or a non-dumpable worker's): not a criterion
            found |= {p for p in table if p != serving and _link(f"/proc/{p}/ns/pid") == ns}
        if slot.root:
            found |= {p for p in table if _link(f"/proc/{p}/cwd").startswith(slot.root + "/")}
    live = {p for p in found if p in table and table[p].get("State", "Z")[:1] not in ("Z", "X")}
    return sorted(live)

"""The one place where untrusted (model-written) code runs.

Design (a forkserver-like pool; see ``SandboxPool``):

* The engine starts ``workers`` long-lived *worker* processes (``python -P -m
  attribution.execution.sandbox``) with a whitelisted environment, so no secret (HF_TOKEN,
  WANDB_API_KEY, any ``*_TOKEN``/``*_KEY``) is ever in their memory. Each worker pre-imports what
  programs commonly need (numpy, collections, ...), isolates itself once (``isolation``: as an
  ordinary user inside a user namespace, network, PID, IPC and mount namespaces with a read-only
  view of the system and the interpreter only; where namespaces are forbidden, a Landlock
  ruleset and a seccomp filter for its children), and then serves jobs over a pipe.
* For every program the worker forks a fresh child (``child``). Before any untrusted code runs,
  the child starts a new session, closes every inherited descriptor, mounts a private tmpfs as
  its working directory (or enforces the Landlock ruleset), sets resource limits (CPU, address
  space, processes, file size, open files, no core dumps), drops to a per-worker uid when run as
  root, drops every capability, sets ``PR_SET_NO_NEW_PRIVS`` and clears the environment.
  Killing the program kills everything it started (the worker is PID 1 of the PID namespace,
  or a subreaper that sweeps its descendants).
* The verdict is never decided inside the untrusted process. The child only reports *values*
  (return values of the called function, the value of an expression, or the bytes a program
  wrote to stdout) into a shared area the worker reads after the child is gone; values are
  reduced to exact builtin types (a subclass with a forged ``__eq__`` loses it), pickled, and
  rebuilt by the worker with an unpickler that admits no globals but ``complex``. The engine
  compares them with expected values the sandboxed process never sees (workers that computed
  reference outputs are never reused for candidates). Exit codes, ``sys.exit(0)``, printing
  "passed", patched builtins or a closed stdout therefore cannot produce a pass: a forged
  message can only claim values, and claiming the right values is solving the task. Whatever
  ends a child, every outcome it reported before is kept.

``SandboxResult.layers`` records which isolation layers were active; ``SandboxLimits.isolation``
decides what a missing kind of isolation means ("strict": refuse, "best_effort": warn).

Modules: ``records`` (public dataclasses), ``values`` (reduction to plain values and the safe
decoder), ``framing`` (messages over pipes, the shared result area), ``linux`` (namespaces,
mounts, capabilities, Landlock, seccomp via ctypes), ``isolation`` (what a worker sets up once),
``child`` (everything that runs in the forked child: its own isolation steps and the harness
around the program; the security-critical part, reviewable on its own), ``worker`` (forks and
watches the children), ``pool`` (the engine side).
"""

from attribution.execution.sandbox.isolation import (
    ENV_NO_LANDLOCK,
    ENV_NO_USERNS,
    layers_in_force,
    missing_isolation,
)
from attribution.execution.sandbox.pool import (
    PRELOAD,
    SandboxIsolationWarning,
    SandboxPool,
    SandboxUnavailable,
    worker_environment,
)
from attribution.execution.sandbox.records import (
    ISOLATION_MODES,
    Outcome,
    Program,
    SandboxLimits,
    SandboxResult,
)
from attribution.execution.sandbox.values import Unencodable, decode_plain, to_plain

__all__ = [
    "ENV_NO_LANDLOCK",
    "ENV_NO_USERNS",
    "ISOLATION_MODES",
    "PRELOAD",
    "Outcome",
    "Program",
    "SandboxIsolationWarning",
    "SandboxLimits",
    "SandboxPool",
    "SandboxResult",
    "SandboxUnavailable",
    "Unencodable",
    "decode_plain",
    "layers_in_force",
    "missing_isolation",
    "to_plain",
    "worker_environment",
]

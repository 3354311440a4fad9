"""Values across the boundary: reduction to exact builtin types and a safe decoder."""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any

_MAX_DEPTH = 200
_ATOMS = frozenset({type(None), bool, int, float, str, bytes, complex})


class Unencodable(Exception):
    """A value that cannot be reduced to exact builtin types."""


def to_plain(value: Any, depth: int = 0) -> Any:
    """Reduce ``value`` to exact builtin types, ignoring any overridden dunder methods.

    Subclasses of builtins are read through the base type's own slots (``int.__int__(x)``,
    ``list.__iter__(x)``), so a return value whose class overrides ``__eq__`` compares as the
    plain value it holds. numpy scalars become Python scalars; anything else is unencodable.
    """
    if depth > _MAX_DEPTH:
        raise Unencodable("nested too deeply")
    t = type(value)
    if value is None or t in _ATOMS:
        return value
    # Fast paths for flat containers of exact atoms (large outputs): nothing to reduce.
    if t is list or t is tuple or t is set or t is frozenset:
        if set(map(type, value)) <= _ATOMS:
            return value
    elif t is dict and set(map(type, value)) <= _ATOMS and set(map(type, value.values())) <= _ATOMS:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes.__bytes__(value)
    if isinstance(value, complex):
        return complex.__complex__(value)
    d = depth + 1
    if isinstance(value, list):
        return [to_plain(v, d) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return tuple(to_plain(v, d) for v in tuple.__iter__(value))
    if isinstance(value, dict):
        return {to_plain(k, d): to_plain(v, d) for k, v in dict.items(value)}
    if isinstance(value, frozenset):
        return frozenset(to_plain(v, d) for v in frozenset.__iter__(value))
    if isinstance(value, set):
        return {to_plain(v, d) for v in set.__iter__(value)}
    np = sys.modules.get("numpy")
    if np is not None and t.__module__ == "numpy" and isinstance(value, np.generic):
        # Exact numpy scalar types are C types nobody can patch; .item() gives the Python value.
        return to_plain(value.item(), d)
    raise Unencodable(f"{t.__module__}.{t.__qualname__}")


class _PlainUnpickler(pickle.Unpickler):
    """Rebuilds pickled plain values; refuses every global except ``complex``."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name == "complex":
            return complex
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def decode_plain(data: bytes) -> Any:
    """Unpickle a message written by the sandboxed child (no code execution possible)."""
    return _PlainUnpickler(io.BytesIO(data)).load()

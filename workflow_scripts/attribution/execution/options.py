"""Checker options from the configuration or the command line, checked per benchmark.

Config keys (and CLI flags): ``execution.min_time_limit_s`` (``--min-time-limit``) and
``execution.time_limit_factor`` (``--time-limit-factor``) set HumanEval+'s evalplus-style
per-input limit ``max(min, factor x reference CPU time)``; ``benchmarks.{cruxeval_o,
cruxeval_i,apps}.time_limit_s`` (``--time-limit``) the CPU limit per prediction / test;
``benchmarks.apps.comparison`` (``--comparison``) and ``float_tolerance``
(``--float-tolerance``) the APPS comparison. A setting given for a benchmark it does not apply
to is an error, never silently ignored. Standard library only: ``attribution.config`` uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OptionValue = str | float | bool | None


class OptionError(ValueError):
    """An option that does not apply to the benchmark, or an inconsistent combination."""


def config_options(
    benchmark: str, benchmark_settings: Mapping[str, Any], execution: Mapping[str, Any]
) -> dict[str, OptionValue]:
    """The settings of ``benchmark``'s checker from its config entry and the ``execution``
    section (only those that apply: a job's params carry nothing else)."""
    if benchmark == "humanevalplus":
        picked = {k: execution.get(k) for k in ("min_time_limit_s", "time_limit_factor")}
    elif benchmark == "apps":
        picked = {
            k: benchmark_settings.get(k) for k in ("time_limit_s", "comparison", "float_tolerance")
        }
    else:
        picked = {"time_limit_s": benchmark_settings.get("time_limit_s")}
    return {k: v for k, v in picked.items() if v is not None}


def checker_options(
    benchmark: str,
    *,
    min_time_limit_s: float | None = None,
    time_limit_factor: float | None = None,
    time_limit_s: float | None = None,
    comparison: str | None = None,
    float_tolerance: float | None = None,
) -> dict[str, OptionValue]:
    """Keyword arguments of ``benchmark``'s checker; ``None`` means the checker's default."""

    def reject(name: str, why: str) -> OptionError:
        return OptionError(f"{name} does not apply to {benchmark} ({why})")

    out: dict[str, OptionValue] = {}
    if benchmark == "humanevalplus":
        if time_limit_s is not None:
            raise reject(
                "time_limit_s",
                "its per-input limits are min_time_limit_s and time_limit_factor",
            )
        if min_time_limit_s is not None:
            out["min_time_limit"] = float(min_time_limit_s)
        if time_limit_factor is not None:
            out["time_limit_factor"] = float(time_limit_factor)
    else:
        for name, value in (
            ("min_time_limit_s", min_time_limit_s),
            ("time_limit_factor", time_limit_factor),
        ):
            if value is not None:
                raise reject(name, "HumanEval+ only; set time_limit_s instead")
        if time_limit_s is not None:
            out["time_limit"] = float(time_limit_s)
    if benchmark == "apps":
        if comparison is not None:
            out["comparison"] = comparison
        if float_tolerance is not None:
            if comparison != "strict":
                raise OptionError(
                    "float_tolerance applies to comparison: strict only (the official "
                    "comparison has its own float rule)"
                )
            out["float_tolerance"] = float(float_tolerance)
    else:
        if comparison not in (None, "official"):
            raise reject("comparison", "APPS only")
        if float_tolerance is not None:
            raise reject("float_tolerance", "APPS only")
    return out

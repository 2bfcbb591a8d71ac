"""Strict parsing helpers for scenario files, shared by the gateway and mesh suites.

A scenario that misspells a key must fail loudly instead of silently testing less, so unknown
keys and wrong shapes are errors whose message names the file, step and key (`where`).
"""

from __future__ import annotations

from typing import Any


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names file, step and key."""


def keys(where: str, value: Any, allowed: set[str], required: set[str] = frozenset()) -> dict:
    """`value` itself, once it is a mapping with only `allowed` keys and every `required` one."""
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {value!r}")
    unknown = set(value) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    missing = required - set(value)
    if missing:
        raise ScenarioError(f"{where}: missing keys {sorted(missing)}")
    return value


def str_map(where: str, value: Any) -> dict[str, str]:
    """A mapping with keys and values as strings; absent (None) is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: expected a mapping of strings, got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def str_list(where: str, value: Any) -> tuple[str, ...]:
    """A list of strings, as a tuple (steps are frozen); absent (None) is empty."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(str(v) for v in value)

"""Durations as scenario files write them: `1s`, `500ms`, `0.5s`, or a bare number of seconds."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def seconds(value: object) -> float:
    """Parses a duration into seconds; raises ValueError naming the bad value."""
    if isinstance(value, bool):
        raise ValueError(f"duration {value!r} is not a number or '<n>ms' / '<n>s'")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _SCALE[m.group(2)]
    raise ValueError(f"duration {value!r} is not a number or '<n>ms' / '<n>s'")

"""`{{backend.NAME.address}}`, `{{backend.NAME.port}}`, `{{gateway.port}}` in scenario YAML."""

from __future__ import annotations

import re
from typing import Mapping

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


class TemplateError(ValueError):
    pass


def render(text: str, values: Mapping[str, str], source: str) -> str:
    """Substitutes every placeholder; an unknown one is an error naming `source` and line."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            line = text.count("\n", 0, m.start()) + 1
            known = ", ".join(sorted(values))
            raise TemplateError(f"{source}:{line}: unknown placeholder {{{{{key}}}}} (known: {known})")
        return values[key]

    return _PLACEHOLDER.sub(sub, text)


def placeholders(text: str) -> set[str]:
    return {m.group(1) for m in _PLACEHOLDER.finditer(text)}

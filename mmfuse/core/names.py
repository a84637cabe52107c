"""Close-match suggestions for unknown names (registry entries, config keys, model names).

One helper for every "unknown X 'y' (did you mean 'z'?)" message of mmfuse, so suggestions
behave the same everywhere: case-insensitive, a case-insensitive exact match first.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, known: Iterable[str], n: int = 1, cutoff: float = 0.5) -> list[str]:
    """Up to ``n`` entries of ``known`` that look like ``name``, compared case-insensitively
    (``MVSA_Single`` suggests ``mvsa-single``); a case-insensitive exact match comes first."""
    by_lower: dict[str, str] = {}
    for entry in known:
        by_lower.setdefault(str(entry).lower(), str(entry))
    wanted = str(name).lower()
    if wanted in by_lower:
        return [by_lower[wanted]]
    return [by_lower[m] for m in difflib.get_close_matches(wanted, list(by_lower), n=n, cutoff=cutoff)]


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.5) -> str:
    """`` (did you mean 'x'?)`` for the closest entry of ``known``, or an empty string."""
    close = close_matches(name, known, n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""

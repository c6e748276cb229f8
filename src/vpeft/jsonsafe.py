"""Strict JSON for everything vpeft writes: non-finite floats (NaN, ±Infinity, which Python's
`json` would write as the invalid bare tokens ``NaN`` / ``Infinity``) become ``null``.

``null`` was chosen over strings such as ``"nan"`` so that a numeric field keeps one JSON type
(number or null) and every JSON parser reads the file; a diverged run is reported by its error,
not by the values.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(obj: Any) -> Any:
    """`obj` with every non-finite float (at any depth of dicts, lists, tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` of `finite_or_none(obj)`, refusing any remaining non-finite value."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)

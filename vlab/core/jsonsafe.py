"""The one JSON cleaner: NaN/inf → None, numpy scalars → Python, tuples → lists, keys → strings."""

from __future__ import annotations

import math
from typing import Any


def json_safe(obj: Any) -> Any:
    """A copy of `obj` that `json.dumps` writes as strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def finite_or_none(x: float) -> float | None:
    """A float for JSON: NaN/inf → None."""
    return x if math.isfinite(x) else None

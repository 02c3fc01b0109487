"""The one JSON cleaner (NaN/inf → None, numpy scalars → Python, tuples → lists, keys → strings), and the one lenient
reader of a run folder's JSON notes."""

from __future__ import annotations

import json
import math
from pathlib import Path
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


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; {} when the file is missing, unreadable, not JSON or not an object (a sampler's
    note is optional: its absence is reported by the reader, not raised)."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}

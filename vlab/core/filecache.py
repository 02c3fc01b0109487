"""Parse a file once per process and version: loaders of user files (datasets, traces) share this cache, so checking a
scenario's file at start-up and building the workload from it later parse it once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

_CACHE: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = {}
"""(loader, path, option) → (file version, result): one entry per file, replaced when the file changes."""


def cached_by_file(loader: Callable[[Path, Any], Any], path: Path, option: Any) -> Any:
    """`loader(path, option)`, computed once per file version (modification time and size); a file that cannot be
    stat'ed is handed to the loader, which reports it."""
    try:
        stat = path.stat()
        key, version = (loader.__name__, str(path.resolve()), str(path), option), (stat.st_mtime_ns, stat.st_size)
    except (OSError, RuntimeError):  # reported properly by the loader itself
        return loader(path, option)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    _CACHE.pop(key, None)  # let an old version go before parsing the new one
    result = loader(path, option)
    _CACHE[key] = (version, result)
    return result

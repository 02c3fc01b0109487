"""Reading a YAML file a user wrote (a scenario, a gateway config, a lab plan): every way it can fail is one
`ConfigError` line naming the file and, for syntax errors, the line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vlab.core.errors import ConfigError


def read_yaml(path: Path, what: str, shown: str | None = None) -> Any:
    """The parsed document of `path`; `what` names the kind of file in messages (e.g. "scenario file"), `shown`
    the file itself (default: the path)."""
    name = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {what} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {what} is not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{name}:{where}: YAML syntax error: {problem}") from None

"""A server-flag matrix (`vlab experiment matrix FILE`): server profiles, or flag overrides of them, × one scenario.

```yaml
name: max-num-seqs                 # names the default output folder
description: Does a smaller batch buy per-user speed?
scenario: ../smoke.yaml            # relative to this file (or absolute)
profiles: [cpu-smollm2]            # profile names (server/profiles/) or files (relative to this file), 1 or more
overrides:                         # optional: the cross product of these profile keys, applied to every profile
  max_num_seqs: [2, 4]
  enable_prefix_caching: [true, false]
```

The cells are every profile × every combination of the override values, in file order (the first profile's cells
first, the last key varying fastest): here cpu-smollm2 with max_num_seqs 2 and prefix caching on, 2 and off, 4 and
on, 4 and off. A cell is named after its profile and its overrides, `cpu-smollm2.max_num_seqs-2.enable_prefix_caching-
true`; that name is the cell's folder and its server profile's name in the reports. Override keys must be profile
keys (checked against `server.profile.ServerProfile` by the command) other than `name`, `host` and `port`, which the
matrix sets itself; values are checked by the same strict model as a profile file.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vlab.core.errors import ConfigError
from vlab.core.yamlfile import read_yaml

RESERVED_KEYS = frozenset({"name", "host", "port"})
"""Profile keys the matrix sets itself: each cell is named, and served on a free port of 127.0.0.1's profile host."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Cell:
    """One server configuration of the matrix: a base profile and the overrides applied to it."""

    profile: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        base = _UNSAFE.sub("_", Path(self.profile).stem if self.profile.endswith((".yaml", ".yml")) else self.profile)
        return ".".join([base, *(f"{k}-{_word(v)}" for k, v in self.overrides.items())])


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "_".join(_word(v) for v in value) or "none"
    return _UNSAFE.sub("_", str(value)).strip("_") or "none"


class MatrixSpec(BaseModel):
    """See the module docstring."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Names the default output folder.")
    description: str = ""
    scenario: str = Field(min_length=1, description="The scenario file, relative to the matrix file.")
    profiles: list[str] = Field(min_length=1, description="Server profiles: names or files.")
    overrides: dict[str, list[Any]] = Field(default_factory=dict, description="Profile key → values to cross.")

    @field_validator("overrides")
    @classmethod
    def _overrides(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if key in RESERVED_KEYS:
                raise ValueError(f"{key!r} cannot be overridden: the matrix sets it for every cell")
            if not values:
                raise ValueError(f"{key!r}: give at least one value")
        return value

    def cells(self) -> list[Cell]:
        """Every profile × every combination of the override values (module docstring)."""
        keys = list(self.overrides)
        return [
            Cell(p, dict(zip(keys, combo, strict=True)))
            for p in self.profiles
            for combo in itertools.product(*(self.overrides[k] for k in keys))
        ]


def load_matrix(path: Path) -> tuple[MatrixSpec, Path]:
    """The matrix file's spec and its scenario's path; one `ConfigError` line for anything wrong, duplicate cells
    included."""
    data = read_yaml(path, "matrix file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with name, scenario, profiles and overrides")
    try:
        spec = MatrixSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        if first["type"] == "extra_forbidden":
            raise ConfigError(
                f"{path}: {where}: unknown key (expected: {', '.join(MatrixSpec.model_fields)})"
            ) from None
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
    names = [c.name for c in spec.cells()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: cells repeat ({', '.join(dupes)}): remove the duplicate profile or value")
    scenario = Path(spec.scenario).expanduser()
    return spec, scenario if scenario.is_absolute() else path.parent / scenario

"""Folders of runs: what a command argument that names runs stands for, and the layout of repeated runs.

- a run folder (it holds `run.json`): that one run;
- any other folder whose direct sub-folders hold runs: those runs, in natural order (`r2` before `r10`). A repeats
  folder (`vlab sweep --repeat N`) is one: its runs are `r1` … `rN` (`repeat_dir`), beside `repeats.json`,
  `repeats.csv` and its `index.html` (`analysis.repeats`).

Anything else is one `UserError` line (exit code 2) naming the folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from vlab.core.errors import UserError
from vlab.core.runfolder import RUN_JSON

REPEATS_JSON = "repeats.json"
REPEATS_CSV = "repeats.csv"
_REPEAT = re.compile(r"^r(\d+)$")


def repeat_dir(folder: Path, k: int) -> Path:
    """The folder of repeat k (1-based) inside a repeats folder."""
    return folder / f"r{k}"


def repeat_dirs(folder: Path) -> list[Path]:
    """The existing `r<k>` sub-folders of `folder`, in order of k."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _REPEAT.match(p.name))]
    return [p for _, p in sorted(found)]


def is_run(path: Path) -> bool:
    return (path / RUN_JSON).is_file()


def _natural(path: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def runs_in(path: Path) -> list[Path]:
    """The run folders `path` stands for (see the module docstring)."""
    if is_run(path):
        return [path]
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder", exit_code=2)
    runs = sorted((p for p in path.iterdir() if p.is_dir() and is_run(p)), key=_natural)
    if not runs:
        raise UserError(f"{path}: neither a run folder (no {RUN_JSON}) nor a folder of runs", exit_code=2)
    return runs


def is_group(path: Path) -> bool:
    """True for a folder of runs that is not itself a run (e.g. a repeats folder)."""
    return path.is_dir() and not is_run(path) and any(p.is_dir() and is_run(p) for p in path.iterdir())

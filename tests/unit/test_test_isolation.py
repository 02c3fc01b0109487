"""The pytest process itself stays unpatched: importing a test module must not import Locust (whose import runs
gevent's `monkey.patch_all()`), or every later test's threads become greenlets — an in-process uvicorn then blocks
the hub and the session hangs. Tests reach Locust through subprocesses (`vlab.commands.runner`) only."""

from __future__ import annotations

import subprocess
import sys

from vlab.core.paths import REPO_ROOT

PROBE = """
import importlib, pathlib, sys
import gevent.monkey as monkey
offenders = []
for path in sorted(pathlib.Path("tests").rglob("test_*.py")):
    before = monkey.is_module_patched("threading")
    importlib.import_module(".".join(path.with_suffix("").parts))
    if not before and monkey.is_module_patched("threading"):
        offenders.append(str(path))
print("\\n".join(offenders))
"""


def test_no_test_module_patches_the_pytest_process() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"these test modules import Locust (gevent patch_all): {out.stdout}"

"""`vlab.core.processes.die_with_parent` as a `preexec_fn` under gevent's monkey-patching, the way the Locust plugin
starts its samplers: the forked child must go straight to exec and never run one of the parent's greenlets."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from vlab.core.paths import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import os, subprocess, sys, gevent
    from vlab.core.processes import die_with_parent

    parent, seen = os.getpid(), sys.argv[1]

    def busy():  # stands for the plugin's watchers: any greenlet the child would run if it yielded to the hub
        while True:
            with open(seen, "a") as f:
                f.write(f"{os.getpid()}\\n")
            gevent.sleep(0.001)

    gevent.spawn(busy)
    gevent.sleep(0.01)
    for _ in range(5):
        subprocess.run(["true"], preexec_fn=die_with_parent, start_new_session=True, check=True, timeout=20)
    print(parent)
    """
)


def test_child_never_runs_the_parents_greenlets(tmp_path: Path) -> None:
    seen = tmp_path / "seen.txt"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(seen)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    pids = set(seen.read_text().split())
    assert pids == {out.stdout.strip()}  # only the parent ever ran the greenlet

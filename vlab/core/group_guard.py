"""A supervisor that holds a server's process group: `python -m vlab.core.group_guard -- ARGV...`.

The parent starts the guard in a session of its own with `die_with_parent`; the guard starts ARGV in the same process
group and waits for it, exiting with its exit code. On SIGTERM — sent by the parent's `killpg` on a normal stop, or by
the kernel when the parent dies by any signal, SIGKILL included — it passes SIGTERM to every process of the group,
waits up to `GRACE_S` for ARGV to exit and `LEFTOVER_S` for the rest, and then SIGKILLs whatever of the group is
left (a vLLM still loading its model does not always act on SIGTERM, and its engine process is a child that no death
signal reaches). So nothing the server started outlives the guard's parent, and the parent's own stop logic is
unchanged: the group id is the guard's pid.

Standard library only: it runs in the client environment's Python, in front of the server environment's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

GRACE_S = 10.0
"""How long ARGV has to exit after SIGTERM before the rest of the group is SIGKILLed."""
LEFTOVER_S = 5.0
"""How long the rest of the group may take to exit after ARGV has (an engine process shutting down)."""


def module_argv(argv: list[str]) -> list[str]:
    """The command that runs `argv` under a guard (with this interpreter)."""
    return [sys.executable, "-m", "vlab.core.group_guard", "--", *argv]


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` other than this one (Linux /proc; elsewhere none are known)."""
    me, out = os.getpid(), []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            if os.getpgid(pid) == pgid and (entry / "stat").read_text().split(") ")[-1][:1] != "Z":
                out.append(pid)
        except (OSError, IndexError):
            continue
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m vlab.core.group_guard -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    pgid = os.getpgrp()
    stopping: list[float] = []

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group-wide SIGTERM below reaches this process too
            os.killpg(pgid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        child = subprocess.Popen(argv)  # same process group and session as the guard
    except OSError as exc:
        print(f"group_guard: cannot start {argv[0]}: {exc}", file=sys.stderr)
        return 127
    while True:
        code = child.poll()
        if code is not None:
            break
        if stopping and time.monotonic() - stopping[0] > GRACE_S:
            child.kill()
        time.sleep(0.1)
    deadline = time.monotonic() + LEFTOVER_S
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _group_members(pgid):  # the server's own children (vLLM's engine process), if any are left
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

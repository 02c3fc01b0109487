"""Child processes that never outlive their parent.

`die_with_parent` is a `preexec_fn` for `subprocess.Popen`: on Linux it asks the kernel (prctl PR_SET_PDEATHSIG) to
send the child SIGTERM when the process that started it dies — by any signal, SIGKILL included, so a closed terminal
or an OOM kill of `vlab serve` still stops the vLLM it started (vLLM stops its engine processes on SIGTERM). The
child runs in its own session (`start_new_session=True`) so that Ctrl-C in the terminal reaches only the parent,
which stops the child's whole group in order. Elsewhere it does nothing.

The signal is tied to the thread that started the child: start children from the main thread (all commands do).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM me when my parent dies; and if it already died, now."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died between fork and prctl
        os.kill(os.getpid(), signal.SIGTERM)

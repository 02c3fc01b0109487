"""Child processes that never outlive their parent.

`die_with_parent` is a `preexec_fn` for `subprocess.Popen`: on Linux it asks the kernel (prctl PR_SET_PDEATHSIG) to
send the child SIGTERM when the process that started it dies — by any signal, SIGKILL included, so a closed terminal
or an OOM kill of `vlab serve` still stops the vLLM it started (vLLM stops its engine processes on SIGTERM). The
child runs in its own session (`start_new_session=True`) so that Ctrl-C in the terminal reaches only the parent,
which stops the child's whole group in order. Elsewhere it does nothing.

The signal is tied to the thread that started the child: start children from the main thread (all commands do).

libc is opened here, at import, never in the child: between fork and exec the child may only make plain system calls.
`ctypes.util.find_library` runs `ldconfig` through `subprocess`, which under gevent's monkey-patching yields to the
hub — and in a forked child the hub then runs the parent's greenlets (a Locust master's level sender spun on its
copied ZeroMQ socket at 100% CPU and the child never reached exec).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _open_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)  # the running program's symbols, libc's prctl among them
    except OSError:
        return None


_LIBC = _open_libc()


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM me when my parent dies; and if it already died, now."""
    if _LIBC is None:
        return
    parent = os.getppid()
    try:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except AttributeError:
        return
    if os.getppid() != parent:  # the parent died between fork and prctl
        os.kill(os.getpid(), signal.SIGTERM)

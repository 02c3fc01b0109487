"""The finisher works off ended streams between reads: everything submitted is run exactly once, reads that become
ready meanwhile are served between slices (not after the whole backlog), and drain leaves nothing behind."""

from __future__ import annotations

import time

import gevent
import pytest
from gevent import socket as gsocket

from vlab.locust import finisher as finisher_module
from vlab.locust.finisher import Finisher


def _busy(ms: float, done: list[int], i: int):
    def job() -> int:
        end = time.perf_counter() + ms / 1000.0
        while time.perf_counter() < end:
            pass
        done.append(i)
        return i

    return job


def test_jobs_run_once_in_order_with_results() -> None:
    fin = Finisher()
    done: list[int] = []
    outcomes = [fin.submit(_busy(0.1, done, i)) for i in range(50)]
    assert [o.get(timeout=5) for o in outcomes] == list(range(50))
    assert done == list(range(50)) and fin.backlog == 0
    fin.close()


def test_reads_are_served_between_slices() -> None:
    """A backlog of 200 jobs of 1 ms (a burst of ended 256-token streams): a socket that becomes readable while
    the finisher works is read after the current slice (2 ms), not after the backlog."""
    a, b = gsocket.socketpair()
    fin = Finisher(slice_s=0.002)
    done: list[int] = []
    jobs_done_at_read: list[int] = []

    def reader() -> None:
        a.recv(16)
        jobs_done_at_read.append(len(done))

    greenlet = gevent.spawn(reader)
    gevent.sleep(0.01)  # the reader now waits on its socket
    for i in range(200):
        fin.submit(_busy(1.0, done, i))
        if i == 20:
            fin.submit(lambda: b.send(b"token"))  # the next token arrives in the middle of the backlog
    greenlet.join(timeout=10)
    assert jobs_done_at_read, "the reader never got its data"
    assert 21 <= jobs_done_at_read[0] <= 21 + 3, jobs_done_at_read  # at most the rest of one slice later
    fin.close()
    assert len(done) == 200  # close drained the rest
    a.close()
    b.close()


def test_drain_runs_everything_now() -> None:
    fin = Finisher()
    done: list[int] = []
    for i in range(30):
        fin.submit(_busy(0.0, done, i))
    fin.drain()  # no yield to the hub in between: the finisher greenlet never got to run
    assert done == list(range(30)) and fin.backlog == 0
    fin.close()


def test_back_pressure_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finisher_module, "MAX_BACKLOG", 3)
    fin = Finisher()
    done: list[int] = []
    for i in range(5):
        fin.submit(_busy(0.0, done, i))
    assert done == [3, 4] and fin.inline == 2  # past the bound, jobs run on the submitting greenlet

    def broken() -> None:
        raise ValueError("bug")

    outcome = fin.submit(broken)
    fin.drain()
    with pytest.raises(ValueError, match="bug"):
        outcome.get(timeout=1)
    assert sorted(done) == [0, 1, 2, 3, 4]
    fin.close()

    inline = Finisher(deferred=False)  # VLAB_FINISH=inline: every job at once, on the submitting greenlet
    assert inline.submit(_busy(0.0, done, 5)).ready() and done[-1] == 5 and inline.inline == 1
    inline.close()

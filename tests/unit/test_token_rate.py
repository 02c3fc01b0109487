"""The token-arrival histogram: a window's rate and its per-second samples count each token once."""

from __future__ import annotations

import numpy as np

from analysis.load import BIN_S, TokenPass


def _steady(rate_per_s: float, seconds: int) -> TokenPass:
    n_bins = int(seconds / BIN_S) + 2
    return TokenPass(gaps={}, gap_rows={}, t0_s=1000.0, arrivals=np.full(n_bins, rate_per_s * BIN_S))


def test_per_second_samples_partition_the_window() -> None:
    tokens = _steady(300.0, 10)
    lo, hi = 1000.23, 1006.23  # six whole seconds, not on a bin edge of 1 s
    seconds = tokens.per_second(lo, hi)
    assert seconds.size == 6 and np.allclose(seconds, 300.0)
    assert abs(tokens.tokens_between(lo, hi) / (hi - lo) - 300.0) < 1e-6
    assert abs(seconds.sum() - tokens.tokens_between(lo, hi)) < 1e-6  # no token counted twice


def test_the_terminal_rate_counts_late_worker_samples() -> None:
    # Two workers, each 1,000 events per 1 s sample; one's samples reach the file 1.5 s late. The terminal's rate
    # ends each node's window at its newest sample, so the late node still counts its full 5 s: 2,000 events/s.
    from vlab.commands.runner import recent_rate

    now = 100.0
    on_time = [(now - k, 1000.0) for k in range(9, -1, -1)]
    late = [(t - 1.5, n) for t, n in on_time[:-1]]
    assert recent_rate({"a": on_time, "b": late}, now) == 2000.0
    assert recent_rate({"a": on_time, "b": [(now - 30, 1000.0)]}, now) == 1000.0  # a silent node counts 0

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

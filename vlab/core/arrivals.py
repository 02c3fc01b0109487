"""Arrival laws of open-loop load: one small keyed class each, registered by name.

A law draws the gap between two arrivals (seconds) with mean 1/rate. `stage_offsets` turns a law into one stage's
arrival offsets. The scenario's `load.arrival.process` names a law from `ARRIVAL_LAWS`; adding one is a class here.
"""

from __future__ import annotations

import random
from typing import ClassVar


class ArrivalLaw:
    """Gaps between arrivals with mean 1/rate."""

    name: ClassVar[str]
    doc: ClassVar[str]

    def gap(self, rate: float, rng: random.Random, burstiness: float) -> float:
        raise NotImplementedError


ARRIVAL_LAWS: dict[str, type[ArrivalLaw]] = {}


def register(cls: type[ArrivalLaw]) -> type[ArrivalLaw]:
    ARRIVAL_LAWS[cls.name] = cls
    return cls


@register
class Constant(ArrivalLaw):
    name = "constant"
    doc = "every gap is exactly 1/rate"

    def gap(self, rate: float, rng: random.Random, burstiness: float) -> float:
        return 1.0 / rate


@register
class Poisson(ArrivalLaw):
    name = "poisson"
    doc = "exponential gaps (a Poisson process)"

    def gap(self, rate: float, rng: random.Random, burstiness: float) -> float:
        return rng.expovariate(rate)


@register
class Gamma(ArrivalLaw):
    name = "gamma"
    doc = (
        "gamma(shape=burstiness, scale=1/(rate·burstiness)) gaps, as in `vllm bench serve`: < 1 burstier, > 1 smoother"
    )

    def gap(self, rate: float, rng: random.Random, burstiness: float) -> float:
        return rng.gammavariate(burstiness, 1.0 / (rate * burstiness))


def stage_offsets(law: ArrivalLaw, rate: float, n: int, rng: random.Random, burstiness: float = 1.0) -> list[float]:
    """Offsets (seconds from the stage start) of one stage's `n` arrivals: n gaps drawn from the law, then scaled by
    one common factor so that they sum to n / rate.

    The factor is 1 ± 1/√n, so the law's shape (coefficient of variation, burstiness) is kept, while the stage
    holds exactly its count over exactly n / rate seconds: a plain Poisson draw over a 30 s stage misses its rate by
    ±6% (1/√n) by chance alone, which would make the achieved rate meaningless as a check of the load generator.
    """
    if n <= 0:
        return []
    gaps = [law.gap(rate, rng, burstiness) for _ in range(n)]
    scale = (n / rate) / sum(gaps)
    offsets, t = [], 0.0
    for gap in gaps:
        t += gap * scale
        offsets.append(t)
    return offsets

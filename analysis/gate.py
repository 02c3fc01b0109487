"""The regression gate (`vlab compare`): rules on level metrics, judged with 95% intervals so that noise alone does
not fail a build.

A rule is `METRIC OP THRESHOLD`, METRIC one of `analysis.level_metrics.METRICS`, OP the direction that breaks it:

- `+10%`, `-5%`: a relative change x (the sign is required). The point values break it when C > (1 + x)·B (`>`)
  or C < (1 + x)·B (`<`); the rule FAILS when C_lo > (1 + x)·B_hi (`>`) or C_hi < (1 + x)·B_lo (`<`).
- `+20`, `-0.5ms`: a signed number, an absolute change d. Broken when C − B > d (or < d); FAILS when
  C_lo − B_hi > d (`>`) or C_hi − B_lo < d (`<`).
- `0.01`, `800ms`: an unsigned number, a limit v on the candidate. Broken when C > v (or < v); FAILS when C_lo > v
  (`>`) or C_hi < v (`<`).

B and C are the baseline's and the candidate's estimates, [B_lo, B_hi] and [C_lo, C_hi] their 95% intervals: a rule
fails only when even the most favourable values inside both intervals break it. A unit after the number, if any, must
be the metric's (`ms`, `tok/s`, `req/s`).

Each side's estimate and interval, per level:

- one run: the run's value and its within-run interval (`analysis.level_metrics`: percentile bootstrap, per-second
  counts, Wilson score, ...);
- n ≥ 2 runs: the mean of the runs' values and the Student t interval across them, mean ± t(0.975, n − 1)·s/√n
  (`vlab.core.stats.t_mean_ci`), which holds every source of run-to-run noise the runs saw.

A side whose interval cannot be computed (one run with fewer than 2 values) is taken at its point value, and the
verdict says so. Verdicts: `pass` (the point values keep the rule), `pass (noise)` (they break it, but the intervals
do not support it), `FAIL`, and `no data` (a side has no value at that level), which counts as a failure.

Levels are matched by target (users or req/s); both sides must be the same kind of load (closed or open loop).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analysis.level_metrics import METRICS, LevelMetric, level_rows, metric, shared_targets
from analysis.observations import fmt_target
from analysis.summary import RunSummary
from vlab.core.errors import ConfigError, UserError
from vlab.core.stats import Interval, t_mean_ci
from vlab.core.yamlfile import read_yaml

PASS, NOISE, FAIL, NO_DATA = "pass", "pass (noise)", "FAIL", "no data"
_RULE = re.compile(r"^\s*([A-Za-z0-9_]+)\s*([<>])\s*([+-]?)(\d+(?:\.\d*)?|\.\d+)\s*(%|[A-Za-z/]+)?\s*$")


# ------------------------------------------------------------------------------------------------------ rules
@dataclass(frozen=True)
class Rule:
    """`metric op threshold` (see the module docstring). `amount` is x as a fraction for `relative`, d for `change`,
    v for `limit`, in the metric's unit."""

    metric: LevelMetric
    op: Literal[">", "<"]
    kind: Literal["relative", "change", "limit"]
    amount: float
    text: str

    def breaks(self, b: float, c: float) -> bool:
        """Whether the point values break the rule."""
        return self._beyond(c, b)

    def fails(self, b: Interval, c: Interval) -> bool:
        """Whether the intervals support the break: the candidate's most favourable end against the baseline's."""
        if self.op == ">":
            return self._beyond(c.lo, b.hi)
        return self._beyond(c.hi, b.lo)

    def _beyond(self, c: float, b: float) -> bool:
        if self.kind == "relative":
            limit = (1.0 + self.amount) * b
        elif self.kind == "change":
            limit = b + self.amount
        else:
            limit = self.amount
        return c > limit if self.op == ">" else c < limit

    def limit_text(self, b: float) -> str:
        """The threshold the candidate is held to, given the baseline value."""
        if self.kind == "limit":
            return _num(self.amount, self.metric.unit)
        limit = (1.0 + self.amount) * b if self.kind == "relative" else b + self.amount
        return _num(limit, self.metric.unit)


def parse_rule(text: str) -> Rule:
    """A rule from its text; a `ConfigError` line for anything else (an unknown metric lists the known ones)."""
    m = _RULE.match(text)
    if m is None:
        raise ConfigError(
            f"rule {text!r}: expected METRIC > THRESHOLD or METRIC < THRESHOLD, e.g. 'ttft_p99 > +10%', "
            "'output_tok_s < -5%', 'ttft_p99 > +50ms', 'error_rate > 0.01'"
        )
    name, op, sign, number, unit = m.groups()
    try:
        lm = metric(name)
    except KeyError as exc:
        raise ConfigError(f"rule {text!r}: {exc.args[0]}") from None
    value = float(number) * (-1.0 if sign == "-" else 1.0)
    if unit == "%":
        if not sign:
            raise ConfigError(f"rule {text!r}: a relative change needs its sign: +{number}% or -{number}%")
        kind: Literal["relative", "change", "limit"] = "relative"
        value /= 100.0
    else:
        if unit is not None and unit != lm.unit:
            expected = f"'{lm.unit}' or none" if lm.unit else "none (it is a fraction)"
            raise ConfigError(f"rule {text!r}: unit '{unit}' for {name}, whose unit is {expected}")
        kind = "change" if sign else "limit"
    canonical = f"{name} {op} {sign}{number}{unit or ''}"
    return Rule(lm, op, kind, value, canonical)  # type: ignore[arg-type]


class RulesFile(BaseModel):
    """A rules file (`vlab compare --rules FILE`): `rules: ["ttft_p99 > +10%", ...]`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    rules: list[str] = Field(min_length=1, description="Rules as on the command line.")


def load_rules(path: Path) -> list[Rule]:
    """The rules of a YAML rules file (one `ConfigError` line naming the file for anything wrong)."""
    data = read_yaml(path, "rules file")
    try:
        spec = RulesFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f'{path}: {where}: {first["msg"]} (expected rules: ["ttft_p99 > +10%", ...])') from None
    rules = []
    for text in spec.rules:
        try:
            rules.append(parse_rule(text))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return rules


# --------------------------------------------------------------------------------------------------- judging
@dataclass(frozen=True)
class Estimate:
    """One side's value of a metric at a level: the point, the interval used (the point itself where none could be
    computed: `interval_known` False), over how many runs."""

    interval: Interval
    runs: int
    interval_known: bool

    @property
    def value(self) -> float:
        return self.interval.value

    @property
    def how(self) -> str:
        return f"t interval over {self.runs} runs" if self.runs > 1 else "within-run interval"


def estimate(runs: Sequence[RunSummary], lm: LevelMetric, target: float) -> Estimate:
    """A side's estimate (module docstring): one run's value and interval, or the t interval across runs; NaN when
    any run lacks the value."""
    values = [lm.value(level_rows(s)[target]) for s in runs]
    n = len(values)
    if not all(math.isfinite(v.value) for v in values):
        iv = Interval(math.nan, math.nan, math.nan)  # a run without the value: the side has none
    elif n == 1:
        iv = values[0]
    else:
        iv = t_mean_ci([v.value for v in values])
    if iv.known:
        return Estimate(iv, n, True)
    return Estimate(Interval(iv.value, iv.value, iv.value), n, False)


@dataclass(frozen=True)
class Check:
    """One metric at one level: both sides, and the rule's verdict (None without a rule)."""

    metric: LevelMetric
    target: float
    open_loop: bool
    baseline: Estimate
    candidate: Estimate
    rule: Rule | None
    verdict: str
    reason: str

    @property
    def failed(self) -> bool:
        return self.verdict in (FAIL, NO_DATA)

    @property
    def change(self) -> float:
        b, c = self.baseline.value, self.candidate.value
        return c / b - 1.0 if math.isfinite(b) and math.isfinite(c) and b != 0 else math.nan

    @property
    def level(self) -> str:
        return fmt_target(self.target, self.open_loop)

    @property
    def name(self) -> str:
        return f"{self.rule.text if self.rule else self.metric.name} @ {self.level}"


def judge(rule: Rule | None, lm: LevelMetric, target: float, open_loop: bool, b: Estimate, c: Estimate) -> Check:
    """The verdict of one rule at one level, with a sentence that carries the numbers."""
    where = f"{lm.name} at {fmt_target(target, open_loop)}"
    numbers = (f"candidate {_est(c, lm.unit)} vs baseline {_est(b, lm.unit)}"
               + (f" ({_pct(c.value / b.value - 1.0)})" if b.value and math.isfinite(b.value) else ""))  # fmt: skip
    if rule is None:
        return Check(lm, target, open_loop, b, c, None, "", f"{where}: {numbers}")
    if not (math.isfinite(b.value) or rule.kind == "limit") or not math.isfinite(c.value):
        missing = "candidate" if not math.isfinite(c.value) else "baseline"
        return Check(lm, target, open_loop, b, c, rule, NO_DATA, f"{where}: the {missing} has no value ({numbers})")
    held = f"rule {rule.text}: the candidate is held to {rule.limit_text(b.value)}"
    if not rule.breaks(b.value, c.value):
        verdict, why = PASS, f"{held}; the point values keep it"
    elif rule.fails(b.interval, c.interval):
        edge = "low" if rule.op == ">" else "high"
        base_edge = "" if rule.kind == "limit" else f" from the baseline's {'high' if rule.op == '>' else 'low'} end"
        bound = rule.limit_text(b.interval.hi if rule.op == ">" else b.interval.lo)
        verdict, why = FAIL, f"{held}; even the candidate's {edge} end is past {bound}{base_edge}"
    else:
        verdict, why = NOISE, f"{held}; the point values break it but the 95% intervals do not support that"
    if not (b.interval_known and c.interval_known) and verdict != PASS:
        sides = [n for n, e in (("baseline", b), ("candidate", c)) if not e.interval_known]
        why += f" (no interval on the {' and '.join(sides)}: its point value used)"
    return Check(lm, target, open_loop, b, c, rule, verdict, f"{where}: {numbers}; {why}")


def check_sides(baseline: Sequence[RunSummary], candidate: Sequence[RunSummary]) -> bool:
    """Both sides' load kind (True for open loop); a `UserError` (exit 2) when they differ."""
    kinds = {s.run.open_loop for s in [*baseline, *candidate]}
    if len(kinds) > 1:
        raise UserError("the runs mix closed-loop (users) and open-loop (req/s) levels: targets are not comparable",
                        exit_code=2)  # fmt: skip
    return kinds.pop()


def select_levels(
    baseline: Sequence[RunSummary], candidate: Sequence[RunSummary], wanted: Sequence[float] | None
) -> list[float]:
    """The targets to compare: `wanted` (each must be in every run), else every target all runs share."""
    shared = shared_targets([baseline, candidate])
    if wanted:
        missing = [w for w in wanted if w not in shared]
        if missing:
            have = ", ".join(f"{t:g}" for t in shared) or "none"
            raise UserError(f"--level {', '.join(f'{m:g}' for m in missing)}: not a level of every run "
                            f"(levels all runs share: {have})", exit_code=2)  # fmt: skip
        return list(wanted)
    if not shared:

        def targets(side: Sequence[RunSummary]) -> str:
            return "; ".join(",".join(f"{t:g}" for t in level_rows(s)) for s in side)

        raise UserError(f"no level target that every run has (baseline: {targets(baseline)}; candidate: "
                        f"{targets(candidate)})", exit_code=2)  # fmt: skip
    return shared


def compare(
    baseline: Sequence[RunSummary],
    candidate: Sequence[RunSummary],
    rules: Sequence[Rule],
    levels: Sequence[float] | None = None,
    shown: Sequence[str] = (),
) -> list[Check]:
    """Every rule at every selected level (rule-major), or, without rules, the `shown` metrics unjudged."""
    open_loop = check_sides(baseline, candidate)
    targets = select_levels(baseline, candidate, levels)
    checks = []
    pairs: list[tuple[Rule | None, LevelMetric]] = [(r, r.metric) for r in rules] or [(None, METRICS[n]) for n in shown]
    for rule, lm in pairs:
        for target in targets:
            b, c = estimate(baseline, lm, target), estimate(candidate, lm, target)
            checks.append(judge(rule, lm, target, open_loop, b, c))
    return checks


# -------------------------------------------------------------------------------------------------- output
def _num(value: float, unit: str = "") -> str:
    if not math.isfinite(value):
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return f"{text} {unit}".rstrip()


def _pct(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:+.1%}"


def _est(e: Estimate, unit: str = "") -> str:
    iv = e.interval
    if not e.interval_known:
        return _num(iv.value, unit)
    return f"{_num(iv.value)} [{_num(iv.lo)}–{_num(iv.hi)}]" + (f" {unit}" if unit else "")


def format_table(checks: Sequence[Check]) -> str:
    """The checks as a text table: level, metric, baseline, candidate, change, rule, verdict."""
    header = ["level", "metric", "baseline [95%]", "candidate [95%]", "change", "rule", "verdict"]
    rows = [
        [c.level, c.metric.name + (f" ({c.metric.unit})" if c.metric.unit else ""), _est(c.baseline),
         _est(c.candidate), _pct(c.change), c.rule.text if c.rule else "—", c.verdict or "—"]
        for c in checks
    ]  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def junit_xml(checks: Sequence[Check], baseline: Sequence[str], candidate: Sequence[str]) -> str:
    """JUnit XML: one testcase per rule × level; a failure carries both sides' numbers and the threshold."""
    judged = [c for c in checks if c.rule is not None]
    failures = sum(1 for c in judged if c.failed)
    suites = ET.Element("testsuites", name="vlab compare", tests=str(len(judged)), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name="vlab compare", tests=str(len(judged)), failures=str(failures),
                          errors="0", skipped="0")  # fmt: skip
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="baseline", value=" ".join(baseline))
    ET.SubElement(props, "property", name="candidate", value=" ".join(candidate))
    ET.SubElement(props, "property", name="method", value=(
        "a rule fails only when the candidate's 95% interval is past the threshold set from the baseline's "
        "interval (one run: within-run intervals; several: t intervals across runs)"))  # fmt: skip
    for c in judged:
        case = ET.SubElement(suite, "testcase", classname=f"vlab.compare.{c.metric.name}", name=c.name, time="0")
        if c.failed:
            ET.SubElement(case, "failure", message=c.reason, type=c.verdict).text = c.reason
        else:
            ET.SubElement(case, "system-out").text = c.reason
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"

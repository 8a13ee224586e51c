"""Objectives and searches: brute force over the grid, and the quick search.

A trial is one candidate measured at some client concurrency levels. Only stable, error-free
levels count. The throughput objective is the highest throughput whose p99 is within the budget;
the latency objective is the lowest p99 at a throughput of at least the floor.

Quick search (the default) is hill climbing, like Model Analyzer's quick mode, made cheaper in three
ways: it walks one axis at a time (instances, threads, batching on/off, max_batch_size, queue delay)
as long as each step pays instead of probing every neighbour at every step; each step probes a
candidate at one concurrency (2 x max_batch_size x instances, Model Analyzer's rule, capped; under a
p99 budget, where the config it stepped from met the budget, scaled by the rule and by Little's law to
three quarters of the budget) instead of a sweep; and a point is measured once however often the climb
comes back to it. A later pass does not walk back along an axis the climb walked (batching on/off
excepted), and a step from a config that fits the cores into one with more busy threads than cores
(CROWDED_GAIN) needs twice the gain. The best few
probed points are then swept (their second measurement), from the highest level down until a level
below the best gives less (closed-loop throughput rises with concurrency until the server saturates; a
probe's level counts for that, and the levels its misses put far over the budget are left out),
and the winner is chosen from those sweeps alone, each level measured as brute force measures it (the
leader's winning level measured once more when its p99 is near the budget, keeping the worse).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from tsrepo.tune.space import Candidate, Space


class Objective(str, Enum):
    THROUGHPUT = "throughput"
    LATENCY = "latency"


@dataclass(frozen=True)
class Level:
    concurrency: int
    throughput: float  # inferences/s
    p50_ms: float
    p99_ms: float
    stable: bool
    errors: int = 0

    def counts(self, steering: bool = False) -> bool:
        """Whether the level is a result: stable, error-free, measured. `steering` drops the stability
        condition: an unstable probe still says which way a climb should go, though never what wins."""
        return (self.stable or steering) and self.errors == 0 and math.isfinite(self.p99_ms) and self.throughput > 0

    def to_json(self) -> dict:
        return vars(self).copy()


@dataclass
class Trial:
    candidate: Candidate
    levels: list[Level]
    kind: str  # probe | sweep | final
    swap_s: float = 0.0  # how long loading this config took on the server
    seconds: float = 0.0  # wall time of the whole trial, swap included
    note: str = ""

    def to_json(self) -> dict:
        return {
            "candidate": self.candidate.to_json(),
            "key": self.candidate.key(),
            "kind": self.kind,
            "swap_s": self.swap_s,
            "seconds": self.seconds,
            "note": self.note,
            "levels": [lv.to_json() for lv in self.levels],
        }

    @classmethod
    def from_json(cls, doc: dict) -> Trial:
        return cls(
            Candidate.from_json(doc["candidate"]),
            [Level(**lv) for lv in doc["levels"]],
            doc["kind"],
            float(doc.get("swap_s", 0.0)),
            float(doc.get("seconds", 0.0)),
            doc.get("note", ""),
        )


def merge(a: Trial | None, b: Trial) -> Trial:
    """Two measurements of one candidate as one trial (a probe that halved its concurrency, a sweep
    measured level by level): levels in concurrency order, times added."""
    if a is None:
        a = Trial(b.candidate, [], b.kind)
    levels = sorted(a.levels + b.levels, key=lambda lv: lv.concurrency)
    return Trial(a.candidate, levels, a.kind, a.swap_s + b.swap_s, a.seconds + b.seconds, a.note or b.note)


@dataclass(frozen=True)
class Goal:
    objective: Objective = Objective.THROUGHPUT
    p99_budget_ms: float | None = None
    min_throughput: float | None = None  # for the latency objective

    @property
    def budget(self) -> float | None:
        """The p99 budget where it bounds the objective (throughput within it), else None: the latency
        objective has a throughput floor instead, and a budget given with it steers nothing."""
        return self.p99_budget_ms if self.objective is Objective.THROUGHPUT else None

    def best_level(self, levels: list[Level], steering: bool = False) -> Level | None:
        ok = [lv for lv in levels if lv.counts(steering)]
        if self.objective is Objective.THROUGHPUT:
            ok = [lv for lv in ok if self.p99_budget_ms is None or lv.p99_ms <= self.p99_budget_ms]
            return max(ok, key=lambda lv: lv.throughput, default=None)
        ok = [lv for lv in ok if self.min_throughput is None or lv.throughput >= self.min_throughput]
        return min(ok, key=lambda lv: lv.p99_ms, default=None)

    def score(self, levels: list[Level], steering: bool = False) -> float | None:
        """Higher is better; None when no level meets the goal."""
        best = self.best_level(levels, steering)
        if best is None:
            return None
        return best.throughput if self.objective is Objective.THROUGHPUT else -best.p99_ms

    def value(self, levels: list[Level]) -> float | None:
        """The objective in its own unit (infer/s, or p99 ms) for reports."""
        best = self.best_level(levels)
        if best is None:
            return None
        return best.throughput if self.objective is Objective.THROUGHPUT else best.p99_ms

    def ratio(self, found: list[Level], reference: list[Level]) -> float | None:
        """found's objective as a fraction of reference's (1.0 = as good; for latency, reference p99 / found p99)."""
        a, b = self.value(found), self.value(reference)
        if a is None or b is None or a == 0 or b == 0:
            return None
        return a / b if self.objective is Objective.THROUGHPUT else b / a


Measure = Callable[[Candidate, list[int], str], Trial]  # (candidate, levels, kind) -> Trial


@dataclass
class SearchResult:
    trials: list[Trial] = field(default_factory=list)
    finalists: list[Trial] = field(default_factory=list)  # the re-measured sweeps the winner is chosen from
    winner: Trial | None = None
    stopped: str = ""  # why the search ended early (time budget, interrupt), else empty


# A step from a config that fits the cores into a crowded one (more busy threads than cores) must gain twice
# the usual margin. On the 2-core machine three 1-thread instances measured within noise of two (+4 % to
# +7 % in probes) and never won brute force in runs I-M, but once the climb moved there every later probe
# swapped three stubs (2.2 s, not 1.1) and missed the p99 budget more often on the heavier tail: quick took
# 48-52 s instead of 40.
CROWDED_GAIN = 2.0
QUICK_MIN_GAIN = 0.05  # the least gain that moves the climb (see quick's `better`)
AIM = 0.75  # of the p99 budget: where a probe aims its concurrency (Little's law) when it can


def probe_level(c: Candidate, max_concurrency: int) -> int:
    return max(1, min(max_concurrency, 2 * c.max_batch_size * c.instances if c.batching else 2 * c.instances))


def sweep_down(
    goal: Goal,
    measure: Measure,
    c: Candidate,
    levels: list[int],
    have: Trial | None = None,
    missed_at: int | None = None,
    known: list[Level] | None = None,
) -> Trial:
    """A finalist's sweep for the throughput objective, from the highest level down. In a closed loop
    throughput rises with concurrency until the server saturates, and p99 rises with it: the best level
    is the highest that meets the budget unless a lower one gives more, so the sweep stops once a level
    below the best one measured gives less (two levels when the highest wins). `missed_at` is the lowest
    concurrency from which the config's probe puts p99 a third or more over the budget (_missed_at):
    levels from there up are left out (the lowest level never is). `known` is what the config's probe
    measured: a probe level below the best that gave no more settles the sweep as a level of its own
    would (_less_below), so where one lies just below the highest level left, that level is measured
    alone first. `have` is what an interrupted run measured already.
    Once settled, one unstable level that would have won is measured once more (see _second_chance), and
    the sweep goes on from there if it then counts.
    The latency objective measures every level."""
    if goal.objective is not Objective.THROUGHPUT:
        measured = {lv.concurrency for lv in have.levels} if have else set()
        missing = [lv for lv in levels if lv not in measured]
        return merge(have, measure(c, missing, "sweep")) if missing else have
    trial = have
    order = sorted(levels, reverse=True)
    if missed_at is not None:
        order = [lv for lv in order if lv < missed_at] or [min(levels)]
    # A concurrency measured twice in what a resumed run recorded: its second chance was given already.
    given = have is not None and len({lv.concurrency for lv in have.levels}) < len(have.levels)
    tried: set[int] = set()  # asked for once: a level that came back empty (a failed swap) is not asked again
    while True:
        measured = {lv.concurrency for lv in trial.levels} if trial else set()
        missing = [lv for lv in order if lv not in measured and lv not in tried]
        if trial is not None and (
            not missing
            or _settled(goal, _one_per_level(trial.levels))
            or _less_below(goal, _one_per_level(trial.levels), known or [], order)
        ):
            again = None if given else _second_chance(goal, trial.levels)
            if again is None:
                return trial
            given = True
            trial = merge(trial, measure(c, [again], "sweep"))
            continue
        if not missing:
            return trial
        single = measured or _probed_just_below(known or [], missing)
        batch = missing[: 1 if single else 2]
        tried.update(batch)
        trial = merge(trial, measure(c, batch, "sweep"))


def _one_per_level(levels: list[Level]) -> list[Level]:
    """One measurement per concurrency, for judging where a sweep stands: the later one that counts, else
    the later one (a merged trial keeps two measurements of one concurrency in the order they were taken)."""
    out: dict[int, Level] = {}
    for lv in levels:
        kept = out.get(lv.concurrency)
        if kept is None or lv.counts() or not kept.counts():
            out[lv.concurrency] = lv
    return sorted(out.values(), key=lambda lv: lv.concurrency)


def _second_chance(goal: Goal, levels: list[Level]) -> int | None:
    """The concurrency of an unstable level to measure once more, or None. A level that gave over 5 % more
    than the best stable one, within the budget and without errors, has no result only because its windows
    did not settle (on a shared machine the highest levels settle least); a second measurement often does,
    and counts only if it settles. Brute force has no such step, but its re-measure of its best configs
    measures their best level and the one above again. sweep_down gives it once per sweep."""
    counted = {lv.concurrency for lv in levels if lv.counts()}
    best = goal.best_level(levels)
    floor = best.throughput * 1.05 if best is not None else 0.0
    budget = goal.budget
    lost = [
        lv
        for lv in levels
        if not lv.stable
        and lv.concurrency not in counted
        and lv.counts(steering=True)
        and (budget is None or lv.p99_ms <= budget)
        and lv.throughput > floor
    ]
    return max(lost, key=lambda lv: (lv.throughput, -lv.concurrency)).concurrency if lost else None


def _settled(goal: Goal, levels: list[Level]) -> bool:
    """A level above the lowest one measured meets the goal, and the lowest gives no more than it; or
    the lowest is the one level that meets the goal and a level above it gave more all the same
    (unstable, or over the budget): the lowest is then on the rising side of throughput against
    concurrency, and every level below it gives less. Nothing measured (a refused swap) is not settled."""
    if not levels:
        return False
    lowest = min(levels, key=lambda lv: lv.concurrency)
    above = [lv for lv in levels if lv.concurrency > lowest.concurrency]
    best_above = goal.best_level(above)
    if best_above is None:
        return goal.best_level([lowest]) is not None and any(
            lv.counts(steering=True) and lv.throughput > lowest.throughput for lv in above
        )
    return goal.best_level([lowest]) is None or lowest.throughput <= best_above.throughput


def _probed_just_below(known: list[Level], order: list[int]) -> bool:
    """A probe level that counts lies between the sweep's highest level and the next (or below the only
    one): measuring the highest alone may settle the sweep against it (_less_below)."""
    if not order:
        return False
    floor = order[1] if len(order) > 1 else 0
    return any(floor < lv.concurrency < order[0] and lv.counts(steering=True) for lv in known)


def _less_below(goal: Goal, levels: list[Level], known: list[Level], order: list[int]) -> bool:
    """A level the probe measured below the sweep's best, with none of the sweep's own levels between the
    two left to measure, gave no more than the best: it stands on the rising or flat side of throughput
    against concurrency, and every level below it gives less, as _settled reasons from a level of the
    sweep's own (with no tolerance either: a lower level that gave more is a sign that throughput falls
    with concurrency, where the sweep must go on down). In run Q of the benchmark each resnet_small
    finalist measured level 4 (three to six windows) after its probe had measured 14."""
    best = goal.best_level(levels)
    if best is None:
        return False
    measured = {lv.concurrency for lv in levels}
    for lv in known:
        between = [n for n in order if lv.concurrency < n < best.concurrency and n not in measured]
        if (
            lv.concurrency < best.concurrency
            and not between
            and lv.counts(steering=True)
            and lv.throughput <= best.throughput
        ):
            return True
    return False


def _lower_level(level: int, p99_ms: float, budget_ms: float) -> int:
    """The next concurrency to probe after `level` missed the budget with `p99_ms`. Past saturation latency
    grows in proportion to concurrency (Little's law: concurrency = throughput x latency, and the
    throughput stays), so the budget is met near level x budget / p99: aim at three quarters of the
    budget (aiming at the edge missed it again half the time, on noise), at least one lower, and no
    lower than a quarter of `level` (a p99 far over the budget may be a stall, not queueing)."""
    aimed = int(level * budget_ms / p99_ms * AIM) if p99_ms > 0 else level // 2
    return max(1, min(level - 1, max(aimed, level // 4)))


def _higher_level(level: int, levels: list[Level], budget_ms: float | None, cap: int) -> int | None:
    """The concurrency to probe next after `level` met the budget well inside it, or None: Little's law
    (p99 grows at most in proportion to concurrency) puts the budget near level x budget / p99; aim at
    three quarters of it, no higher than `cap` (Model Analyzer's rule) or twice `level`, below any level that
    already missed the budget, and only where that is at least 1.5 x `level` or `cap` itself: a smaller
    step would not change which way the climb goes."""
    if budget_ms is None:
        return None
    missed = [lv.concurrency for lv in levels if lv.concurrency > level]  # measured higher: it missed
    limit = min([cap, *(m - 1 for m in missed)])
    last = _at(levels, level)
    if level >= limit or last is None or not last.counts(steering=True) or not 0 < last.p99_ms <= budget_ms:
        return None
    aimed = min(limit, 2 * level, int(level * budget_ms / last.p99_ms * AIM))
    # Reaching the rule's own level is always worth it: that is where the config the climb compares it
    # with was measured when its start was not lowered by the budget.
    return aimed if aimed > level and (aimed >= 1.5 * level or aimed == cap) else None


def _at(levels: list[Level], concurrency: int) -> Level | None:
    """The level measured at `concurrency` (a merged trial keeps its levels in concurrency order, not in
    the order they were measured)."""
    return next((lv for lv in levels if lv.concurrency == concurrency), None)


def _missed_at(goal: Goal, levels: list[Level]) -> int | None:
    """The lowest concurrency from which every level misses the p99 budget by a third or more (1 / AIM),
    judged from the measurements (stable or not, without errors) that missed it. p99 only grows with
    concurrency: a miss by a third or more at level c leaves out c and everything above. A smaller miss
    (noise can do that at c) leaves out only what Little's law puts a third over the budget, and only
    where the probe shows the server saturated at c (a lower level it measured gave within 5 % of c's
    throughput): past saturation latency grows in proportion to concurrency, so c's p99 P puts level n
    near P x n / c; before it, latency may stay flat while throughput grows. In run Q of the benchmark
    two resnet_small probes missed at 20 by 5-15 % (and gave as much at 14), and each sweep then measured
    32 for two to six windows only to give it up. None without a budget."""
    if goal.budget is None:
        return None
    over = []
    for lv in levels:
        if lv.errors or not math.isfinite(lv.p99_ms) or lv.p99_ms <= goal.budget:
            continue
        if lv.p99_ms > goal.budget / AIM:
            over.append(lv.concurrency)
        elif _saturated_at(lv, levels):
            over.append(max(lv.concurrency, math.floor(lv.concurrency * goal.budget / (AIM * lv.p99_ms)) + 1))
    return min(over, default=None)


def _saturated_at(top: Level, levels: list[Level]) -> bool:
    """A level below `top` (counted, errors excepted) gave within QUICK_MIN_GAIN of its throughput: more
    concurrency up to `top` brought no more throughput."""
    return any(
        lv.concurrency < top.concurrency
        and lv.counts(steering=True)
        and lv.throughput >= (1 - QUICK_MIN_GAIN) * top.throughput
        for lv in levels
    )


def _missed_budget(goal: Goal, levels: list[Level], latest: int) -> bool:
    """No level meets the goal and the one measured last, at concurrency `latest`, is over the p99 budget
    (stable or not): a lower concurrency may meet it. A level that missed only by being unstable is not
    a miss."""
    if goal.budget is None or not levels:
        return False
    if goal.score(levels, steering=True) is not None:
        return False
    last = _at(levels, latest)
    return last is not None and math.isfinite(last.p99_ms) and last.p99_ms > goal.budget


INTERRUPTED = "interrupted"  # the Stop reason for Ctrl-C or SIGTERM


class Stop(Exception):
    """Raised by a measure function (or the budget check) to end the search cleanly with what was found."""


def _finalise(goal: Goal, measure: Measure, ranked: list[Trial], levels: list[int], top: int, result: SearchResult):
    """Re-measure the best `top` sweeps and keep, per candidate, the worse of the two objectives:
    a config is only as good as it reliably is."""
    for trial in ranked[:top]:
        # Re-measure where it counts: the level that won, the next one up (which the first measurement
        # may have just missed the budget at) and the next one down (what the config still gives when
        # the winning level misses the budget this time).
        best = goal.best_level(trial.levels)
        higher = [lv for lv in levels if lv > best.concurrency]
        lower = [lv for lv in levels if lv < best.concurrency]
        again = measure(trial.candidate, [*lower[-1:], best.concurrency, *higher[:1]], "final")
        result.trials.append(again)
        pair = [trial, again]
        worst = min(pair, key=lambda t: goal.score(t.levels) if goal.score(t.levels) is not None else -math.inf)
        result.finalists.append(worst)
    scored = [t for t in result.finalists if goal.score(t.levels) is not None]
    result.winner = max(scored, key=lambda t: goal.score(t.levels), default=None)


EDGE = 0.9  # of the p99 budget: a leading finalist whose winning level's p99 is above it is measured again


def _check_the_edge(goal: Goal, measure: Measure, sweeps: list[Trial], result: SearchResult, done) -> None:
    """Measure the leading sweep's winning level once more while its p99 there is within 10 % of the budget,
    and keep the worse of the two (brute force's rule for its finalists); repeat for whichever sweep leads
    then, each once. A level whose p99 sits at the budget meets it or not on noise: in run O of the
    benchmark quick's winner met it at concurrency 16 in its sweep (870 infer/s) and missed it in two of
    three rounds side by side, where it gave 569 (its level 4)."""
    checked: set[Candidate] = set()
    while True:
        ranked = _rank(goal, sweeps)
        lead = ranked[0] if ranked else None
        best = goal.best_level(lead.levels) if lead is not None else None
        if best is None or lead.candidate in checked or goal.budget is None or best.p99_ms <= EDGE * goal.budget:
            return
        checked.add(lead.candidate)
        again = done.get((lead.candidate, "final")) or measure(lead.candidate, [best.concurrency], "final")
        result.trials.append(again)
        sweeps[sweeps.index(lead)] = _worse_at(goal, lead, best, again)


def _worse_at(goal: Goal, trial: Trial, best: Level, again: Trial) -> Trial:
    """`trial` with its winning level `best` replaced by the worse of it and its re-measure in `again` (one
    that misses the goal replaces it, so the trial falls back to its next best level; nothing measured,
    a refused swap, leaves it as it was)."""
    redo = _at(again.levels, best.concurrency)
    if redo is None or (goal.best_level([redo]) is not None and redo.throughput >= best.throughput):
        kept = best
    else:
        kept = redo
    levels = sorted(
        [lv for lv in trial.levels if lv.concurrency != best.concurrency] + [kept], key=lambda lv: lv.concurrency
    )
    return Trial(
        trial.candidate, levels, trial.kind, trial.swap_s + again.swap_s, trial.seconds + again.seconds, trial.note
    )


def _rank(goal: Goal, trials: list[Trial]) -> list[Trial]:
    scored = [t for t in trials if goal.score(t.levels) is not None]
    return sorted(scored, key=lambda t: goal.score(t.levels), reverse=True)


def brute(space: Space, goal: Goal, measure: Measure, levels: list[int], top: int = 3, done=None) -> SearchResult:
    """Sweep every grid point at every level; re-measure the best `top`."""
    result = SearchResult()
    done = done or {}
    try:
        for c in space.grid():
            trial = done.get((c, "sweep")) or measure(c, levels, "sweep")
            result.trials.append(trial)
        _finalise(goal, measure, _rank(goal, [t for t in result.trials if t.kind == "sweep"]), levels, top, result)
    except Stop as e:
        result.stopped = str(e)
        ranked = _rank(goal, [t for t in result.trials if t.kind in ("sweep", "final")])
        result.winner = ranked[0] if ranked else None
    return result


def quick(
    space: Space,
    goal: Goal,
    measure: Measure,
    levels: list[int],
    start: Candidate,
    top: int = 2,
    max_steps: int = 20,
    min_gain: float = QUICK_MIN_GAIN,
    done=None,
    crowded: Callable[[Candidate], bool] | None = None,
) -> SearchResult:
    """Hill climbing on one-level probes from `start`, then sweeps and re-measures of the best few.

    `crowded` says which configs ask for more busy threads than the server has cores (tune knows it on
    the local CPU engine): the climb steps into one only on a gain of CROWDED_GAIN x `min_gain`."""
    result = SearchResult()
    done = done or {}
    probes: dict[Candidate, Trial] = {}
    max_c = max(levels)
    budget = goal.budget  # steers the probes (throughput objective only)

    def start_level(c: Candidate, origin: Candidate | None) -> int:
        """Where a probe of `c` starts: Model Analyzer's rule; under a p99 budget, the concurrency at which
        the config the climb stepped from met the budget, scaled by the two configs' rule (a neighbour
        with twice the batch capacity gets twice the concurrency) and by Little's law to three quarters
        of the budget, never above the rule. A probe that starts where the budget holds is measured
        once; one above it costs a level per miss."""
        level = probe_level(c, max_c)
        if budget is None or origin is None or origin not in probes:
            return level
        met = goal.best_level(probes[origin].levels, steering=True)
        if met is None:
            return level
        scaled = met.concurrency * probe_level(c, max_c) / probe_level(origin, max_c)
        if met.p99_ms > 0:
            # Aim at three quarters of the budget, not at the edge the origin met it on: a neighbour as good
            # as its origin then meets it in one level instead of missing half the time on noise (a
            # miss costs a level). Past saturation throughput does not depend on concurrency, so
            # the comparison between the two is the same.
            scaled *= min(1.0, AIM * budget / met.p99_ms)
        return max(1, min(level, round(scaled)))

    def probe(c: Candidate, origin: Candidate | None = None) -> Trial:
        if c not in probes:
            trial = done.get((c, "probe"))
            restored = trial is not None
            if restored:
                # An interrupted run may have stopped between a miss and the lower level after it: go on
                # from the lowest level it recorded (a finished probe has met the budget there, or cannot
                # go lower, so nothing more is measured).
                level = min((lv.concurrency for lv in trial.levels), default=0)
            else:
                level = start_level(c, origin)
                trial = measure(c, [level], "probe")
            # Under a latency budget, a probe at high concurrency can miss the budget that a lower
            # concurrency meets: lower it until it is met (the config stays loaded, so this is cheap).
            # Only a miss lowers it: an unstable level says nothing about a lower concurrency.
            while level > 1 and _missed_budget(goal, trial.levels, level):
                level = _lower_level(level, _at(trial.levels, level).p99_ms, budget)
                trial = merge(trial, measure(c, [level], "probe"))
            # A probe that started below the rule and met the budget with room to spare may give more
            # higher up (a config that batches more needs more concurrency to fill its batches): one
            # level more, where Little's law puts the budget, when that is at least half as high again
            # or the rule's own level. (Not after a resume: a finished probe may have taken it already.)
            higher = None if restored else _higher_level(level, trial.levels, budget, probe_level(c, max_c))
            if higher is not None:
                trial = merge(trial, measure(c, [higher], "probe"))
            probes[c] = trial
            result.trials.append(trial)
        return probes[c]

    def score(c: Candidate, origin: Candidate | None = None) -> float:
        # Probes steer: an unstable level counts here (its windows' mean), never for the winner, which
        # comes from stable sweeps alone.
        s = goal.score(probe(c, origin).levels, steering=True)
        return -math.inf if s is None else s

    try:
        current = space.nearest(start)
        current_score = score(current)

        def better(s: float, n: Candidate) -> bool:
            # Move only on a clear gain: a step inside the noise is not a better config. 5 % is the least
            # spread tune assumes between two measurements of one config (see tune._noise); a smaller
            # threshold let the climb follow noise, each false step costing a pass of new probes.
            if not math.isfinite(current_score):
                return math.isfinite(s)
            gain = min_gain
            if crowded is not None and crowded(n) and not crowded(current):
                gain *= CROWDED_GAIN
            return s > current_score + gain * abs(current_score)

        # Walk one axis at a time as long as each step pays, then the next axis; repeat while any
        # axis moved. Cheaper than probing every neighbour at every step: an axis that does not pay
        # costs one or two probes, one that pays is followed to its end.
        steps = 0
        moved = True
        walked_to: dict[str, int] = {}  # the direction the climb last walked each axis in
        while moved and steps < max_steps:
            moved = False
            for axis in space.AXES:
                for direction in (1, -1):
                    if walked_to.get(axis) == -direction:
                        # Back along an axis the climb walked: that step paid by a clear margin, and a
                        # later pass changed other axes only. Each way back is a new point (a swap, a
                        # probe, often a second level): in the benchmark's resnet_small runs it cost 2.5-4 s
                        # of quick's 40-47 and gave about half of where the climb stood; walking on stays.
                        continue
                    walked = False
                    measured = math.isfinite(current_score)  # a step from nothing met the goal proves nothing
                    while steps < max_steps:
                        n = space.step(current, axis, direction)
                        if n is None:
                            break
                        s = score(n, current)
                        if not better(s, n):
                            break
                        current, current_score, walked, moved = n, s, True, True
                        steps += 1
                    if walked:
                        # Batching on/off is not a scale: turning it back on lands at the smallest size and
                        # delay, a point the climb never left from, so it stays open to later passes.
                        if measured and axis != "batching":
                            walked_to[axis] = direction
                        break  # the other direction was where this axis came from
        ranked = sorted(probes.values(), key=lambda t: score(t.candidate), reverse=True)
        sweeps = []
        for t in ranked[:top]:
            if not math.isfinite(score(t.candidate)):
                continue
            sweep = sweep_down(
                goal,
                measure,
                t.candidate,
                levels,
                done.get((t.candidate, "sweep")),
                _missed_at(goal, t.levels),
                t.levels,
            )
            result.trials.append(sweep)
            sweeps.append(sweep)
        # A finalist's sweep is its second measurement (its probe was the first): the winner is the best
        # sweep, every level measured as brute force measures it. Re-measuring every sweep again (as brute
        # force re-measures its best sweeps, which it measured once) would cost two more swaps and four
        # levels for little the probe did not already check; but the probe never measured the winning
        # level itself, so a leader whose p99 there is near the budget is measured there once more.
        _check_the_edge(goal, measure, sweeps, result, done)
        result.finalists = _rank(goal, sweeps)
        result.winner = result.finalists[0] if result.finalists else None
    except Stop as e:
        result.stopped = str(e)
        ranked = _rank(goal, [t for t in result.trials if t.kind in ("sweep", "final")])
        result.winner = ranked[0] if ranked else None
    return result

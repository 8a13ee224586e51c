"""tsrepo tune: measure the config instead of guessing it.

For one model: build the search space from the repository and the options, start (or reach) a
server in explicit model-control mode, search it (quick or brute, see search.py) by swapping configs
in without restarts, re-measure the finalists, compare the winner with the repository's own config
measured the same way, and report. Everything the user gave is checked before any load is sent.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from tsrepo.client import bench, modelinfo, transport
from tsrepo.errors import ClientError, TsrepoError, UsageError
from tsrepo.tune import results as results_mod
from tsrepo.tune import safety
from tsrepo.tune.engine import Engine, served_config
from tsrepo.tune.search import CROWDED_GAIN, INTERRUPTED, QUICK_MIN_GAIN, Goal, Objective, SearchResult, brute, quick
from tsrepo.tune.space import Candidate, Space, current_candidate

__all__ = ["Options", "Outcome", "Search", "tune"]

DEFAULT_DELAYS_US = (0, 100, 500, 2000)
DEFAULT_LEVELS = (1, 4, 16, 32)
MAX_INSTANCES = 16
MAX_LEVELS = 16
# After a swap, the first level's warm-up goes on (up to this many seconds more) while throughput still
# rises: the new instances serve slower for a second or so, and a probe measured then ranked din's
# 2-instance config below its 1-instance one (4,369 -> 4,562 -> 5,393 infer/s over three windows; 7,000+
# in other runs).
SETTLE_S = 2.0


def measuring(goal: Goal, **settings) -> bench.Settings:
    """bench's settings as tune measures with them (the benchmark uses the same): a level over the p99
    budget in two windows cannot meet it, so it is given up there; a config just swapped in settles."""
    return bench.Settings(**settings, give_up_p95_ms=goal.budget, settle_s=SETTLE_S)


class Search(str, Enum):
    QUICK = "quick"
    BRUTE = "brute"


@dataclass
class Options:
    model: str
    repo: Path = Path("model_repository")
    url: str | None = None  # None: the local engine
    protocol: str = "http"
    objective: Objective = Objective.THROUGHPUT
    p99_budget_ms: float | None = None
    min_throughput: float | None = None
    batch_size: int = 1
    max_instances: int = 3
    max_batch_size: int | None = None  # None: what the repository ships
    delays_us: tuple[int, ...] = DEFAULT_DELAYS_US
    threads: tuple[int, ...] = ()  # INTRA_OP_THREAD_COUNT values to try (empty: leave it)
    levels: tuple[int, ...] = DEFAULT_LEVELS
    search: Search = Search.QUICK
    time_budget_min: float | None = None
    resume: Path | None = None
    json_path: Path | None = None
    csv_path: Path | None = None
    plot_path: Path | None = None
    spec: Path | None = None  # for --write
    write: bool = False
    window_s: float = 1.0
    warmup_s: float = 0.5
    max_windows: int = 6
    stability: float = 0.10


@dataclass
class Outcome:
    run: results_mod.Run
    goal: Goal
    result: SearchResult
    winner: Candidate | None
    current: Candidate
    better: bool  # the winner beats the current config by more than the noise
    verdict: str
    toml: str = ""  # the values to paste (or written, with --write)
    notes: list[str] = field(default_factory=list)
    swap_seconds: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    stopped: str = ""  # why the search ended early, if it did

    @property
    def exit_code(self) -> int:
        if self.stopped == INTERRUPTED:
            return 130
        return 0 if self.winner is not None else 1


def _check(o: Options) -> None:
    """Everything about the options that can be refused before any load is sent (exit 2)."""
    if o.p99_budget_ms is not None and not (math.isfinite(o.p99_budget_ms) and o.p99_budget_ms > 0):
        raise UsageError(f"`--p99-budget` must be a finite number of milliseconds > 0, got {o.p99_budget_ms!r}")
    if o.min_throughput is not None and not (math.isfinite(o.min_throughput) and o.min_throughput > 0):
        raise UsageError(f"`--min-throughput` must be a finite number > 0, got {o.min_throughput!r}")
    if o.objective is Objective.LATENCY and o.min_throughput is None:
        raise UsageError("`--objective latency` needs `--min-throughput` (the throughput the lowest p99 must reach)")
    if not 1 <= o.max_instances <= MAX_INSTANCES:
        raise UsageError(f"`--max-instances` must be from 1 to {MAX_INSTANCES}, got {o.max_instances}")
    if o.max_batch_size is not None and not 1 <= o.max_batch_size <= 1024:
        raise UsageError(f"`--max-batch-size` must be from 1 to 1024, got {o.max_batch_size}")
    if not o.delays_us or any(d < 0 or d > 10_000_000 for d in o.delays_us):
        raise UsageError(f"`--delays` must list queue delays from 0 to 10000000 µs, got {list(o.delays_us)}")
    if any(t < 1 or t > 1024 for t in o.threads):
        raise UsageError(f"`--threads` must list thread counts from 1 to 1024, got {list(o.threads)}")
    if not o.levels or len(o.levels) > MAX_LEVELS or any(n < 1 or n > bench.MAX_CONCURRENCY for n in o.levels):
        raise UsageError(
            f"`--concurrency` must list 1 to {MAX_LEVELS} levels from 1 to {bench.MAX_CONCURRENCY},"
            f" got {list(o.levels)}"
        )
    if o.time_budget_min is not None and not (math.isfinite(o.time_budget_min) and o.time_budget_min > 0):
        raise UsageError(f"`--time-budget` must be a finite number of minutes > 0, got {o.time_budget_min!r}")
    for path, option in ((o.json_path, "--json"), (o.csv_path, "--csv"), (o.plot_path, "--plot")):
        results_mod.check_writable(path, option)
    if o.plot_path is not None and Path(o.plot_path).suffix.lower() != ".png":
        raise UsageError(f"`--plot` {o.plot_path}: the plot is a PNG; give a file name ending in .png")
    if o.write:
        spec = o.spec or Path("tsrepo.toml")
        if not Path(spec).is_file():
            raise UsageError(f"`--write` needs the spec the model was built from: {spec} not found (--spec)")
        if not os.access(spec, os.W_OK):
            raise UsageError(f"`--write`: {spec} is not writable")


def _space(o: Options, info: modelinfo.ModelInfo, notes: list[str]) -> Space:
    built = info.max_batch_size
    if built == 0:
        notes.append(f"{o.model} has no batch dimension (max_batch_size 0): only instance counts are tuned")
        return Space(tuple(range(1, o.max_instances + 1)), (0,), (0,), _threads(o, notes), True, 0)
    top = o.max_batch_size or built
    sizes = sorted({1 << k for k in range(0, 11) if (1 << k) <= top} | {top})
    version = info.versions()[-1] if info.versions() else None
    proven: list[int] = []
    for m in sizes:
        if m <= built or version is None:
            if m <= built:
                proven.append(m)
            continue
        proof = safety.prove(info, version, m)
        if proof.safe:
            proven.append(m)
        else:
            notes.append(f"max_batch_size {m} skipped: batch safety does not hold at that size ({proof.detail})")
    if o.batch_size > max(proven):
        raise UsageError(f"`--batch-size` {o.batch_size} exceeds every max_batch_size tried ({proven})")
    proven = [m for m in proven if m >= o.batch_size]
    return Space(
        instances=tuple(range(1, o.max_instances + 1)),
        max_batch_sizes=tuple(proven),
        delays_us=tuple(sorted(set(o.delays_us))),
        threads=_threads(o, notes),
        batching_off=True,
        off_max_batch_size=built,
    )


def _threads(o: Options, notes: list[str]) -> tuple[int | None, ...]:
    """The INTRA_OP_THREAD_COUNT axis. On the local CPU engine the default tries the runner's own
    default (kept as None: the parameter is left out; (cores - 1) / instances, see model.py.j2) against
    1 thread per instance, which stops several instances from fighting over the same cores. Where the
    runner's default is 1 already (2 cores or fewer) the two are the same config, measured once."""
    if o.threads:
        return tuple(o.threads)
    if o.url is None:
        from tsrepo.serve.local import gpu_visible

        if not gpu_visible():
            if runner_default_threads() <= 1:
                notes.append(
                    "CPU engine: INTRA_OP_THREAD_COUNT left at the runner's default, 1 thread per instance on"
                    f" {_cores()} cores (--threads to try others)"
                )
                return (None,)
            notes.append(
                "CPU engine: INTRA_OP_THREAD_COUNT is tried at the runner's default ((cores - 1) / instances) and"
                " at 1 (--threads to choose)"
            )
            return (None, 1)
    return (None,)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def crowding(o: Options, cfg) -> Callable[[Candidate], bool] | None:
    """On the local CPU engine, which configs ask for more busy threads than there are cores (instances
    x the intra-op threads the runner will use: the candidate's, else what the repository's config sets,
    else the runner's default; torch_aoti ignores the parameter): the quick search steps into those only
    on a clearly larger gain. None elsewhere: a remote server's cores are not known here, GPU instances
    do not share the CPU's, and a model the runner does not serve has its own threading."""
    from tsrepo.serve import shadow
    from tsrepo.serve.local import gpu_visible

    if o.url is not None or not shadow.is_libtorch(cfg) or gpu_visible():
        return None
    aoti = shadow.is_aoti(cfg)
    shipped = current_candidate(cfg).threads  # what a candidate that leaves the parameter keeps
    cores = _cores()

    def threads(c: Candidate) -> int:
        chosen = None if aoti else (c.threads if c.threads is not None else shipped)
        return chosen if chosen is not None else runner_default_threads(c.instances)

    return lambda c: c.instances * threads(c) > cores


def _best_so_far(goal: Goal, trials: list, winner: Candidate | None) -> str:
    """What a search stopped early has: its winner so far, else the best probe (the ranked table marks probe
    rows "probe only": probes steer, a winner needs a sweep)."""
    if winner is not None:
        return f"best so far: {winner.key()}"
    probed = [t for t in trials if t.kind == "probe" and goal.value(t.levels) is not None]
    if not probed:
        return "no config measured meets the goal yet"
    lead = max(probed, key=lambda t: goal.score(t.levels))
    unit = " infer/s" if goal.objective is Objective.THROUGHPUT else " ms p99"
    return (
        f"no config swept yet (probes only steer the search; the best probe, {lead.candidate.key()}, gave"
        f" {goal.value(lead.levels):.1f}{unit})"
    )


def runner_default_threads(instances: int = 1) -> int:
    """The local engine runner's intra-op threads without INTRA_OP_THREAD_COUNT (templates/model.py.j2)."""
    return max(1, (_cores() - 1) // instances)


@contextlib.contextmanager
def _server(o: Options, info: modelinfo.ModelInfo, progress) -> Iterator[tuple[str, Callable]]:
    """(url, served-config function): the local engine started for tuning, or the given server."""
    if o.url is not None:
        with transport.connect(o.url, o.protocol, timeout=10) as client:
            client.wait_ready(10)
            if not client.model_ready(o.model):
                raise ClientError(f"model {o.model!r} is not ready on {o.url}")
        yield o.url, lambda cfg: cfg
        return
    from tsrepo.serve import local, shadow
    from tsrepo.serve.ports import free_ports

    progress("starting the local engine in explicit model-control mode")
    server = local.start(o.repo, free_ports(), model_control="explicit", load_models=[o.model], timeout=240)
    gpu = local.gpu_visible()
    try:
        yield (server.grpc_url if o.protocol == "grpc" else server.http_url), lambda cfg: shadow.served_config(cfg, gpu)
    finally:
        server.stop()


def _expected_trials(space: Space, search: Search, top: int = 3) -> int:
    """How many trials a search will take, for the ETA: exact for brute; for quick, a climb of about
    three steps over the neighbours, then two sweeps and two re-measures."""
    grid = space.grid()
    if search is Search.BRUTE:
        return len(grid) + top
    if not grid:
        return 1
    sample = grid[len(grid) // 2]
    return min(len(grid), 1 + 3 * len(space.neighbours(sample))) + 4


def tune(
    o: Options,
    progress: Callable[[str], None] = lambda _m: None,
    on_trial: Callable[[int, int, str], None] = lambda _done, _total, _m: None,
) -> Outcome:
    """Search MODEL's config space on a server. `progress` gets status lines; `on_trial(done, expected,
    line)` is called after each trial (expected is an estimate for quick search)."""
    begin = time.monotonic()
    _check(o)
    info = modelinfo.load(o.repo, o.model, option="MODEL")
    from tsrepo import config as config_mod
    from tsrepo.serve import shadow

    if shadow.is_libtorch(info.config):  # a thread count the backend would fail the load on, named before any load
        config_mod.check_thread_counts(info.config, str(info.folder / "config.pbtxt"))
    current = current_candidate(info.config)
    notes: list[str] = []
    space = _space(o, info, notes)
    crowded = crowding(o, info.config) if Search(o.search) is Search.QUICK else None
    if crowded is not None and any(crowded(c) for c in space.grid()):
        notes.append(
            f"{_cores()} cores: quick search moves to a config with more busy threads than cores (instances x"
            f" intra-op threads) only on a {100 * CROWDED_GAIN * QUICK_MIN_GAIN:g} % gain"
        )
    goal = Goal(o.objective, o.p99_budget_ms, o.min_throughput)
    levels = sorted(set(o.levels))
    settings = {
        "goal": {
            "objective": goal.objective.value,
            "p99_budget_ms": goal.p99_budget_ms,
            "min_throughput": goal.min_throughput,
        },
        "levels": levels,
        "search": Search(o.search).value,
        "batch_size": o.batch_size,
        "space": {
            "instances": list(space.instances),
            "max_batch_sizes": list(space.max_batch_sizes),
            "delays_us": list(space.delays_us),
            "threads": list(space.threads),
        },
    }
    run = results_mod.resume(o.resume, o.model, settings) if o.resume else results_mod.Run(o.model, settings)
    run.path = Path(o.resume or o.json_path) if (o.resume or o.json_path) else None
    done = run.done()
    with _server(o, info, progress) as (url, served):
        bench_settings = measuring(
            goal,
            url=url,
            model=o.model,
            protocol=transport.parse_protocol(o.protocol),
            batch_size=o.batch_size,
            window=o.window_s,
            warmup=o.warmup_s,
            max_windows=o.max_windows,
            stability=o.stability,
        )
        base = info.config
        if o.url is not None:
            with transport.connect(url, o.protocol, timeout=10) as client:
                base = served_config(client.config(o.model))
        engine = Engine(url, o.model, o.repo, base, served, bench_settings, progress=progress)
        engine.check_swappable()
        if o.time_budget_min is not None:
            engine.deadline = begin + o.time_budget_min * 60

        expected = _expected_trials(space, Search(o.search))
        count = 0

        def measure(c: Candidate, lv: list[int], kind: str):
            nonlocal count
            trial = engine.measure(c, lv, kind)
            run.add(trial)
            count += 1
            value = goal.value(trial.levels)
            shown = "misses the goal" if value is None else f"{value:.1f}"
            on_trial(count, max(expected, count + 1), f"{kind} {c.key()}: {shown}")
            return trial

        try:
            if Search(o.search) is Search.BRUTE:
                result = brute(space, goal, measure, levels, done=done)
            else:
                result = quick(space, goal, measure, levels, current, done=done, crowded=crowded)
            current_trial = None
            if not result.stopped:
                # The repository's own config, measured the same way, is the bar the winner must clear.
                current_trial = engine.measure(current, levels, "current")
        finally:
            with contextlib.suppress(TsrepoError):
                engine.restore()
    winner = result.winner.candidate if result.winner else None
    outcome = Outcome(run, goal, result, winner, current, False, "", notes=notes, swap_seconds=list(engine.swaps))
    resume_hint = f"; continue with --resume {run.path}" if run.path else " (--json would have kept a resumable file)"
    if result.stopped:
        outcome.stopped = result.stopped
        outcome.verdict = f"stopped early ({result.stopped}); {_best_so_far(goal, run.trials, winner)}{resume_hint}"
        outcome.better = winner is not None and winner != current
    elif winner is None:
        closest = results_mod.ranked(Goal(goal.objective), run.trials)[:3]
        if goal.objective is Objective.THROUGHPUT and goal.p99_budget_ms is not None:
            what = f"no config meets p99 <= {goal.p99_budget_ms:g} ms"
        elif goal.objective is Objective.LATENCY:
            what = f"no config meets throughput >= {goal.min_throughput:g}"
        else:
            what = "no config gave a stable, error-free measurement"
        outcome.verdict = what + ("; closest: " + ", ".join(t.candidate.key() for t in closest) if closest else "")
    elif current_trial is not None:
        noise = _noise(result)
        cur = goal.value(current_trial.levels)
        ratio = goal.ratio(result.winner.levels, current_trial.levels)
        if cur is None:
            outcome.better = True
            outcome.verdict = f"{winner.key()} meets the goal; the current config ({current.key()}) does not"
        elif winner == current or ratio is None or ratio <= 1 + noise:
            outcome.verdict = (
                f"no better config found: the best, {winner.key()}, is within the noise ({noise:.0%}) of the current"
                f" config {current.key()} (ratio {ratio or 1:.2f})"
            )
        else:
            outcome.better = True
            outcome.verdict = (
                f"{winner.key()} beats the current config {current.key()} by {ratio:.2f}x (noise {noise:.0%})"
            )
        run.current = current_trial.to_json()
    run.winner = winner.key() if winner else None
    run.verdict = outcome.verdict
    run.save()
    outcome.elapsed_s = time.monotonic() - begin
    return outcome


def _noise(result: SearchResult) -> float:
    """How much the same config's throughput moved between two measurements of the same concurrency
    (a probe and a sweep, a sweep and its re-measure), the largest such spread seen (at least 5%)."""
    spreads = [0.05]
    by_level: dict[tuple[Candidate, int], list[float]] = {}
    for t in result.trials:
        for lv in t.levels:
            if lv.counts():
                by_level.setdefault((t.candidate, lv.concurrency), []).append(lv.throughput)
    for values in by_level.values():
        if len(values) >= 2 and max(values) > 0:
            spreads.append((max(values) - min(values)) / max(values))
    return max(spreads)


def apply_winner(o: Options, outcome: Outcome) -> str:
    """The winning values as TOML for the model's [[model]] table; with --write, written into the spec
    (comments kept) and the model's config rebuilt through the normal build path. Returns what to print."""
    from tsrepo import spec as spec_mod
    from tsrepo.tune import writeback

    winner = outcome.winner
    assert winner is not None
    spec_path = Path(o.spec or "tsrepo.toml")
    model_spec = None
    if spec_path.is_file():
        model_spec = next((m for m in spec_mod.load_spec(spec_path).models if m.name == o.model), None)
    if model_spec is None:
        if o.write:
            raise UsageError(f"`--write`: {spec_path} has no model named {o.model!r} (--spec)")
        values = {
            "instance_group": [{"kind": "cpu", "count": winner.instances}],
            "max_batch_size": winner.max_batch_size,
            "dynamic_batching": {"max_queue_delay_microseconds": winner.delay_us} if winner.batching else False,
        }
        return writeback.as_toml(o.model, values)
    values = writeback.changes(model_spec, winner)
    if not values:
        return f"# {spec_path}: model {o.model!r} already has the winning values"
    if not o.write:
        return writeback.as_toml(o.model, values) + "# (pass --write to write these into the spec and rebuild)"
    writeback.write(spec_path, o.model, values)
    rebuilt = rebuild_config(spec_path, o.model, o.repo)
    return f"# wrote {', '.join(values)} for {o.model!r} into {spec_path}; rebuilt {rebuilt}"


def rebuild_config(spec_path: Path, model: str, repo: Path) -> Path:
    """Rebuild one model through `tsrepo build` into its newest version (force), so config.pbtxt follows the spec."""
    import dataclasses

    from tsrepo import build as build_mod
    from tsrepo import repository
    from tsrepo import spec as spec_mod

    full = spec_mod.load_spec(spec_path)
    (m,) = [m for m in full.models if m.name == model]
    versions = repository.existing_versions(Path(repo) / model)
    m = dataclasses.replace(m, version=versions[-1] if versions else m.version)
    build_mod.build(spec_mod.RepoSpec((m,), full.origin), Path(repo), force=True)
    return Path(repo) / model / repository.CONFIG_FILE

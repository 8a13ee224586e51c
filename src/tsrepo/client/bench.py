"""Load tests: closed-loop concurrency sweeps and open-loop request-rate runs, measured in windows.

Latencies are kept exactly per window (not bucketed): a run is a few thousand to a few hundred
thousand requests, which fits in memory as two float arrays, and exact values keep p99 honest on
short windows. A level is stable when throughput and p95 of the last three windows lie within
`stability` of their mean (perf_analyzer's --stability-percentage); the report then covers those
three windows, else every measured window, flagged unstable.

Each window also records the client's own CPU per load process, and how busy it was (its threads on
a CPU or runnable and waiting for one, from schedstat): a process busy 90 % of a core or more (locust
warns at 90 % CPU) is the bottleneck, not the server, and the level says so. With `--workers N` the load comes
from N processes (workers.py) and merges exactly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from tsrepo.client import grpc_wire, inputdata, kserve, loadgen, modelinfo, readiness, transport, workers
from tsrepo.client import metrics as metrics_mod
from tsrepo.client.address import parse_address
from tsrepo.errors import ClientError, ServerRefused, UsageError

STAT_KEYS = ("queue", "compute_input", "compute_infer", "compute_output")
DEAD_AFTER_S = 2.0
STATS_TIMEOUT_S = 5.0
MAX_CONCURRENCY = 4096
MAX_RATE = 1e6
MIN_RATE = 0.1  # requests/s: slower than this, a level takes minutes to say anything
# With --requests, a level whose requests keep failing stops after this many failures (plus 10 per
# request asked for) instead of waiting for successes that never come.
MAX_FAILURES = 100
MAX_LEVELS = 64
MAX_WORKERS = 64
SATURATED_CPU = 90.0  # percent of one core per load process (locust warns at 90 % CPU)


class Mode(StrEnum):
    CONCURRENCY = "concurrency"  # closed loop: N requests in flight
    REQUEST_RATE = "request_rate"  # open loop: requests per second on a schedule

    @property
    def option(self) -> str:
        return "--concurrency" if self is Mode.CONCURRENCY else "--request-rate"


def parse_levels(text: str, mode: Mode) -> list[float]:
    """Comma-separated levels: finite, > 0, bounded; whole numbers for concurrency."""
    option = mode.option
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"`{option}`: expected numbers separated by commas, e.g. 1,4,16, got {text!r}") from None
    if not values:
        raise UsageError(f"`{option}`: give at least one level, e.g. 1,4,16")
    if len(values) > MAX_LEVELS:
        raise UsageError(f"`{option}`: at most {MAX_LEVELS} levels, got {len(values)}")
    top = MAX_CONCURRENCY if mode is Mode.CONCURRENCY else MAX_RATE
    low = 0 if mode is Mode.CONCURRENCY else MIN_RATE
    for v in values:
        if not math.isfinite(v) or v <= 0 or v < low or v > top:
            bound = f">= {low:g}" if low else "> 0"
            raise UsageError(f"`{option}`: levels must be finite numbers {bound} and <= {top:g}, got {v:g}")
        if mode is Mode.CONCURRENCY and v != int(v):
            raise UsageError(f"`{option}`: levels must be whole numbers, got {v:g}")
    return values


@dataclass
class Settings:
    url: str
    model: str
    protocol: transport.Protocol = transport.Protocol.HTTP
    batch_size: int = 1
    window: float = 2.0
    warmup: float = 1.0
    duration: float | None = None  # fixed measuring time; None: until stable
    requests: int | None = None  # fixed request count instead of windows
    max_windows: int = 10
    stability: float = 0.10
    poisson: bool = False
    input_sets: int = 8
    seed: int = 0
    max_outstanding: int = 1024
    workers: int = 1
    shapes: dict = field(default_factory=dict)  # --shape NAME -> dims (without batch)
    ranges: dict = field(default_factory=dict)  # --range NAME -> (low, high)
    metrics_url: str | None = None  # --collect-metrics: HOST:PORT of Triton's metrics endpoint
    # Stop a level once two windows in a row have a p95 over this many ms (tune: the p99 budget) and it is
    # not recovering (see over_limit). Windows until stable only (not with `duration` or `requests`).
    give_up_p95_ms: float | None = None
    # The first level of a run keeps warming up, at most this many seconds more, while throughput still
    # rises (tune, right after a config swap: fresh model instances serve slower for a second or so).
    settle_s: float = 0.0


@dataclass
class Window:
    start: float
    end: float
    requests: int
    successes: int
    throughput: float  # inferences/s (requests x batch size)
    p95_ms: float
    errors: dict
    server: dict
    client_cpu: float = 0.0  # percent of one core, the busiest load process
    client_busy: float = 0.0  # percent of one core its threads ran or waited to run
    metrics: dict = field(default_factory=dict)


@dataclass
class LevelResult:
    mode: Mode
    level: float
    batch_size: int
    windows: list[Window] = field(default_factory=list)
    used_windows: int = 0
    stable: bool = False
    throughput: float = 0.0
    latency_ms: dict = field(default_factory=dict)
    requests: int = 0
    requests_total: int = 0  # every request completed during the level, warm-up included
    errors: dict = field(default_factory=dict)
    server: dict = field(default_factory=dict)
    aborted: str | None = None
    gave_up: bool = False  # stopped early: two windows over Settings.give_up_p95_ms (never stable)
    client_cpu: float = 0.0  # percent of one core: the busiest load process, mean over the used windows
    client_busy: float = 0.0  # percent of one core that process's threads were on a CPU or waiting for one
    metrics: dict = field(default_factory=dict)
    workers: int = 1

    @property
    def client_saturated(self) -> bool:
        """A load process never idle (running, or runnable but not scheduled) is what holds the load back."""
        return max(self.client_busy, self.client_cpu) >= SATURATED_CPU

    def to_json(self) -> dict:
        return {
            str(self.mode): self.level,
            "batch_size": self.batch_size,
            "throughput_infer_per_s": self.throughput,
            "latency_ms": self.latency_ms,
            "requests": self.requests,
            "requests_total": self.requests_total,
            "errors": self.errors,
            "stable": self.stable,
            "windows_measured": len(self.windows),
            "windows_used": self.used_windows,
            "server": self.server,
            "aborted": self.aborted,
            "gave_up": self.gave_up,
            "client": {
                "workers": self.workers,
                "cpu_percent": self.client_cpu,
                "busy_percent": self.client_busy,
                "saturated": self.client_saturated,
            },
            "metrics": self.metrics,
            "windows": [vars(w) for w in self.windows],
        }


# ---- inputs ----------------------------------------------------------------------------------


def model_info(s: Settings, repo: Path | None, client: transport.Transport | None = None) -> modelinfo.ModelInfo:
    """From the repository when there is one, else from the server's config and metadata; then
    --shape and --range."""
    if repo is not None:
        info = modelinfo.load(repo, s.model, option="MODEL")
    else:
        try:
            info = modelinfo.from_server(client, s.model)
        except ServerRefused as e:
            raise ClientError(f"model {s.model!r}: the server has no config for it ({e})") from None
    return modelinfo.with_overrides(info, s.shapes, s.ranges)


def input_sets(
    s: Settings, repo: Path | None, input_data: Path | None, client: transport.Transport | None = None
) -> list[dict[str, np.ndarray]]:
    """The request inputs, checked against the model before anything is sent (UsageError, exit 2)."""
    info = model_info(s, repo, client)
    if info.max_batch_size == 0 and s.batch_size != 1:
        raise UsageError(f"`--batch-size`: model {s.model!r} has max_batch_size 0, so --batch-size must be 1")
    if info.max_batch_size and s.batch_size > info.max_batch_size:
        raise UsageError(
            f"`--batch-size`: {s.batch_size} exceeds model {s.model!r}'s max_batch_size {info.max_batch_size}"
        )
    if input_data is not None:
        return [inputdata.fit(inputdata.load(input_data), info, s.batch_size, input_data)]
    modelinfo.require_shapes(info)
    rng = np.random.default_rng(s.seed)
    return [info.sample(rng, s.batch_size, "mid") for _ in range(s.input_sets)]


# ---- server statistics -------------------------------------------------------------------------


def _stat_fields(model_stats: dict) -> dict:
    inf = model_stats.get("inference_stats", {})
    out = {k: (int(inf.get(k, {}).get("count", 0)), int(inf.get(k, {}).get("ns", 0))) for k in STAT_KEYS}
    out["success"] = (int(inf.get("success", {}).get("count", 0)), int(inf.get("success", {}).get("ns", 0)))
    out["execution_count"] = int(model_stats.get("execution_count", 0))
    out["inference_count"] = int(model_stats.get("inference_count", 0))
    return out


async def _fetch_stats(client: transport.Transport, model: str) -> dict | None:
    """The model's statistics through the transport (in a thread, off the load loop's event loop).

    Best-effort per window: a failed fetch leaves that window without a server breakdown."""
    try:
        doc = await asyncio.to_thread(client.statistics, model)
    except ClientError:
        return None
    stats = doc.get("model_stats", []) if isinstance(doc, dict) else []
    return _stat_fields(stats[0]) if stats else None


def server_delta(before: dict | None, after: dict | None) -> dict:
    if not before or not after:
        return {}
    out: dict = {}
    for k in STAT_KEYS:
        count = after[k][0] - before[k][0]
        ns = after[k][1] - before[k][1]
        out[f"{k}_us"] = (ns / count / 1000.0) if count else 0.0
    execs = after["execution_count"] - before["execution_count"]
    infers = after["inference_count"] - before["inference_count"]
    out["execution_count"] = execs
    out["inference_count"] = infers
    out["avg_batch_size"] = (infers / execs) if execs else 0.0
    return out


def _merge_server(deltas: list[dict]) -> dict:
    deltas = [d for d in deltas if d]
    if not deltas:
        return {}
    execs = sum(d["execution_count"] for d in deltas)
    infers = sum(d["inference_count"] for d in deltas)
    merged = {k: float(np.mean([d[k] for d in deltas])) for k in deltas[0] if k.endswith("_us")}
    merged.update(execution_count=execs, inference_count=infers, avg_batch_size=(infers / execs) if execs else 0.0)
    return merged


# ---- measuring one level -----------------------------------------------------------------------


def _percentiles(lat_s: np.ndarray) -> dict:
    if lat_s.size == 0:
        return {k: float("nan") for k in ("p50", "p90", "p95", "p99", "max", "mean")}
    ms = lat_s * 1000.0
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


def _cpu_percent(before: list[tuple], after: list[tuple]) -> tuple[float, float]:
    """(CPU, loop busy) of the busiest load process over the interval, in percent of one core."""
    cpu = busy = 0.0
    for (w0, c0, b0), (w1, c1, b1) in zip(before, after, strict=False):
        if w1 > w0 and c0 > 0:  # a worker's first report carries zeros: no interval yet
            cpu = max(cpu, (c1 - c0) / (w1 - w0) * 100.0)
            busy = max(busy, (b1 - b0) / (w1 - w0) * 100.0)
    return cpu, busy


def _window(records: loadgen.RecordSet, start: float, end: float, batch: int, server: dict) -> Window:
    count, ok, lat = records.window(start, end)
    successes = int(ok.sum())
    failed = count - successes
    p95 = float(np.percentile(lat, 95) * 1000) if lat.size else float("nan")
    span = max(end - start, 1e-9)
    errors = {"error": failed} if failed else {}
    return Window(start, end, count, successes, successes * batch / span, p95, errors, server)


def over_limit(windows: list[Window], p95_ms: float | None, remaining: int) -> bool:
    """Whether to give a level up: its last two windows both had a p95 over `p95_ms` (over 5 % of the
    requests of each took longer, so the p99 of the two together is over it too; they become the level's
    result), and it is not recovering: the second p95 is not below the first, or fewer than three windows
    remain (too few to settle without these two, so the level's p99 would include them anyway)."""
    if p95_ms is None or len(windows) < 2:
        return False
    first, second = windows[-2].p95_ms, windows[-1].p95_ms
    if not (first > p95_ms and second > p95_ms):
        return False
    return second >= first or remaining < 3


def is_stable(windows: list[Window], tolerance: float) -> bool:
    if len(windows) < 3:
        return False
    last = windows[-3:]
    for values in ([w.throughput for w in last], [w.p95_ms for w in last]):
        mean = float(np.mean(values))
        if not mean or math.isnan(mean) or any(abs(v - mean) > tolerance * mean for v in values):
            return False
    return True


class _Probes:
    """What is read at each window's edges besides the load: Triton's statistics and metrics."""

    def __init__(self, s: Settings, stats: transport.Transport, scraper: metrics_mod.Scraper | None):
        self.s, self.stats, self.scraper = s, stats, scraper

    async def server(self) -> dict | None:
        return await _fetch_stats(self.stats, self.s.model)

    async def metrics(self) -> dict:
        if self.scraper is None:
            return {}
        try:
            return await asyncio.to_thread(self.scraper.scrape)
        except ClientError:
            return {}  # best-effort per window, as the statistics are


SETTLE_RISE = 0.05  # a warm-up step whose throughput is this much above the step before is still rising


def _rising(done: float, previous: float) -> bool:
    """A step completed more requests than the one before by more than 5 % and more than a count's own
    noise (sqrt(n)), so a step of a few completions does not look like a rise."""
    return done - previous > max(SETTLE_RISE * previous, math.sqrt(max(previous, 1.0)))


async def _warm_up(s: Settings, load, begin: float, sleep_watching) -> str | None:
    """The warm-up before the first window: `s.warmup` seconds; with `s.settle_s`, in steps of half the
    warm-up, and then more steps (up to `s.settle_s` seconds more) while each step completes clearly more
    requests than the one before (_rising). The first step also holds the load's start (nothing completes
    before the first latency), so a level with a long latency may take a step or two more."""
    if not s.settle_s or s.warmup <= 0:
        return await sleep_watching(begin + s.warmup)
    step = s.warmup / 2
    limit = begin + s.warmup + s.settle_s
    count = load.records.successes
    until, previous = begin, None
    while True:
        until += step
        aborted = await sleep_watching(until)
        if aborted or load.done():
            return aborted
        now_count = load.records.successes
        done = now_count - count
        count = now_count
        if until >= begin + s.warmup - 1e-9 and previous is not None and not _rising(done, previous):
            return None
        if until + step > limit:
            return None
        previous = done


async def _measure(s: Settings, load, probes: _Probes, mode: Mode, level: float, progress) -> LevelResult:
    if s.duration and s.duration < 3 * s.window:
        # Three windows at least, or stability cannot be judged.
        s = dataclasses.replace(s, window=s.duration / 3)
    result = LevelResult(mode, level, s.batch_size, workers=s.workers)
    perf = time.perf_counter
    if s.requests:
        budget = max(60.0, s.requests / max(level, 1) * 10 if mode is Mode.REQUEST_RATE else 600.0)
    else:
        n = math.ceil(s.duration / s.window) if s.duration else s.max_windows
        budget = s.warmup + s.settle_s + n * s.window + 2 * s.window
    begin = perf()
    deadline = begin + budget  # every request loop is bounded in time
    await load.start(str(mode), level, deadline)

    async def sleep_watching(until: float) -> str | None:
        while perf() < until:
            await asyncio.sleep(min(0.1, max(0.0, until - perf())))
            now = perf()
            records = load.records
            last_ok = records.last_success or begin
            if records.last_connection_error > last_ok and now - last_ok > DEAD_AFTER_S:
                return "server not reachable (connection refused or lost)"
            if load.done():
                return None
        return None

    try:
        aborted = await _warm_up(s, load, begin, sleep_watching)
        used: list[Window] = []
        if not aborted and s.requests:
            start, cpu0 = perf(), load.cpu()
            before = await probes.server()
            base = load.records.successes
            failed_base = sum(load.records.errors.values())
            while not aborted and perf() < deadline:
                done = load.records.successes - base
                progress(f"{mode} {level:g}: {done}/{s.requests} requests")
                if done >= s.requests:
                    break
                failed = sum(load.records.errors.values()) - failed_base
                if failed >= MAX_FAILURES + 10 * s.requests:
                    aborted = f"{failed} requests failed while {done} succeeded; stopped (see the errors)"
                    break
                aborted = await sleep_watching(perf() + 0.1)
            end = perf()
            w = _window(load.records, start, end, s.batch_size, server_delta(before, await probes.server()))
            (w.client_cpu, w.client_busy), w.metrics = _cpu_percent(cpu0, load.cpu()), await probes.metrics()
            result.windows.append(w)
            used = [w]
            result.stable = True
        elif not aborted:
            target_windows = math.ceil(s.duration / s.window) if s.duration else s.max_windows
            start, cpu0 = perf(), load.cpu()
            before = await probes.server()
            for k in range(target_windows):
                aborted = await sleep_watching(start + s.window)
                end, cpu1 = perf(), load.cpu()
                after = await probes.server()
                w = _window(load.records, start, end, s.batch_size, server_delta(before, after))
                (w.client_cpu, w.client_busy), w.metrics = _cpu_percent(cpu0, cpu1), await probes.metrics()
                result.windows.append(w)
                progress(
                    f"{mode} {level:g}: window {k + 1}/{target_windows},"
                    f" {w.throughput:.0f} infer/s, p95 {w.p95_ms:.1f} ms, client busy {w.client_busy:.0f} %"
                )
                if aborted:
                    break
                start, before, cpu0 = end, after, cpu1
                if not s.duration and is_stable(result.windows, s.stability):
                    break
                remaining = target_windows - (k + 1)
                if not s.duration and remaining and over_limit(result.windows, s.give_up_p95_ms, remaining):
                    result.gave_up = True
                    break
            result.stable = is_stable(result.windows, s.stability)
            used = result.windows[-3:] if result.stable else result.windows
            if result.gave_up:
                used = result.windows[-2:]  # the two over the limit: their p99 is over it (see over_limit)
        result.aborted = aborted
    finally:
        await load.stop()

    result.used_windows = len(used)
    if used:
        count, ok, lat = load.records.window(used[0].start, used[-1].end)
        span = used[-1].end - used[0].start
        result.requests = count
        result.throughput = float(ok.sum()) * s.batch_size / span if span > 0 else 0.0
        result.latency_ms = _percentiles(lat)
        result.server = _merge_server([w.server for w in used])
        result.client_cpu = float(np.mean([w.client_cpu for w in used]))
        result.client_busy = float(np.mean([w.client_busy for w in used]))
        result.metrics = metrics_mod.merge([w.metrics for w in used if w.metrics])
    result.errors = dict(load.records.errors)
    result.requests_total = sum(len(p.ok) for p in load.records.parts)
    return result


def make_target(s: Settings, sets: list[dict[str, np.ndarray]]) -> loadgen.Target:
    address = parse_address(s.url)
    if s.protocol is transport.Protocol.GRPC:
        channel = grpc_wire.Channel(address.host, address.port, loadgen.grpc_requests(s.model, sets))
        return loadgen.Target("grpc", address.host, address.port, [], channel)
    bodies = [kserve.encode_infer(arrays, None, binary_outputs=True) for arrays in sets]
    host = f"[{address.host}]" if address.is_ipv6 else address.host
    requests = loadgen.http_requests(host, address.port, s.model, bodies)
    return loadgen.Target("http", address.host, address.port, requests)


def check_server(client: transport.Transport, model: str, timeout: float = 10.0) -> None:
    """Wait (bounded) for the model's own readiness, not the server's (see readiness.py)."""
    reason = readiness.wait_models(client, [model], timeout)[model]
    if reason is not None:
        raise ClientError(f"model {model!r} is not ready on {client.url}: {reason}")


def run(
    s: Settings,
    mode: Mode | str,
    levels: list[float],
    repo: Path | None,
    input_data: Path | None = None,
    progress=lambda _m: None,
) -> list[LevelResult]:
    """Measure each level in turn. Stops early (returning what was measured) when the server dies.

    With `repo` None the model's inputs come from the server's config and metadata (and --shape).
    Everything the user gave is checked (UsageError) before any load is sent."""
    mode = Mode(mode)
    s = dataclasses.replace(s, protocol=transport.parse_protocol(s.protocol))
    if not 1 <= s.workers <= MAX_WORKERS:
        raise UsageError(f"`--workers`: give 1 to {MAX_WORKERS}, got {s.workers}")
    stats = transport.connect(s.url, s.protocol, STATS_TIMEOUT_S)
    if repo is not None:
        sets = input_sets(s, repo, input_data)
    results = []

    async def main() -> None:
        scraper = metrics_mod.Scraper(s.metrics_url) if s.metrics_url else None
        if scraper is not None:
            await asyncio.to_thread(scraper.scrape)  # unreachable: say so before any load, not per window
        if s.workers > 1:
            load = await asyncio.to_thread(workers.WorkerLoad, s, sets, s.workers)
        else:
            load = workers.InProcessLoad(make_target(s, sets), s)
        probes = _Probes(s, stats, scraper)
        try:
            for i, level in enumerate(levels):
                # settle_s is for the first level (a config just loaded); later levels warm up as usual
                each = s if i == 0 or not s.settle_s else dataclasses.replace(s, settle_s=0.0)
                r = await _measure(each, load, probes, mode, level, progress)
                results.append(r)
                if r.aborted:
                    break
        finally:
            await load.close()
            if scraper is not None:
                scraper.close()

    with stats:
        check_server(stats, s.model)
        if repo is None:
            sets = input_sets(s, None, input_data, stats)
        asyncio.run(main())
    return results

"""Load tests: closed-loop concurrency sweeps and open-loop request-rate runs, measured in windows.

Latencies are kept exactly per window (not bucketed): a run is a few thousand to a few hundred
thousand requests, which fits in memory as two float arrays, and exact values keep p99 honest on
short windows. A level is stable when throughput and p95 of the last three windows lie within
`stability` of their mean (perf_analyzer's --stability-percentage); the report then covers those
three windows, else every measured window, flagged unstable.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from tsrepo.client import inputdata, kserve, loadgen, modelinfo, transport
from tsrepo.client.address import parse_address
from tsrepo.errors import ClientError, UsageError

STAT_KEYS = ("queue", "compute_input", "compute_infer", "compute_output")
DEAD_AFTER_S = 2.0
STATS_TIMEOUT_S = 5.0
MAX_CONCURRENCY = 4096
MAX_RATE = 1e6
MAX_LEVELS = 64


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
    for v in values:
        if not math.isfinite(v) or v <= 0 or v > top:
            raise UsageError(f"`{option}`: levels must be finite numbers > 0 and <= {top:g}, got {v:g}")
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
    errors: dict = field(default_factory=dict)
    server: dict = field(default_factory=dict)
    aborted: str | None = None

    def to_json(self) -> dict:
        return {
            str(self.mode): self.level,
            "batch_size": self.batch_size,
            "throughput_infer_per_s": self.throughput,
            "latency_ms": self.latency_ms,
            "requests": self.requests,
            "errors": self.errors,
            "stable": self.stable,
            "windows_measured": len(self.windows),
            "windows_used": self.used_windows,
            "server": self.server,
            "aborted": self.aborted,
            "windows": [vars(w) for w in self.windows],
        }


# ---- inputs ----------------------------------------------------------------------------------


def input_sets(s: Settings, repo: Path, input_data: Path | None) -> list[dict[str, np.ndarray]]:
    """The request inputs, checked against the model before anything is sent (UsageError, exit 2)."""
    info = modelinfo.load(repo, s.model, option="MODEL")
    if info.max_batch_size == 0 and s.batch_size != 1:
        raise UsageError(f"`--batch-size`: model {s.model!r} has max_batch_size 0, so --batch-size must be 1")
    if info.max_batch_size and s.batch_size > info.max_batch_size:
        raise UsageError(
            f"`--batch-size`: {s.batch_size} exceeds model {s.model!r}'s max_batch_size {info.max_batch_size}"
        )
    if input_data is not None:
        return [inputdata.fit(inputdata.load(input_data), info, s.batch_size, input_data)]
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


def _slice(records: loadgen.Records, start: float, end: float) -> tuple[int, int]:
    return bisect.bisect_left(records.ends, start), bisect.bisect_left(records.ends, end)


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


def _window(records: loadgen.Records, start: float, end: float, batch: int, server: dict) -> Window:
    i, j = _slice(records, start, end)
    ok = np.frombuffer(records.ok, dtype=np.int8)[i:j].astype(bool)
    lat = np.frombuffer(records.latencies, dtype=np.float64)[i:j][ok]
    failed = (j - i) - int(ok.sum())
    p95 = float(np.percentile(lat, 95) * 1000) if lat.size else float("nan")
    span = max(end - start, 1e-9)
    return Window(
        start,
        end,
        j - i,
        int(ok.sum()),
        float(ok.sum()) * batch / span,
        p95,
        {"error": failed} if failed else {},
        server,
    )


def is_stable(windows: list[Window], tolerance: float) -> bool:
    if len(windows) < 3:
        return False
    last = windows[-3:]
    for values in ([w.throughput for w in last], [w.p95_ms for w in last]):
        mean = float(np.mean(values))
        if not mean or math.isnan(mean) or any(abs(v - mean) > tolerance * mean for v in values):
            return False
    return True


async def _measure(
    s: Settings, target: loadgen.Target, stats: transport.Transport, mode: Mode, level: float, progress
) -> LevelResult:
    if s.duration and s.duration < 3 * s.window:
        # Three windows at least, or stability cannot be judged.
        s = dataclasses.replace(s, window=s.duration / 3)
    records = loadgen.Records()
    stop = asyncio.Event()
    result = LevelResult(mode, level, s.batch_size)
    perf = time.perf_counter
    if s.requests:
        budget = max(60.0, s.requests / max(level, 1) * 10 if mode is Mode.REQUEST_RATE else 600.0)
    else:
        n = math.ceil(s.duration / s.window) if s.duration else s.max_windows
        budget = s.warmup + n * s.window + 2 * s.window
    begin = perf()
    deadline = begin + budget  # every request loop is bounded in time
    if mode is Mode.CONCURRENCY:
        load = asyncio.ensure_future(loadgen.closed_loop(target, int(level), records, stop, deadline))
    else:
        load = asyncio.ensure_future(
            loadgen.open_loop(target, level, records, stop, deadline, s.poisson, s.max_outstanding, s.seed)
        )

    async def sleep_watching(until: float) -> str | None:
        while perf() < until:
            await asyncio.sleep(min(0.1, max(0.0, until - perf())))
            now = perf()
            last_ok = records.last_success or begin
            if records.last_connection_error > last_ok and now - last_ok > DEAD_AFTER_S:
                return "server not reachable (connection refused or lost)"
            if load.done():
                return None
        return None

    try:
        aborted = await sleep_watching(begin + s.warmup)
        used: list[Window] = []
        if not aborted and s.requests:
            start = perf()
            before = await _fetch_stats(stats, s.model)
            base = records.successes
            while not aborted and perf() < deadline:
                done = records.successes - base
                progress(f"{mode} {level:g}: {done}/{s.requests} requests")
                if done >= s.requests:
                    break
                aborted = await sleep_watching(perf() + 0.1)
            end = perf()
            w = _window(records, start, end, s.batch_size, server_delta(before, await _fetch_stats(stats, s.model)))
            result.windows.append(w)
            used = [w]
            result.stable = True
        elif not aborted:
            target_windows = math.ceil(s.duration / s.window) if s.duration else s.max_windows
            start = perf()
            before = await _fetch_stats(stats, s.model)
            for k in range(target_windows):
                aborted = await sleep_watching(start + s.window)
                end = perf()
                after = await _fetch_stats(stats, s.model)
                w = _window(records, start, end, s.batch_size, server_delta(before, after))
                result.windows.append(w)
                progress(
                    f"{mode} {level:g}: window {k + 1}/{target_windows},"
                    f" {w.throughput:.0f} infer/s, p95 {w.p95_ms:.1f} ms"
                )
                if aborted:
                    break
                start, before = end, after
                if not s.duration and is_stable(result.windows, s.stability):
                    break
            result.stable = is_stable(result.windows, s.stability)
            used = result.windows[-3:] if result.stable else result.windows
        result.aborted = aborted
    finally:
        stop.set()
        try:
            await asyncio.wait_for(load, timeout=10)
        except (asyncio.TimeoutError, Exception):
            load.cancel()

    result.used_windows = len(used)
    if used:
        i, _ = _slice(records, used[0].start, used[0].end)
        _, j = _slice(records, used[-1].start, used[-1].end)
        ok = np.frombuffer(records.ok, dtype=np.int8)[i:j].astype(bool)
        lat = np.frombuffer(records.latencies, dtype=np.float64)[i:j][ok]
        span = used[-1].end - used[0].start
        result.requests = j - i
        result.throughput = float(ok.sum()) * s.batch_size / span if span > 0 else 0.0
        result.latency_ms = _percentiles(lat)
        result.server = _merge_server([w.server for w in used])
    result.errors = dict(records.errors)
    return result


def _target(s: Settings, sets: list[dict[str, np.ndarray]]) -> loadgen.Target:
    address = parse_address(s.url)
    if s.protocol is transport.Protocol.GRPC:
        return loadgen.Target("grpc", address.host, address.port, [], loadgen.GrpcChannel(str(address), s.model, sets))
    bodies = [kserve.encode_infer(arrays, None, binary_outputs=True) for arrays in sets]
    host = f"[{address.host}]" if address.is_ipv6 else address.host
    requests = loadgen.http_requests(host, address.port, s.model, bodies)
    return loadgen.Target("http", address.host, address.port, requests)


def check_server(client: transport.Transport, model: str, timeout: float = 10.0) -> None:
    client.wait_ready(timeout)
    if not client.model_ready(model):
        raise ClientError(f"model {model!r} is not ready on {client.url}")


def run(
    s: Settings,
    mode: Mode | str,
    levels: list[float],
    repo: Path,
    input_data: Path | None = None,
    progress=lambda _m: None,
) -> list[LevelResult]:
    """Measure each level in turn. Stops early (returning what was measured) when the server dies.

    Everything the user gave is checked (UsageError) before the server is contacted."""
    mode = Mode(mode)
    s = dataclasses.replace(s, protocol=transport.parse_protocol(s.protocol))
    stats = transport.connect(s.url, s.protocol, STATS_TIMEOUT_S)
    sets = input_sets(s, repo, input_data)
    results = []

    async def main() -> None:
        target = _target(s, sets)
        try:
            for level in levels:
                r = await _measure(s, target, stats, mode, level, progress)
                results.append(r)
                if r.aborted:
                    break
        finally:
            if target.grpc:
                await target.grpc.close()

    with stats:
        check_server(stats, s.model)
        asyncio.run(main())
    return results

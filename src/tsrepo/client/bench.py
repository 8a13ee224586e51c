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
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsrepo.client import kserve, loadgen, modelinfo
from tsrepo.errors import ClientError, ServerUnreachable, TsrepoError

STAT_KEYS = ("queue", "compute_input", "compute_infer", "compute_output")
DEAD_AFTER_S = 2.0


@dataclass
class Settings:
    url: str
    model: str
    protocol: str = "http"
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
    mode: str  # concurrency | request_rate
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
            self.mode: self.level,
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
    info = modelinfo.load(repo, s.model)
    if info.max_batch_size == 0 and s.batch_size != 1:
        raise TsrepoError(f"{s.model}: max_batch_size is 0, so --batch-size must be 1")
    if info.max_batch_size and s.batch_size > info.max_batch_size:
        raise TsrepoError(f"{s.model}: --batch-size {s.batch_size} exceeds max_batch_size {info.max_batch_size}")
    if input_data is not None:
        data = modelinfo.load_input_data(input_data)
        missing = [t.name for t in info.inputs if t.name not in data]
        if missing:
            raise TsrepoError(f"{input_data}: no data for input(s) {missing}")
        arrays = {}
        for t in info.inputs:
            arr = np.asarray(data[t.name]).astype(t.dtype.numpy)
            if info.max_batch_size and arr.ndim == len(t.dims):
                arr = np.repeat(arr[None], s.batch_size, axis=0)
            arrays[t.name] = arr
        return [arrays]
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


async def _fetch_stats(s: Settings, grpc_stub=None) -> dict | None:
    try:
        if s.protocol == "grpc":
            from google.protobuf import json_format
            from tritonclient.grpc import service_pb2

            resp = await asyncio.wait_for(
                grpc_stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name=s.model)), timeout=5
            )
            doc = json_format.MessageToDict(resp, preserving_proto_field_name=True)
        else:
            host, port = kserve.split_url(s.url)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=2)
            try:
                writer.write(
                    f"GET /v2/models/{s.model}/stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                raw = await asyncio.wait_for(reader.read(), timeout=5)
            finally:
                writer.close()
            head, _, body = raw.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                return None
            doc = json.loads(body)
        stats = doc.get("model_stats", [])
        return _stat_fields(stats[0]) if stats else None
    except (OSError, asyncio.TimeoutError, ValueError, Exception):  # stats are best-effort per window
        return None


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


async def _measure(s: Settings, target: loadgen.Target, mode: str, level: float, progress) -> LevelResult:
    if s.duration and s.duration < 3 * s.window:
        # Three windows at least, or stability cannot be judged.
        s = dataclasses.replace(s, window=s.duration / 3)
    records = loadgen.Records()
    stop = asyncio.Event()
    result = LevelResult(mode, level, s.batch_size)
    perf = time.perf_counter
    if s.requests:
        budget = max(60.0, s.requests / max(level, 1) * 10 if mode == "request_rate" else 600.0)
    else:
        n = math.ceil(s.duration / s.window) if s.duration else s.max_windows
        budget = s.warmup + n * s.window + 2 * s.window
    begin = perf()
    deadline = begin + budget  # every request loop is bounded in time
    if mode == "concurrency":
        load = asyncio.ensure_future(loadgen.closed_loop(target, int(level), records, stop, deadline))
    else:
        load = asyncio.ensure_future(
            loadgen.open_loop(target, level, records, stop, deadline, s.poisson, s.max_outstanding, s.seed)
        )
    grpc_stub = target.grpc.stub if target.grpc else None

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
            before = await _fetch_stats(s, grpc_stub)
            base = records.successes
            while not aborted and perf() < deadline:
                done = records.successes - base
                progress(f"{mode} {level:g}: {done}/{s.requests} requests")
                if done >= s.requests:
                    break
                aborted = await sleep_watching(perf() + 0.1)
            end = perf()
            w = _window(records, start, end, s.batch_size, server_delta(before, await _fetch_stats(s, grpc_stub)))
            result.windows.append(w)
            used = [w]
            result.stable = True
        elif not aborted:
            target_windows = math.ceil(s.duration / s.window) if s.duration else s.max_windows
            start = perf()
            before = await _fetch_stats(s, grpc_stub)
            for k in range(target_windows):
                aborted = await sleep_watching(start + s.window)
                end = perf()
                after = await _fetch_stats(s, grpc_stub)
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
    host, port = kserve.split_url(s.url)
    if s.protocol == "grpc":
        return loadgen.Target("grpc", host, port, [], loadgen.GrpcChannel(f"{host}:{port}", s.model, sets))
    bodies = [kserve.encode_infer(arrays, None, binary_outputs=True) for arrays in sets]
    return loadgen.Target("http", host, port, loadgen.http_requests(host, port, s.model, bodies))


def _check_server(s: Settings) -> None:
    if s.protocol == "http":
        client = kserve.HttpClient(s.url, timeout=10)
        client.wait_ready(10)
        if client.status(f"/v2/models/{s.model}/ready") != 200:
            raise ClientError(f"model {s.model!r} is not ready on {s.url}")
        client.close()
    else:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        try:
            ready = grpcclient.InferenceServerClient(s.url).is_model_ready(s.model)
        except InferenceServerException as e:
            raise ServerUnreachable(f"server not reachable at {s.url} (gRPC): {e.message()}") from None
        if not ready:
            raise ClientError(f"model {s.model!r} is not ready on {s.url}")


def run(
    s: Settings, mode: str, levels: list[float], repo: Path, input_data: Path | None = None, progress=lambda _m: None
) -> list[LevelResult]:
    """Measure each level in turn. Stops early (returning what was measured) when the server dies."""
    _check_server(s)
    sets = input_sets(s, repo, input_data)
    results = []

    async def main() -> None:
        target = _target(s, sets)
        try:
            for level in levels:
                r = await _measure(s, target, mode, level, progress)
                results.append(r)
                if r.aborted:
                    break
        finally:
            if target.grpc:
                await target.grpc.close()

    asyncio.run(main())
    return results

"""The hot loop: KServe v2 requests over raw keep-alive HTTP/1.1 on asyncio, or gRPC over raw HTTP/2
(grpc_wire.py).

Each request body is encoded once (binary tensor extension) and the whole request (line, headers,
body) is kept as one bytes object, so sending costs a single write. Responses are read by
Content-Length and only their status is decoded. Completions are appended in the order they
happen, so the end times are non-decreasing and windows are slices found by bisection.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field

from tsrepo.client import failures, grpc_wire

CONNECT_RETRY_S = 0.05


@dataclass
class Records:
    """Every completed request: end time, latency (s), and whether it succeeded."""

    ends: array = field(default_factory=lambda: array("d"))
    latencies: array = field(default_factory=lambda: array("d"))
    ok: array = field(default_factory=lambda: array("b"))
    errors: Counter = field(default_factory=Counter)
    successes: int = 0
    last_success: float = 0.0
    last_connection_error: float = 0.0

    def add(self, end: float, latency: float, failure: failures.Failure | None = None) -> None:
        self.ends.append(end)
        self.latencies.append(latency)
        self.ok.append(0 if failure else 1)
        if failure is None:
            self.successes += 1
            self.last_success = end
        else:
            self.errors[failure.kind] += 1
            if failure.unreachable:
                self.last_connection_error = end

    def chunk(self, since: int) -> tuple[bytes, bytes, bytes]:
        """The records from index `since` on, as bytes (what a worker process sends its parent)."""
        return self.ends[since:].tobytes(), self.latencies[since:].tobytes(), self.ok[since:].tobytes()

    def extend(self, ends: bytes, latencies: bytes, ok: bytes, errors: dict, last_connection_error: float) -> None:
        """Append a worker's chunk; `errors` is the worker's running count by kind."""
        start = len(self.ok)
        self.ends.frombytes(ends)
        self.latencies.frombytes(latencies)
        self.ok.frombytes(ok)
        for k in range(len(self.ok) - 1, start - 1, -1):
            if self.ok[k]:
                self.last_success = self.ends[k]
                break
        self.successes += sum(self.ok[start:])
        self.errors = Counter(errors)
        self.last_connection_error = last_connection_error


class RecordSet:
    """The records of one or more load processes read as one: each part is in completion order, so a
    window is the union of each part's slice, and latencies merge exactly (no histogram buckets)."""

    def __init__(self, parts: list[Records]):
        self.parts = parts

    @property
    def successes(self) -> int:
        return sum(p.successes for p in self.parts)

    @property
    def last_success(self) -> float:
        return max((p.last_success for p in self.parts), default=0.0)

    @property
    def last_connection_error(self) -> float:
        return max((p.last_connection_error for p in self.parts), default=0.0)

    @property
    def errors(self) -> Counter:
        return sum((p.errors for p in self.parts), Counter())

    def window(self, start: float, end: float):
        """(count, ok mask, latencies of the successes) for requests that ended in [start, end)."""
        import bisect

        import numpy as np

        oks, lats = [], []
        for p in self.parts:
            i, j = bisect.bisect_left(p.ends, start), bisect.bisect_left(p.ends, end)
            oks.append(np.frombuffer(p.ok, dtype=np.int8)[i:j].astype(bool))
            lats.append(np.frombuffer(p.latencies, dtype=np.float64)[i:j])
        ok = np.concatenate(oks) if oks else np.zeros(0, bool)
        lat = np.concatenate(lats) if lats else np.zeros(0)
        return ok.size, ok, lat[ok]


RequestFailed = failures.RequestFailed  # where the load loops and their tests have always found it


def http_requests(host: str, port: int, model: str, bodies: list[tuple[bytes, int]]) -> list[bytes]:
    """Complete HTTP/1.1 requests (line + headers + body), one per pre-encoded body."""
    out = []
    for body, header_len in bodies:
        head = (
            f"POST /v2/models/{model}/infer HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: {header_len}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


class HttpConnection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        try:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        except OSError as e:
            raise RequestFailed(failures.from_exception(e)) from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, raw: bytes) -> None:
        if self.writer is None:
            await self.open()
        try:
            self.writer.write(raw)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            lower = head.lower()
            pos = lower.find(b"\r\ncontent-length:")
            if pos >= 0:
                end = lower.find(b"\r\n", pos + 2)
                length = int(head[pos + 17 : end])
            if length:
                await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as e:
            self.close()
            raise RequestFailed(failures.from_exception(e)) from None
        if status != 200:
            raise RequestFailed(failures.from_http_status(status))


def grpc_requests(model: str, inputs_list: list[dict]) -> list[bytes]:
    """A serialised ModelInferRequest per input set: serialised once, here, not per call."""
    from tritonclient.grpc import service_pb2

    from tsrepo.dtypes import BY_WIRE

    wires = {d.numpy: d.wire for d in BY_WIRE.values()}
    out = []
    for inputs in inputs_list:
        req = service_pb2.ModelInferRequest(model_name=model)
        for name, arr in inputs.items():
            req.inputs.add(name=name, datatype=wires[str(arr.dtype)], shape=list(arr.shape))
            req.raw_input_contents.append(arr.tobytes())  # the data travels here, in input order
        out.append(req.SerializeToString())
    return out


@dataclass
class Target:
    protocol: str
    host: str
    port: int
    raw_requests: list[bytes]  # http
    grpc: grpc_wire.Channel | None = None


async def _one(target: Target, conn: HttpConnection | None, index: int) -> None:
    if target.protocol == "http":
        await conn.send(target.raw_requests[index % len(target.raw_requests)])
    else:
        await target.grpc.send(index)


async def _send_recorded(target: Target, conn: HttpConnection | None, index: int, since: float, records: Records):
    """Send one request and record its latency from `since`; returns the failure, or None."""
    try:
        await _one(target, conn, index)
    except RequestFailed as e:
        t1 = time.perf_counter()
        records.add(t1, t1 - since, e.failure)
        return e.failure
    t1 = time.perf_counter()
    records.add(t1, t1 - since)
    return None


async def closed_loop(target: Target, concurrency: int, records: Records, stop: asyncio.Event, deadline: float) -> None:
    """`concurrency` users, each sending its next request as soon as the previous one returns."""

    async def user(uid: int) -> None:
        conn = HttpConnection(target.host, target.port) if target.protocol == "http" else None
        i = uid
        perf = time.perf_counter
        while not stop.is_set() and perf() < deadline:
            failure = await _send_recorded(target, conn, i, perf(), records)
            if failure is not None and failure.unreachable:
                await asyncio.sleep(CONNECT_RETRY_S)
            i += concurrency
        if conn:
            conn.close()

    await asyncio.gather(*(user(u) for u in range(concurrency)))


async def open_loop(
    target: Target,
    rate: float,
    records: Records,
    stop: asyncio.Event,
    deadline: float,
    poisson: bool = False,
    max_outstanding: int = 1024,
    seed: int = 0,
) -> None:
    """Send at scheduled times regardless of answers; latency counts from the scheduled time, so a
    server that falls behind shows its queueing (no coordinated omission)."""
    rng = random.Random(seed)
    idle: list[HttpConnection] = []
    outstanding = 0
    done = asyncio.Event()
    perf = time.perf_counter

    async def request(scheduled: float, index: int) -> None:
        nonlocal outstanding
        conn = None
        if target.protocol == "http":
            conn = idle.pop() if idle else HttpConnection(target.host, target.port)
        try:
            await _send_recorded(target, conn, index, scheduled, records)
        finally:
            if conn is not None and conn.writer is not None:
                idle.append(conn)
            outstanding -= 1
            if outstanding == 0:
                done.set()

    tasks = set()
    next_time = perf()
    index = 0
    while not stop.is_set() and next_time < deadline:
        now = perf()
        if next_time > now:
            await asyncio.sleep(next_time - now)
            continue
        if outstanding >= max_outstanding:
            # Bounded memory: the request is still due at next_time, and its latency will say so.
            await asyncio.sleep(0.001)
            continue
        outstanding += 1
        done.clear()
        task = asyncio.ensure_future(request(next_time, index))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        index += 1
        gap = rng.expovariate(rate) if poisson else 1.0 / rate
        next_time += gap
    # Let in-flight requests finish (bounded by the deadline's grace period).
    if outstanding:
        try:
            await asyncio.wait_for(done.wait(), timeout=max(0.1, deadline + 5 - perf()))
        except asyncio.TimeoutError:
            for t in list(tasks):
                t.cancel()
    for c in idle:
        c.close()

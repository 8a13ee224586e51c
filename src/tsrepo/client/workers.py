"""Where a level's load runs: in bench's own process, or in N worker processes (`--workers N`).

One Python process sends at most what one core can (about 50 µs of CPU a request over HTTP or gRPC):
where the server has cores or a GPU of its own, a single event loop can saturate before the server
does. Workers split a level (concurrency
c as c//N plus one for the first c%N workers; a request rate as rate/N each, with its own seed), send
their records to the parent every 0.1 s, and the parent reads them as one RecordSet: throughput and
exact latency percentiles over the union, windows cut by end time (perf_counter is CLOCK_MONOTONIC,
one clock for every process on the machine). Each load reports its CPU time so the parent can say
when the client, not the server, is the bottleneck.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from multiprocessing import connection

from tsrepo.client import loadgen
from tsrepo.errors import ClientError

FLUSH_S = 0.1
START_TIMEOUT_S = 120.0


def busy() -> float:
    """Seconds this process's threads have spent on a CPU or runnable and waiting for one (schedstat).

    CPU time alone misses a starved client: on a machine shared with the server, a loop that is
    ready to send but not scheduled, or a thread holding the GIL while the loop waits for it, uses
    less CPU than it asks for, yet holds the load back. Only sleeping (waiting for answers) is idle.
    Falls back to the process's CPU time where /proc has no schedstat.
    """
    total = 0
    try:
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/schedstat", "rb") as fh:
                    on_cpu, waiting = fh.read().split()[:2]
            except FileNotFoundError:  # a thread that just ended
                continue
            total += int(on_cpu) + int(waiting)
    except (OSError, ValueError):
        return time.process_time()
    return total / 1e9


def sample() -> tuple[float, float, float]:
    """(wall, CPU seconds, busy seconds) of the calling load process now."""
    return time.perf_counter(), time.process_time(), busy()


def shares(level: float, n: int, closed: bool) -> list[float]:
    """A level split over n processes; a closed-loop level below n leaves the last workers idle (0)."""
    if not closed:
        return [level / n] * n
    c = int(level)
    return [c // n + (1 if i < c % n else 0) for i in range(n)]


def _start_load(target, s, mode: str, level: float, records, stop, deadline: float, seed: int, n: int):
    if mode == "concurrency":
        return asyncio.ensure_future(loadgen.closed_loop(target, int(level), records, stop, deadline))
    outstanding = max(1, s.max_outstanding // n)
    return asyncio.ensure_future(
        loadgen.open_loop(target, level, records, stop, deadline, s.poisson, outstanding, seed)
    )


class InProcessLoad:
    """The load on bench's own event loop (one process: the default)."""

    def __init__(self, target, settings):
        self.target, self.s = target, settings
        self.records = loadgen.RecordSet([])
        self._future: asyncio.Future | None = None
        self._stop = asyncio.Event()

    async def start(self, mode: str, level: float, deadline: float) -> None:
        self._stop = asyncio.Event()
        part = loadgen.Records()
        self.records = loadgen.RecordSet([part])
        self._future = _start_load(self.target, self.s, mode, level, part, self._stop, deadline, self.s.seed, 1)

    def done(self) -> bool:
        return self._future is not None and self._future.done()

    def cpu(self) -> list[tuple[float, float, float]]:
        """sample() of each load process now (called on the event loop's thread)."""
        return [sample()]

    async def stop(self) -> None:
        self._stop.set()
        try:
            await asyncio.wait_for(self._future, timeout=10)
        except (asyncio.TimeoutError, Exception):
            self._future.cancel()

    async def close(self) -> None:
        if self.target.grpc:
            await self.target.grpc.close()


class WorkerLoad:
    """The load from N spawned processes, each with its own connections and event loop."""

    def __init__(self, settings, sets: list, n: int):
        self.s, self.n = settings, n
        self.conns, self.procs = [], []
        # Fresh interpreters, not fork (which would copy the parent's event loop and gRPC state) and not
        # multiprocessing's spawn (which re-runs the parent's __main__, here the CLI itself).
        for _ in range(n):
            parent, child = socket.socketpair()
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(child.fileno())], pass_fds=[child.fileno()], stdin=subprocess.DEVNULL
            )
            child.close()
            conn = connection.Connection(parent.detach())
            conn.send((settings, sets, n))
            self.conns.append(conn)
            self.procs.append(proc)
        for i, conn in enumerate(self.conns):
            if not conn.poll(START_TIMEOUT_S):
                self._kill()
                raise ClientError(f"bench worker {i + 1} of {n} did not start within {START_TIMEOUT_S:g} s")
            try:
                message = conn.recv()
            except EOFError:
                message = ("failed", "it exited")
            if message[0] != "ready":
                self._kill()
                raise ClientError(f"bench worker {i + 1} of {n} could not start: {message[1]}")
        self.records = loadgen.RecordSet([])
        self._cpu: list[tuple[float, float, float]] = []
        self._reader: asyncio.Future | None = None
        self._active: set[int] = set()

    async def start(self, mode: str, level: float, deadline: float) -> None:
        parts = shares(level, self.n, mode == "concurrency")
        self.records = loadgen.RecordSet([loadgen.Records() for _ in range(self.n)])
        now = (time.perf_counter(), 0.0, 0.0)
        self._cpu = [now] * self.n
        self._active = {i for i, share in enumerate(parts) if share > 0}
        for i in self._active:
            self.conns[i].send(("run", mode, parts[i], deadline, self.s.seed + i))
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        pending = set(self._active)
        while pending:
            conns = [self.conns[i] for i in pending]
            ready = await asyncio.to_thread(connection.wait, conns, FLUSH_S)
            for conn in ready:
                i = self.conns.index(conn)
                try:
                    message = conn.recv()
                except EOFError:  # the worker died: its records so far still count
                    pending.discard(i)
                    continue
                if message[0] == "records":
                    _, ends, lats, oks, errors, last_error, cpu = message
                    self.records.parts[i].extend(ends, lats, oks, errors, last_error)
                    self._cpu[i] = cpu
                elif message[0] == "done":
                    pending.discard(i)

    def done(self) -> bool:
        return self._reader is not None and self._reader.done()

    def cpu(self) -> list[tuple[float, float, float]]:
        return [self._cpu[i] for i in sorted(self._active)]

    async def stop(self) -> None:
        for i in self._active:
            try:
                self.conns[i].send(("stop",))
            except OSError:
                pass
        try:
            await asyncio.wait_for(self._reader, timeout=15)
        except (asyncio.TimeoutError, Exception):
            self._reader.cancel()

    async def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("quit",))
            except OSError:
                pass
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 5)
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        for conn in self.conns:
            conn.close()

    def _kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    proc.kill()


CHILD = "import sys; from tsrepo.client.workers import child_main; child_main(int(sys.argv[1]))"


def child_main(fd: int) -> None:
    """A worker process: settings and input sets arrive first, then run/stop commands per level."""
    conn = connection.Connection(fd)
    try:
        settings, sets, n = conn.recv()
        asyncio.run(_serve(conn, settings, sets, n))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass


async def _serve(conn, s, sets, n: int) -> None:
    from tsrepo.client import bench

    try:
        target = bench.make_target(s, sets)
    except Exception as e:  # reported to the parent, which names the worker
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready",))
    loop = asyncio.get_running_loop()
    try:
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command[0] != "run":
                return
            _, mode, level, deadline, seed = command
            records, stop = loadgen.Records(), asyncio.Event()
            load = _start_load(target, s, mode, level, records, stop, deadline, seed, n)
            stopper = loop.run_in_executor(None, conn.recv)
            sent = 0
            while True:
                done, _ = await asyncio.wait({stopper, load}, timeout=FLUSH_S, return_when=asyncio.FIRST_COMPLETED)
                sent = _flush(conn, records, sent)
                if done:
                    break
            stop.set()
            try:
                await asyncio.wait_for(load, timeout=10)
            except (asyncio.TimeoutError, Exception):
                load.cancel()
            _flush(conn, records, sent)
            conn.send(("done",))
            if (await stopper)[0] == "quit":
                return
    finally:
        if target.grpc:
            await target.grpc.close()


def _flush(conn, records: loadgen.Records, sent: int) -> int:
    count = len(records.ok)
    cpu = sample()
    conn.send(("records", *records.chunk(sent), dict(records.errors), records.last_connection_error, cpu))
    return count

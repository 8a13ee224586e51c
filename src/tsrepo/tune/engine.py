"""Measuring a candidate on a running server: swap its config in, sweep the load, read the levels.

Configs are swapped without a restart through Triton's repository API in explicit model-control
mode: `POST /v2/repository/models/<m>/load` with the candidate's config as a JSON override (the
model's files stay as they are), then the model is polled until it is ready again. A candidate that
is already loaded is not loaded again (a probe that lowers its concurrency, say). The load itself
comes from `tsrepo bench`'s engine: there is no second load generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo.client import bench, transport
from tsrepo.errors import ClientError, ServerRefused, TsrepoError, UsageError
from tsrepo.tune import space as space_mod
from tsrepo.tune.search import INTERRUPTED, Level, Stop, Trial

READY_POLL_S = 0.05
PROBE_MAX_WINDOWS = 3  # the fewest the stability rule reads: a probe is three windows
# A probe's windows are shorter than a sweep's: a probe only steers the climb (the winner comes from
# sweeps), and whatever it measures is measured again by a sweep before it can win. Measured on the tune
# benchmark's examples (windows 0.5 s, three rounds each): quick search took 48.6 -> 37.5 s (resnet_small)
# and 31.5 -> 27.3 s (din) median with probe windows of 0.6 x, its winners as good side by side.
PROBE_WINDOW_FRACTION = 0.6
PROBE_MIN_WINDOW_S = 0.1  # never shorter than this (tune's shortest --window), nor than the window itself


class SwapFailed(ClientError):
    """The server refused a candidate's config (or did not make it ready in time)."""


@dataclass
class Engine:
    """One model on one server, ready to measure candidates."""

    url: str
    model: str
    repo: Path
    base: pb.ModelConfig  # the repository's config: every candidate is applied to it
    served: Callable[[pb.ModelConfig], pb.ModelConfig]  # the config to load (the local engine's shadow form)
    settings: bench.Settings
    deadline: float | None = None  # time.monotonic() when the time budget runs out
    swap_timeout: float = 120.0
    progress: Callable[[str], None] = lambda _m: None
    loaded: space_mod.Candidate | None = None
    swaps: list[float] = field(default_factory=list)  # seconds each swap took, for the report

    def _client(self) -> transport.Transport:
        return transport.connect(self.url, self.settings.protocol, timeout=self.swap_timeout)

    def _wait_ready(self, client: transport.Transport, since: float) -> bool:
        """Poll until the model is ready again after a load; False swap_timeout seconds after `since`."""
        limit = since + self.swap_timeout
        while not client.model_ready(self.model):
            if time.perf_counter() > limit:
                return False
            time.sleep(READY_POLL_S)
        return True

    def swap(self, c: space_mod.Candidate) -> float:
        """Load `c`'s config; returns the seconds until the model was ready again."""
        cfg = self.served(space_mod.apply(self.base, c))
        doc = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
        begin = time.perf_counter()
        with self._client() as client:
            try:
                client.load(self.model, doc)
            except ServerRefused as e:
                self.loaded = None
                raise SwapFailed(f"the server refused {c.describe()}: {e}") from e
            if not self._wait_ready(client, begin):
                raise SwapFailed(f"{self.model} was not ready {self.swap_timeout:g} s after loading {c.key()}")
        seconds = time.perf_counter() - begin
        self.loaded = c
        self.swaps.append(seconds)
        return seconds

    def check_swappable(self) -> None:
        """Before any load is sent: the server lets the repository API load this model with another config
        (explicit model-control mode). Loads the repository's own config, which changes nothing."""
        try:
            self.restore()
        except ServerRefused as e:
            raise UsageError(
                f"{self.url} refused to load {self.model!r} through the repository API ({e}); tune swaps configs"
                " that way: start the server with --model-control-mode=explicit, or tune on the local engine"
            ) from e

    def restore(self) -> None:
        """Load the repository's own config again (after a search, so the server is left as found)."""
        doc = json_format.MessageToDict(self.served(self.base), preserving_proto_field_name=True)
        with self._client() as client:
            client.load(self.model, doc)
            self._wait_ready(client, time.perf_counter())
        # The repository's own config is loaded: a search that starts at it does not load it again.
        self.loaded = space_mod.current_candidate(self.base)

    def measure(self, c: space_mod.Candidate, levels: list[int], kind: str) -> Trial:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise Stop("the time budget ran out")
        begin = time.perf_counter()
        swap_s = 0.0
        try:
            if self.loaded != c:
                self.progress(f"loading {c.key()}")
                swap_s = self.swap(c)
            settings = self.settings
            if not swap_s:
                settings = replace(settings, settle_s=0.0)  # the settle is for a config just swapped in
            if kind == "probe":
                # A probe steers the climb (an unstable one still does): fewer, shorter windows before giving
                # up on stability. Sweeps, which pick the winner, keep the window and every window allowed.
                settings = replace(
                    settings,
                    max_windows=min(settings.max_windows, PROBE_MAX_WINDOWS),
                    window=max(min(settings.window, PROBE_MIN_WINDOW_S), settings.window * PROBE_WINDOW_FRACTION),
                )
            if c.max_batch_size and settings.batch_size > c.max_batch_size:
                return Trial(c, [], kind, swap_s, time.perf_counter() - begin, "batch size above max_batch_size")
            results = bench.run(
                settings,
                bench.Mode.CONCURRENCY,
                [float(n) for n in levels],
                self.repo,
                progress=lambda m: self.progress(f"{c.key()} {kind}: {m}"),
            )
        except SwapFailed as e:
            return Trial(c, [], kind, swap_s, time.perf_counter() - begin, str(e))
        except KeyboardInterrupt:
            raise Stop(INTERRUPTED) from None
        notes = sorted({r.aborted for r in results if r.aborted})
        over = [f"{r.level:g}" for r in results if r.gave_up]
        if over:
            notes.append(f"given up at concurrency {', '.join(over)}: two windows over the p99 budget in p95")
        out = []
        for r in results:
            lat = r.latency_ms
            out.append(
                Level(
                    int(r.level),
                    float(r.throughput),
                    float(lat.get("p50", float("nan"))),
                    float(lat.get("p99", float("nan"))),
                    bool(r.stable) and not r.aborted,
                    int(sum(r.errors.values())),
                )
            )
        note = "; ".join(notes) if notes else ("" if out else "bench measured no level")
        return Trial(c, out, kind, swap_s, time.perf_counter() - begin, note)


def served_config(cfg_dict: dict) -> pb.ModelConfig:
    """A server's /config answer (protobuf field names) as a ModelConfig."""
    try:
        return json_format.ParseDict(cfg_dict, pb.ModelConfig(), ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise TsrepoError(f"the server's model config could not be read: {e}") from e

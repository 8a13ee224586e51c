"""Server metrics during a bench (perf_analyzer's --collect-metrics): Triton's Prometheus endpoint,
scraped at the end of each window.

Only gauges are read (utilisation, memory, power): they describe the moment of the scrape, so one
sample per window and the mean (or max, for memory) over a level's windows is what perf_analyzer
reports too. GPU figures are summed (memory, power) or averaged (utilisation) over the server's GPUs;
without GPUs, Triton's CPU gauges (2.29+, on Linux) stand in.
"""

from __future__ import annotations

import http.client
import math

from tsrepo.client.address import parse_address
from tsrepo.errors import ServerUnreachable

DEFAULT_PORT = 8002
# metric name -> (key in the report, how GPUs combine)
GAUGES = {
    "nv_gpu_utilization": ("gpu_utilization", "mean"),
    "nv_gpu_memory_used_bytes": ("gpu_memory_used_bytes", "sum"),
    "nv_gpu_memory_total_bytes": ("gpu_memory_total_bytes", "sum"),
    "nv_gpu_power_usage": ("gpu_power_w", "sum"),
    "nv_cpu_utilization": ("cpu_utilization", "mean"),
    "nv_cpu_memory_used_bytes": ("cpu_memory_used_bytes", "sum"),
    "nv_cpu_memory_total_bytes": ("cpu_memory_total_bytes", "sum"),
}
# per level: mean over windows, except memory, where the peak is what matters
PEAK_KEYS = {"gpu_memory_used_bytes", "cpu_memory_used_bytes"}


def default_url(server_url: str) -> str:
    """HOST:8002 for the server at HOST:PORT (Triton's default metrics port)."""
    address = parse_address(server_url)
    host = f"[{address.host}]" if address.is_ipv6 else address.host
    return f"{host}:{DEFAULT_PORT}"


def parse(text: str) -> dict[str, float]:
    """The gauges bench reports, from Prometheus text exposition format."""
    values: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name not in GAUGES:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        if math.isfinite(value):
            values.setdefault(name, []).append(value)
    out = {}
    for name, samples in values.items():
        key, how = GAUGES[name]
        out[key] = sum(samples) / len(samples) if how == "mean" else sum(samples)
    return out


class Scraper:
    """GET /metrics on one keep-alive connection (blocking: bench calls it off its event loop)."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.address = parse_address(url, "--metrics-url")
        self.url = f"http://{self.address}/metrics"
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def scrape(self) -> dict[str, float]:
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.address.host, self.address.port, timeout=self.timeout)
            try:
                self._conn.request("GET", "/metrics")
                resp = self._conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if attempt:
                    raise ServerUnreachable(f"metrics endpoint not reachable at {self.url}: {e}") from None
                continue
            if resp.status != 200:
                raise ServerUnreachable(f"metrics endpoint {self.url} answered HTTP {resp.status}")
            return parse(body.decode("utf-8", "replace"))
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def merge(samples: list[dict[str, float]]) -> dict[str, float]:
    """A level's figure from its windows' scrapes: mean, or the peak for memory used."""
    keys = {k for s in samples for k in s}
    out = {}
    for k in sorted(keys):
        vals = [s[k] for s in samples if k in s]
        out[k] = max(vals) if k in PEAK_KEYS else sum(vals) / len(vals)
    return out

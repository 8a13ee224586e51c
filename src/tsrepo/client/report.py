"""Bench reports: a rich table, JSON, perf_analyzer-style CSV, and a PNG plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TextIO

from tsrepo.client.bench import LevelResult, Mode

# perf_analyzer's CSV names where one exists (latencies in microseconds), then tsrepo's extras.
CSV_COLUMNS = [
    "Inferences/Second",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "p50 latency",
    "p90 latency",
    "p95 latency",
    "p99 latency",
    "Avg latency",
    "Max latency",
    "Requests",
    "Errors",
    "Avg Batch Size",
    "Stable",
    "Client CPU %",
    "Client Busy %",
    "Client Saturated",
    # perf_analyzer's --collect-metrics columns (utilisation in percent, power in W, memory in bytes), then
    # the CPU stand-ins Triton reports without GPUs; empty when not collected or not reported.
    "Avg GPU Utilization",
    "Avg GPU Power Usage",
    "Max GPU Memory Usage",
    "Total GPU Memory",
    "Avg CPU Utilization",
    "Max CPU Memory Usage",
]
METRIC_COLUMNS = {
    "Avg GPU Utilization": ("gpu_utilization", 100.0),
    "Avg GPU Power Usage": ("gpu_power_w", 1.0),
    "Max GPU Memory Usage": ("gpu_memory_used_bytes", 1.0),
    "Total GPU Memory": ("gpu_memory_total_bytes", 1.0),
    "Avg CPU Utilization": ("cpu_utilization", 100.0),
    "Max CPU Memory Usage": ("cpu_memory_used_bytes", 1.0),
}
MIB = 1024.0 * 1024.0


def first_column(results: list[LevelResult]) -> str:
    return "Concurrency" if not results or results[0].mode is Mode.CONCURRENCY else "Request Rate"


def csv_rows(results: list[LevelResult]) -> list[dict]:
    rows = []
    for r in results:
        lat, srv = r.latency_ms, r.server
        rows.append(
            {
                first_column(results): f"{r.level:g}",
                "Inferences/Second": f"{r.throughput:.2f}",
                "Server Queue": f"{srv.get('queue_us', 0):.0f}",
                "Server Compute Input": f"{srv.get('compute_input_us', 0):.0f}",
                "Server Compute Infer": f"{srv.get('compute_infer_us', 0):.0f}",
                "Server Compute Output": f"{srv.get('compute_output_us', 0):.0f}",
                **{f"{p} latency": f"{lat.get(p, float('nan')) * 1000:.0f}" for p in ("p50", "p90", "p95", "p99")},
                "Avg latency": f"{lat.get('mean', float('nan')) * 1000:.0f}",
                "Max latency": f"{lat.get('max', float('nan')) * 1000:.0f}",
                "Requests": r.requests,
                "Errors": sum(r.errors.values()),
                "Avg Batch Size": f"{srv.get('avg_batch_size', 0):.2f}",
                "Stable": "yes" if r.stable else "no",
                "Client CPU %": f"{r.client_cpu:.0f}",
                "Client Busy %": f"{r.client_busy:.0f}",
                "Client Saturated": "yes" if r.client_saturated else "no",
                **{
                    col: (f"{r.metrics[key] * scale:.1f}" if key in r.metrics else "")
                    for col, (key, scale) in METRIC_COLUMNS.items()
                },
            }
        )
    return rows


def metric_columns(results: list[LevelResult]) -> list[tuple[str, str, float]]:
    """(header, metrics key, scale) for the table: GPU figures where the server has GPUs, else CPU."""
    keys = {k for r in results for k in r.metrics}
    if "gpu_utilization" in keys:
        cols = [("gpu %", "gpu_utilization", 100.0), ("gpu MiB", "gpu_memory_used_bytes", 1 / MIB)]
        return cols + ([("gpu W", "gpu_power_w", 1.0)] if "gpu_power_w" in keys else [])
    if "cpu_utilization" in keys or "cpu_memory_used_bytes" in keys:
        return [("cpu %", "cpu_utilization", 100.0), ("cpu MiB", "cpu_memory_used_bytes", 1 / MIB)]
    return []


def write_csv(results: list[LevelResult], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=[first_column(results), *CSV_COLUMNS])
    writer.writeheader()
    writer.writerows(csv_rows(results))


def to_json(results: list[LevelResult], settings) -> dict:
    return {
        "model": settings.model,
        "url": settings.url,
        "protocol": settings.protocol,
        "batch_size": settings.batch_size,
        "window_s": settings.window,
        "stability": settings.stability,
        "workers": settings.workers,
        "levels": [r.to_json() for r in results],
    }


def write_json(results: list[LevelResult], settings, path: Path) -> None:
    path.write_text(json.dumps(to_json(results, settings), indent=2) + "\n")


def table(results: list[LevelResult], title: str):
    from rich.table import Table

    t = Table(title=title)
    for col in (
        first_column(results).lower(),
        "infer/s",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "queue µs",
        "infer µs",
        "avg batch",
        "stable",
        "client busy %",
        *(c[0] for c in metric_columns(results)),
    ):
        t.add_column(col, justify="right")
    for r in results:
        lat, srv = r.latency_ms, r.server
        t.add_row(
            f"{r.level:g}",
            f"{r.throughput:.1f}",
            *(f"{lat.get(k, float('nan')):.2f}" for k in ("p50", "p90", "p95", "p99", "max")),
            str(sum(r.errors.values())),
            f"{srv.get('queue_us', 0):.0f}",
            f"{srv.get('compute_infer_us', 0):.0f}",
            f"{srv.get('avg_batch_size', 0):.2f}",
            "yes" if r.stable else "[yellow]no[/]",
            f"[yellow]{r.client_busy:.0f}[/]" if r.client_saturated else f"{r.client_busy:.0f}",
            *(
                f"{r.metrics[key] * scale:.1f}" if key in r.metrics else "-"
                for _, key, scale in metric_columns(results)
            ),
        )
    return t


def plot(results: list[LevelResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r.level for r in results]
    fig, ax1 = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax1.plot(xs, [r.throughput for r in results], "o-", color="tab:blue", label="throughput")
    ax1.set_xlabel(
        first_column(results).lower() + (" (requests/s)" if results and results[0].mode is not Mode.CONCURRENCY else "")
    )
    ax1.set_ylabel("throughput (infer/s)", color="tab:blue")
    ax1.set_ylim(bottom=0)
    ax2 = ax1.twinx()
    ax2.plot(xs, [r.latency_ms.get("p95", float("nan")) for r in results], "s--", color="tab:red", label="p95 latency")
    ax2.set_ylabel("p95 latency (ms)", color="tab:red")
    ax2.set_ylim(bottom=0)
    if len(xs) > 2 and results[0].mode is Mode.CONCURRENCY and max(xs) / max(min(xs), 1) >= 8:
        ax1.set_xscale("log", base=2)
    ax1.set_xticks(xs)
    ax1.set_xticklabels([f"{x:g}" for x in xs])
    ax1.set_title(title)
    ax1.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

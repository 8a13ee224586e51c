"""Whole-process costs of `tsrepo build` on the examples and of the local engine's start-up.

    .venv/bin/python benchmarks/build_and_serve.py [--runs 5]

build: wall time of `tsrepo build tsrepo.toml --out TMP --force` as a new process, median of runs,
and its peak RSS (ru_maxrss). serve: wall time from spawning `tsrepo serve` to /v2/health/ready
answering 200, median of runs, and the resident memory of tritonserver plus its backend stubs once
ready (VmRSS from /proc, summed over the server's process group).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TSREPO = [sys.executable, "-m", "tsrepo"]


def build_once(out: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*TSREPO, "build", str(ROOT / "tsrepo.toml"), "--out", str(out), "--force"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return time.perf_counter() - t0, usage.ru_maxrss / 1024.0  # MiB


def group_rss_mib(pgid: int) -> tuple[float, int]:
    total, count = 0, 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            pid = int(status.parent.name)
            if os.getpgid(pid) != pgid:
                continue
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    count += 1
        except (OSError, ValueError, ProcessLookupError):
            continue
    return total / 1024.0, count


def serve_once(repo: Path) -> tuple[float, float, int]:
    from tsrepo.serve.ports import free_ports

    ports = free_ports()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            *TSREPO,
            "serve",
            "--repo",
            str(repo),
            "--http-port",
            str(ports.http),
            "--grpc-port",
            str(ports.grpc),
            "--metrics-port",
            str(ports.metrics),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{ports.http}/v2/health/ready"
    while True:
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.perf_counter() - t0 > 300:
            raise RuntimeError("tsrepo serve did not become ready")
        time.sleep(0.05)
    ready = time.perf_counter() - t0
    time.sleep(1.0)  # let the stubs settle
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    server_pid = next(
        int(line.split()[0])
        for line in out.splitlines()
        if "bin/tritonserver" in line and f"--http-port={ports.http}" in line
    )
    rss, procs = group_rss_mib(os.getpgid(server_pid))
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return ready, rss, procs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from tsrepo.serve.runner import sigterm_as_interrupt

    sigterm_as_interrupt()  # a SIGTERM (a timeout, a kill) stops the servers it started, as Ctrl-C does
    work = Path(tempfile.mkdtemp(prefix="tsrepo-costs-"))
    builds = [build_once(work / "repo") for _ in range(args.runs)]
    serves = [serve_once(work / "repo") for _ in range(args.runs)]
    print(
        f"build (3 example models), {args.runs} runs: median {statistics.median(b[0] for b in builds):.2f} s"
        f" (min {min(b[0] for b in builds):.2f}, max {max(b[0] for b in builds):.2f}),"
        f" peak RSS {max(b[1] for b in builds):.0f} MiB"
    )
    print(
        f"serve to ready (3 models), {args.runs} runs: median {statistics.median(s[0] for s in serves):.2f} s"
        f" (min {min(s[0] for s in serves):.2f}, max {max(s[0] for s in serves):.2f}),"
        f" RSS of tritonserver + stubs {statistics.median(s[1] for s in serves):.0f} MiB in {serves[0][2]} processes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tsrepo bench against perf_analyzer, side by side on one local Triton, in one run.

Builds the example repository, starts the local engine, then alternates `tsrepo bench` and
perf_analyzer (Triton's C++ load generator, unpacked from the tritonclient==2.40.0 manylinux1 wheel
into benchmarks/.cache; never a project dependency) at each concurrency level, with the same window
length and stability rule. Prints per level the median over rounds of: throughput ratio, p50 ratio,
and each client's CPU seconds per 1,000 requests (the client process's user+system time, over the
requests the server counted during that client's run, warm-up included).

Targets: throughput >= 0.95x, p50 within 10%, CPU per request <= 1.5x perf_analyzer's.

    .venv/bin/python benchmarks/client_vs_perf_analyzer.py [--model din] [--levels 1,4,16] [--rounds 2]
        [--protocol http|grpc] [--workers N]

With --workers N, tsrepo bench sends from N processes; its CPU then counts every worker (they are its
children, reaped before it exits).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"


def perf_analyzer() -> tuple[Path, dict]:
    """Fetch and unpack perf_analyzer; link the two libraries it needs from nvidia_pytriton.libs."""
    binary = CACHE / "tritonclient-2.40.0.data" / "data" / "bin" / "perf_analyzer"
    libdir = CACHE / "lib"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                "manylinux1_x86_64",
                "--python-version",
                "3.11",
                "tritonclient==2.40.0",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
        wheel = next(CACHE.glob("tritonclient-2.40.0-*manylinux1_x86_64.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extract("tritonclient-2.40.0.data/data/bin/perf_analyzer", CACHE)
        binary.chmod(0o755)
    import pytriton

    pylibs = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    libdir.mkdir(exist_ok=True)
    for pattern, name in (("libb64-*.so.0d", "libb64.so.0d"), ("libcudart-*.so.12*", "libcudart.so.12")):
        link = libdir / name
        if not link.exists():
            link.symlink_to(next(pylibs.glob(pattern)))
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    return binary, env


def timed(cmd: list[str], env: dict | None = None) -> tuple[int, float, str]:
    """Run a command; return exit code, its CPU seconds (user + system) and its output."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return proc.returncode, usage.ru_utime + usage.ru_stime, out.read()


def server_requests(http_url: str, model: str) -> int:
    from tsrepo.client import transport

    with transport.connect(http_url) as client:
        stats = client.statistics(model)["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="din")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--stability", type=float, default=15.0, help="percent, for both clients")
    ap.add_argument("--protocol", default="http", choices=["http", "grpc"])
    ap.add_argument("--workers", type=int, default=1, help="tsrepo bench --workers")
    args = ap.parse_args()
    from tsrepo.serve.runner import sigterm_as_interrupt

    sigterm_as_interrupt()  # a SIGTERM (a timeout, a kill) stops the servers it started, as Ctrl-C does
    levels = [int(x) for x in args.levels.split(",")]

    from tsrepo import build
    from tsrepo.serve import local
    from tsrepo.serve.ports import free_ports
    from tsrepo.spec import load_spec

    pa, pa_env = perf_analyzer()
    work = Path(tempfile.mkdtemp(prefix="tsrepo-bench-"))
    repo = work / "model_repository"
    print(f"building the examples into {repo}", file=sys.stderr)
    build.build(load_spec(ROOT / "tsrepo.toml"), repo)
    server = local.start(repo, free_ports())
    url = server.http_url if args.protocol == "http" else server.grpc_url
    print(f"serving on {server.http_url} (gRPC {server.grpc_url})", file=sys.stderr)
    # Both clients send the same inputs: one sample drawn from the signature (ranges respected;
    # perf_analyzer's own random data would overflow the embedding tables).
    import numpy as np

    from tsrepo.client import modelinfo

    sample = modelinfo.load(repo, args.model).sample(np.random.default_rng(0), 1, "mid")
    np.savez(work / "inputs.npz", **{k: v[0] for k, v in sample.items()})
    (work / "inputs.json").write_text(
        json.dumps(
            {"data": [{k: {"content": v[0].ravel().tolist(), "shape": list(v.shape[1:])} for k, v in sample.items()}]}
        )
    )
    rows: dict[int, dict[str, list[float]]] = {lvl: {} for lvl in levels}
    try:
        for rnd in range(args.rounds):
            for lvl in levels:
                for client in ("tsrepo", "perf_analyzer"):
                    before = server_requests(server.http_url, args.model)
                    if client == "tsrepo":
                        out_json = work / f"ts-{lvl}-{rnd}.json"
                        rc, cpu, log = timed(
                            [
                                sys.executable,
                                "-m",
                                "tsrepo",
                                "bench",
                                args.model,
                                "--url",
                                url,
                                "--protocol",
                                args.protocol,
                                "--repo",
                                str(repo),
                                "--concurrency",
                                str(lvl),
                                "--window",
                                str(args.window),
                                "--max-windows",
                                "10",
                                "--stability",
                                str(args.stability),
                                "--warmup",
                                "1",
                                "--input-data",
                                str(work / "inputs.npz"),
                                "--workers",
                                str(args.workers),
                                "--json",
                                str(out_json),
                            ]
                        )
                        level = json.loads(out_json.read_text())["levels"][0]
                        tput, p50 = level["throughput_infer_per_s"], level["latency_ms"]["p50"]
                    else:
                        out_csv = work / f"pa-{lvl}-{rnd}.csv"
                        for _attempt in range(3):  # perf_analyzer writes nothing when it does not stabilise
                            rc, cpu, log = timed(
                                [
                                    str(pa),
                                    "-m",
                                    args.model,
                                    "-u",
                                    url,
                                    "-i",
                                    args.protocol,
                                    "--concurrency-range",
                                    str(lvl),
                                    "--measurement-interval",
                                    str(int(args.window * 1000)),
                                    "--stability-percentage",
                                    f"{args.stability:g}",
                                    "--max-trials",
                                    "10",
                                    "-f",
                                    str(out_csv),
                                    "--input-data",
                                    str(work / "inputs.json"),
                                ],
                                env=pa_env,
                            )
                            if rc == 0:
                                break
                            print(f"perf_analyzer: {log.strip().splitlines()[-1]} (retrying)", file=sys.stderr)
                        with open(out_csv) as fh:
                            row = next(csv.DictReader(fh))
                        tput, p50 = float(row["Inferences/Second"]), float(row["p50 latency"]) / 1000.0
                    sent = server_requests(server.http_url, args.model) - before
                    r = rows[lvl]
                    r.setdefault(f"{client}_tput", []).append(tput)
                    r.setdefault(f"{client}_p50", []).append(p50)
                    r.setdefault(f"{client}_cpu", []).append(cpu / max(sent, 1) * 1000)
                    print(
                        f"round {rnd + 1} c={lvl:<3} {client:<13} {tput:8.1f} infer/s  p50 {p50:6.2f} ms"
                        f"  cpu {cpu:5.2f} s for {sent} requests",
                        file=sys.stderr,
                    )
    finally:
        server.stop()

    med = statistics.median
    print(
        f"\nmodel {args.model}, {args.protocol}, tsrepo --workers {args.workers}, window {args.window:g} s,"
        f" stability {args.stability:g}%,"
        f" median of {args.rounds} rounds\n"
    )
    header = (
        "concurrency",
        "tsrepo infer/s",
        "pa infer/s",
        "tput ratio",
        "tsrepo p50 ms",
        "pa p50 ms",
        "p50 ratio",
        "tsrepo cpu s/1k",
        "pa cpu s/1k",
        "cpu ratio",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    ok = True
    for lvl in levels:
        r = rows[lvl]
        t_ratio = med(r["tsrepo_tput"]) / med(r["perf_analyzer_tput"])
        p_ratio = med(r["tsrepo_p50"]) / med(r["perf_analyzer_p50"])
        c_ratio = med(r["tsrepo_cpu"]) / med(r["perf_analyzer_cpu"])
        ok &= t_ratio >= 0.95 and abs(p_ratio - 1) <= 0.10 and c_ratio <= 1.5
        print(
            f"| {lvl} | {med(r['tsrepo_tput']):.1f} | {med(r['perf_analyzer_tput']):.1f} | {t_ratio:.3f} |"
            f" {med(r['tsrepo_p50']):.2f} | {med(r['perf_analyzer_p50']):.2f} | {p_ratio:.3f} |"
            f" {med(r['tsrepo_cpu']):.3f} | {med(r['perf_analyzer_cpu']):.3f} | {c_ratio:.2f} |"
        )
    print(f"\ntargets (throughput >= 0.95x, p50 within 10%, cpu <= 1.5x): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

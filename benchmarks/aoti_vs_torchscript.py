"""The examples as TorchScript and as AOTInductor packages, served side by side by one local engine.

    .venv/bin/python benchmarks/aoti_vs_torchscript.py [--models din,resnet_small,text_encoder] [--rounds 2]

Each example is built both ways with the full proof (`tsrepo build`'s prepare step: eager == exported
== reloaded, batch safety), both written into one repository as `<name>_ts` and `<name>_aoti`, and
served by one tritonserver. The same load (closed loop, batch 1, concurrency 1 and 8, 3 s windows
until stable) is sent to each in turn, alternating, for `--rounds` rounds; medians are printed with the
AOTI/TorchScript ratios, and the build times (cold compile; a second build hits the compile cache).
Models are served on CPU (KIND_GPU groups become KIND_CPU: an AOTI package compiles for one device).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="din,resnet_small,text_encoder")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--levels", default="1,8")
    args = ap.parse_args()
    from tsrepo.serve.runner import sigterm_as_interrupt

    sigterm_as_interrupt()  # a SIGTERM (a timeout, a kill) stops the servers it started, as Ctrl-C does
    os.environ.setdefault("TSREPO_CACHE_DIR", str(Path(tempfile.mkdtemp(prefix="tsrepo-aoti-cache-"))))

    from tsrepo import build, migrate, repository
    from tsrepo.client import bench
    from tsrepo.errors import TsrepoError
    from tsrepo.serve import local
    from tsrepo.serve.ports import free_ports
    from tsrepo.spec import InstanceGroup, Kind, load_spec

    specs = {m.name: m for m in load_spec(ROOT / "tsrepo.toml").models}
    levels = [float(v) for v in args.levels.split(",")]
    prepared, rows = [], {}
    for name in args.models.split(","):
        cpu = dataclasses.replace(specs[name], instance_groups=(InstanceGroup(Kind.CPU, 1),))
        ts_spec = dataclasses.replace(cpu, name=f"{name}_ts")
        ao_spec, notes = migrate.aoti_variant(dataclasses.replace(cpu, name=f"{name}_aoti"), False)
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        t0 = time.perf_counter()
        ts = build.prepare(ts_spec, None, lambda _m: None)
        ts_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            ao = build.prepare(ao_spec, None, lambda m: print(f"  {m}", file=sys.stderr, flush=True))
        except TsrepoError as e:  # a model that does not export is a row of the answer, not a crash
            print(f"| {name} | does not export: {str(e).splitlines()[0][:200]} |")
            continue
        ao_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        build.prepare(ao_spec, None, lambda _m: None)  # the same model again: a compile-cache hit
        ao_warm = time.perf_counter() - t0
        prepared += [ts, ao]
        rows[name] = dict(ts_build=ts_s, ao_cold=ao_cold, ao_warm=ao_warm, ts_bytes=len(ts.model_bytes),
                          ao_bytes=len(ao.model_bytes), runs={})  # fmt: skip
    repo = Path(tempfile.mkdtemp(prefix="tsrepo-aoti-bench-")) / "repo"
    files = [dataclasses.replace(pm.files(), version=1) for pm in prepared]
    with repository.locked(repo):
        repository.write(repository.plan(repo, files, force=True))
    server = local.start(repo, free_ports(), timeout=300)
    try:
        for _round in range(args.rounds):
            for name in rows:
                for fmt in ("ts", "aoti"):
                    s = bench.Settings(url=server.http_url, model=f"{name}_{fmt}", window=3.0, warmup=1.0,
                                       max_windows=6, stability=0.15)  # fmt: skip
                    for r in bench.run(s, "concurrency", levels, repo):
                        key = (fmt, int(r.level))
                        rows[name]["runs"].setdefault(key, []).append((r.throughput, r.latency_ms.get("p50")))
                        print(f"  {name}_{fmt} c{int(r.level)}: {r.throughput:.0f}/s", file=sys.stderr, flush=True)
    finally:
        server.stop()

    print()
    print(f"CPU, batch 1, closed loop, median of {args.rounds} alternating rounds")
    print("| model | concurrency | TorchScript infer/s | AOTI infer/s | throughput ratio | TS p50 ms | AOTI p50 ms"
          " | p50 ratio |")  # fmt: skip
    print("|---" * 8 + "|")
    for name, row in rows.items():
        for level in levels:
            ts = row["runs"][("ts", int(level))]
            ao = row["runs"][("aoti", int(level))]
            t_ts, t_ao = statistics.median(t for t, _ in ts), statistics.median(t for t, _ in ao)
            p_ts, p_ao = statistics.median(p for _, p in ts), statistics.median(p for _, p in ao)
            print(f"| {name} | {int(level)} | {t_ts:.0f} | {t_ao:.0f} | {t_ao / t_ts:.2f} | {p_ts:.2f} | {p_ao:.2f}"
                  f" | {p_ao / p_ts:.2f} |")  # fmt: skip
    print()
    print("| model | TorchScript build s | AOTI build s (cold compile) | AOTI rebuild s (cache hit) | model.pt KiB"
          " | model.pt2 KiB |")  # fmt: skip
    print("|---" * 6 + "|")
    for name, row in rows.items():
        print(f"| {name} | {row['ts_build']:.1f} | {row['ao_cold']:.1f} | {row['ao_warm']:.1f}"
              f" | {row['ts_bytes'] / 1024:.0f} | {row['ao_bytes'] / 1024:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()

"""tsrepo tune: quick search against brute force, on the same server and grid, side by side.

    .venv/bin/python benchmarks/tune_quick_vs_brute.py [--models din,resnet_small] [--budget-ms 50]

For each model: build the examples once, start one local engine in explicit model-control mode,
run brute force over the grid, then quick search over the same grid (same levels, windows and
stability rule), then measure the spec's own config the same way. Prints, per model: the best
objective each search found, their ratio (target >= 0.95), the wall time of each and their ratio
(target <= 0.10), the winners, and how the winner compares with the spec's default config.
Wall time counts everything a user waits for except the server's start (the same for both):
config swaps, warm-ups, windows and re-measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="din,resnet_small")
    ap.add_argument("--budget-ms", type=float, default=50.0, help="p99 budget for the throughput objective")
    # The grid and levels default to `tsrepo tune`'s own defaults (instances 1-3, max_batch_size powers of
    # two up to the built one, delays 0/100/500/2000 µs, the runner's thread default, levels 1/4/16/32).
    ap.add_argument("--max-instances", type=int, default=3)
    ap.add_argument("--max-batch-size", type=int, default=None, help="default: the built one")
    ap.add_argument("--delays", default="0,100,500,2000")
    ap.add_argument("--threads", default="", help="INTRA_OP_THREAD_COUNT values; default: tune's own choice")
    ap.add_argument("--levels", default="1,4,16,32")
    ap.add_argument("--window", type=float, default=0.5)
    ap.add_argument("--confirm", type=int, default=5, help="side-by-side rounds of the two winners and the default")
    args = ap.parse_args()
    from tsrepo.serve.runner import sigterm_as_interrupt

    sigterm_as_interrupt()  # a SIGTERM (a timeout, a kill) stops the servers it started, as Ctrl-C does

    from tsrepo import build
    from tsrepo.client import modelinfo
    from tsrepo.serve import local, shadow
    from tsrepo.serve.ports import free_ports
    from tsrepo.spec import load_spec
    from tsrepo.tune import Options, _space, crowding, measuring
    from tsrepo.tune.engine import Engine
    from tsrepo.tune.search import INTERRUPTED, Goal, Objective, brute, quick
    from tsrepo.tune.space import current_candidate

    levels = [int(v) for v in args.levels.split(",")]
    delays = tuple(int(v) for v in args.delays.split(","))
    goal = Goal(Objective.THROUGHPUT, args.budget_ms)
    repo = Path(tempfile.mkdtemp(prefix="tsrepo-tune-bench-")) / "repo"
    print(f"building the examples into {repo}", file=sys.stderr, flush=True)
    build.build(load_spec(ROOT / "tsrepo.toml"), repo)
    rows = []
    for model in args.models.split(","):
        info = modelinfo.load(repo, model)
        options = Options(
            model=model,
            repo=repo,
            max_instances=args.max_instances,
            max_batch_size=args.max_batch_size,
            delays_us=delays,
            threads=tuple(int(v) for v in args.threads.split(",") if v),
            levels=tuple(levels),
        )
        notes: list[str] = []
        space = _space(options, info, notes)
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        server = local.start(repo, free_ports(), model_control="explicit", load_models=[model], timeout=240)
        try:
            settings = measuring(  # as `tsrepo tune` measures
                goal, url=server.http_url, model=model, window=args.window, warmup=0.3, max_windows=6, stability=0.10
            )
            engine = Engine(
                server.http_url,
                model,
                repo,
                info.config,
                lambda c: shadow.served_config(c, False),
                settings,
                progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
            )
            start = current_candidate(info.config)
            engine.restore()  # each search starts as `tsrepo tune` does: the repository's config loaded
            t0 = time.perf_counter()
            b = brute(space, goal, engine.measure, levels)
            if b.stopped == INTERRUPTED:  # a search ends cleanly on Ctrl-C / SIGTERM; the benchmark ends too
                raise KeyboardInterrupt
            brute_s = time.perf_counter() - t0
            swaps_brute = list(engine.swaps)
            engine.restore()
            t0 = time.perf_counter()
            crowded = crowding(options, info.config)  # as tune passes it
            q = quick(space, goal, engine.measure, levels, start, crowded=crowded)
            if q.stopped == INTERRUPTED:
                raise KeyboardInterrupt
            quick_s = time.perf_counter() - t0
            # Side by side: each search's winner and the spec's default, measured in turn for
            # --confirm rounds with the same sweep, so that the comparison is not between two
            # measurements taken minutes apart on a shared machine. Each objective is the median.
            # The two winners swap places every round (a config measured right after a swap, or after
            # another config warmed the host, may read differently); each round gives a paired ratio.
            subjects = {"brute": b.winner, "quick": q.winner, "default": None}
            confirmed: dict[str, list[float]] = {k: [] for k in subjects}
            for round_ in range(args.confirm):
                order = ["brute", "quick", "default"] if round_ % 2 == 0 else ["quick", "brute", "default"]
                for name, trial in ((k, subjects[k]) for k in order):
                    candidate = trial.candidate if trial is not None else start
                    if name != "default" and trial is None:
                        continue
                    again = engine.measure(candidate, levels, "confirm")
                    value = goal.value(again.levels)
                    confirmed[name].append(value if value is not None else 0.0)
            default = engine.measure(start, levels, "current")
        finally:
            server.stop()
        med = {k: statistics.median(v) if v else None for k, v in confirmed.items()}
        pairs = [q_ / b_ for q_, b_ in zip(confirmed["quick"], confirmed["brute"], strict=False) if b_ > 0]
        ratio = goal.ratio(q.winner.levels, b.winner.levels) if q.winner and b.winner else None
        vs_default = goal.ratio(q.winner.levels, default.levels) if q.winner else None
        rows.append(
            dict(
                model=model,
                grid=len(space.grid()),
                brute_best=goal.value(b.winner.levels) if b.winner else None,
                quick_best=goal.value(q.winner.levels) if q.winner else None,
                ratio=ratio,
                brute_s=brute_s,
                quick_s=quick_s,
                time_ratio=quick_s / brute_s,
                brute_winner=b.winner.candidate.key() if b.winner else "-",
                quick_winner=q.winner.candidate.key() if q.winner else "-",
                default=start.key(),
                default_value=goal.value(default.levels),
                vs_default=vs_default,
                swap_median=statistics.median(swaps_brute) if swaps_brute else float("nan"),
                quick_trials=len(q.trials),
                brute_trials=len(b.trials),
                side_brute=med["brute"],
                side_quick=med["quick"],
                side_default=med["default"],
                side_ratio=med["quick"] / med["brute"] if med["quick"] and med["brute"] else None,
                paired=statistics.median(pairs) if pairs else None,
                pairs=pairs,
                side_vs_default=med["quick"] / med["default"] if med["quick"] and med["default"] else None,
                side_brute_vs_default=med["brute"] / med["default"] if med["brute"] and med["default"] else None,
            )
        )
        _print_row(rows[-1])  # as soon as a model is done: a long run that is cut short keeps what it measured
        _print_side(rows[-1])
    print()
    print(f"objective: highest throughput with p99 <= {args.budget_ms:g} ms; levels {levels}; window {args.window} s")
    print(
        "| model | grid | brute best infer/s | quick best infer/s | objective ratio | brute s | quick s | time ratio"
        " | brute winner | quick winner | spec default | default infer/s | winner vs default | swap median s |"
    )
    print("|---" * 14 + "|")
    for r in rows:
        _print_row(r)
    print()
    print(
        f"side by side: the winners and the spec's default measured in turn, median of {args.confirm} rounds;"
        " paired: the median of each round's quick/brute"
    )
    print(
        "| model | brute winner | quick winner | default | quick/brute | paired quick/brute (rounds)"
        " | quick/default | brute/default |"
    )
    print("|---" * 8 + "|")
    for r in rows:
        _print_side(r)


def f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _print_row(r: dict) -> None:
    print(
        f"| {r['model']} | {r['grid']} | {f(r['brute_best'], '.1f')} | {f(r['quick_best'], '.1f')}"
        f" | {f(r['ratio'], '.3f')} | {r['brute_s']:.0f} | {r['quick_s']:.0f} | {r['time_ratio']:.3f}"
        f" | {r['brute_winner']} | {r['quick_winner']} | {r['default']} | {f(r['default_value'], '.1f')}"
        f" | {f(r['vs_default'], '.2f')}x | {r['swap_median']:.2f} |",
        flush=True,
    )


def _print_side(r: dict) -> None:
    print(
        f"| {r['model']} | {f(r['side_brute'], '.1f')} | {f(r['side_quick'], '.1f')} | {f(r['side_default'], '.1f')}"
        f" | {f(r['side_ratio'], '.3f')} | {f(r['paired'], '.3f')} ({' '.join(f'{p:.2f}' for p in r['pairs'])})"
        f" | {f(r['side_vs_default'], '.2f')}x"
        f" | {f(r['side_brute_vs_default'], '.2f')}x |",
        flush=True,
    )


if __name__ == "__main__":
    main()

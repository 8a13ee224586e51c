"""What a tuning run produced: every trial, saved as it happens (resumable), and its reports.

The JSON file is rewritten atomically after every trial, so a run stopped at any point (Ctrl-C,
the time budget, a crash) leaves a file `--resume` continues from without measuring a finished
trial again. A resumed run must tune the same model with the same goal and levels: anything else
would mix incomparable measurements, and is refused.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tsrepo.errors import UsageError
from tsrepo.tune.search import Goal, Trial
from tsrepo.tune.space import Candidate

FORMAT = 1


@dataclass
class Run:
    model: str
    settings: dict  # goal, levels, search, space: what must match on resume
    trials: list[Trial] = field(default_factory=list)
    path: Path | None = None
    winner: str | None = None  # candidate key
    verdict: str = ""
    current: dict | None = None  # the repository's own config, measured the same way

    def add(self, trial: Trial) -> None:
        self.trials.append(trial)
        self.save()

    def done(self) -> dict[tuple[Candidate, str], Trial]:
        """What a resumed run need not measure again: per candidate, its probe and its sweep, each the
        union of the measurements recorded under that kind (a probe that halved, a sweep taken level by
        level)."""
        return {key: t for key, t in whole([t for t in self.trials if t.levels]).items() if t.kind in PARTED}

    def to_json(self) -> dict:
        return {
            "tsrepo_tune": FORMAT,
            "model": self.model,
            "settings": self.settings,
            "winner": self.winner,
            "verdict": self.verdict,
            "current": self.current,
            "trials": [t.to_json() for t in self.trials],
        }

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=True) + "\n")
        os.replace(tmp, self.path)


def resume(path: Path, model: str, settings: dict) -> Run:
    """Load an interrupted run; refuse one for another model or goal (the trials would not compare)."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: `--resume` file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"{path}: `--resume` is not a tsrepo tune JSON file ({e})") from None
    if not isinstance(doc, dict) or doc.get("tsrepo_tune") != FORMAT:
        raise UsageError(f"{path}: `--resume` is not a tsrepo tune JSON file (no tsrepo_tune: {FORMAT})")
    if doc.get("model") != model:
        raise UsageError(f"{path}: `--resume` tuned model {doc.get('model')!r}, not {model!r}")
    mismatched = [k for k in settings if doc.get("settings", {}).get(k) != settings[k]]
    if mismatched:
        raise UsageError(
            f"{path}: `--resume` was run with other {', '.join(mismatched)}; resume with the same options"
            " or start a new run"
        )
    try:
        trials = [Trial.from_json(t) for t in doc.get("trials", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path}: `--resume` holds a trial tsrepo cannot read ({e})") from None
    return Run(model, settings, trials, Path(path))


def check_writable(path: Path | None, option: str) -> None:
    """Before any load is sent: the report can be written there."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"`{option}` {path}: is a folder; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"`{option}` {path}: the folder {parent} does not exist")
    from tsrepo.repository import probe_writable

    reason = probe_writable(parent)
    if reason:
        raise UsageError(f"`{option}` {path}: the folder {parent} is not writable ({reason})")


# ---- reports --------------------------------------------------------------------------------------


PARTED = ("probe", "sweep")  # kinds recorded in parts: a probe that lowered its concurrency, a sweep level by level


def whole(trials: list[Trial]) -> dict[tuple[Candidate, str], Trial]:
    """Per (candidate, kind), in the order first seen: a probe's or a sweep's parts merged into one trial;
    any other kind, its latest trial."""
    from tsrepo.tune.search import merge

    out: dict[tuple[Candidate, str], Trial] = {}
    for t in trials:
        key = (t.candidate, t.kind)
        out[key] = merge(out.get(key), t) if t.kind in PARTED else t
    return out


def ranked(goal: Goal, trials: list[Trial]) -> list[Trial]:
    """One row per candidate (its most complete, then latest, measurement), best first. A probe or sweep
    recorded in parts (a probe that lowered its concurrency, a sweep taken level by level) is one row."""
    best: dict[Candidate, Trial] = {}
    order = {"probe": 0, "sweep": 1, "final": 2}
    for t in whole(trials).values():
        kept = best.get(t.candidate)
        if kept is None or order[t.kind] >= order[kept.kind]:
            best[t.candidate] = t
    return sorted(
        best.values(), key=lambda t: (goal.score(t.levels) is not None, goal.score(t.levels) or 0), reverse=True
    )


def table(goal: Goal, trials: list[Trial], winner: str | None, limit: int = 20):
    from rich.table import Table

    t = Table(
        title=f"tune: {goal.objective.value}" + (f", p99 <= {goal.p99_budget_ms:g} ms" if goal.p99_budget_ms else "")
    )
    for col in ("rank", "config", "measured", "best concurrency", "infer/s", "p50 ms", "p99 ms", "meets goal"):
        t.add_column(col, justify="right" if col not in ("config", "measured") else "left")
    for i, trial in enumerate(ranked(goal, trials)[:limit], 1):
        best = goal.best_level(trial.levels)
        mark = " (winner)" if trial.candidate.key() == winner else ""
        t.add_row(
            str(i),
            trial.candidate.key() + mark,
            trial.kind,
            str(best.concurrency) if best else "-",
            f"{best.throughput:.1f}" if best else "-",
            f"{best.p50_ms:.2f}" if best else "-",
            f"{best.p99_ms:.2f}" if best else "-",
            _meets(trial, best is not None),
        )
    return t


def _meets(trial: Trial, met: bool) -> str:
    """The table's "meets goal" cell. A probe's stable windows may meet the goal, but a probe only steers
    the quick search (three short windows at one concurrency): its row says so, since no winner comes from it."""
    if met:
        return "probe only" if trial.kind == "probe" else "yes"
    return "no: " + trial.note if trial.note else "no"


# New columns go at the end: a script reading the CSV by position keeps working.
CSV_COLUMNS = ["config", "kind", "instances", "max_batch_size", "dynamic_batching", "delay_us", "threads",
               "concurrency", "infer_per_s", "p50_ms", "p99_ms", "stable", "errors", "swap_s", "note",
               "measurement"]  # fmt: skip


def write_csv(trials: list[Trial], out: TextIO) -> None:
    """One row per level measured, in the order measured. `measurement` counts the measurements of one
    config at one concurrency within a kind: 2 marks a level measured again (a sweep's second chance for
    an unstable level)."""
    w = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    w.writeheader()
    seen: Counter[tuple[str, str, int]] = Counter()
    for t in trials:
        c = t.candidate
        base = {
            "config": c.key(),
            "kind": t.kind,
            "instances": c.instances,
            "max_batch_size": c.max_batch_size,
            "dynamic_batching": "on" if c.batching else "off",
            "delay_us": c.delay_us,
            "threads": "" if c.threads is None else c.threads,
            "swap_s": f"{t.swap_s:.3f}",
            "note": t.note,
        }
        for lv in t.levels or [None]:
            row = dict(base)
            if lv is not None:
                seen[(c.key(), t.kind, lv.concurrency)] += 1
                row.update(
                    concurrency=lv.concurrency,
                    measurement=seen[(c.key(), t.kind, lv.concurrency)],
                    infer_per_s=f"{lv.throughput:.2f}",
                    p50_ms=f"{lv.p50_ms:.3f}",
                    p99_ms=f"{lv.p99_ms:.3f}",
                    stable="yes" if lv.stable else "no",
                    errors=lv.errors,
                )
            w.writerow(row)


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other beats on both throughput (higher) and p99 (lower), by p99."""
    front = []
    for p99, thr, key in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or thr > front[-1][1]:
            front.append((p99, thr, key))
    return front


def plot(goal: Goal, trials: list[Trial], winner: str | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        (lv.p99_ms, lv.throughput, t.candidate.key())
        for t in trials
        for lv in t.levels
        if lv.counts() and math.isfinite(lv.p99_ms)
    ]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    if points:
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, color="tab:gray", alpha=0.6, label="measured")
        front = pareto(points)
        ax.plot([p[0] for p in front], [p[1] for p in front], "o-", color="tab:blue", label="Pareto front")
        win = [p for p in points if p[2] == winner]
        if win:
            best = max(win, key=lambda p: p[1])
            ax.scatter([best[0]], [best[1]], s=90, marker="*", color="tab:green", zorder=5, label=f"winner {winner}")
    if goal.p99_budget_ms:
        ax.axvline(goal.p99_budget_ms, color="tab:red", linestyle="--", label=f"p99 budget {goal.p99_budget_ms:g} ms")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (infer/s)")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

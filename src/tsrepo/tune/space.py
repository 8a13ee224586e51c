"""The search space: which config values tune may change, as ordered axes, and the configs they make.

A candidate is one point: instance count, max_batch_size, dynamic batching off or on with a queue
delay, and (on a CPU engine) the intra-op thread count. Axes are ordered so that a search can step
to a neighbour (one axis, one step). Points that serve identically are folded into one: with
dynamic batching off the queue delay means nothing, so every "off" point has delay 0.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from tritonclient.grpc import model_config_pb2 as pb

from tsrepo.config import thread_count
from tsrepo.errors import ConfigError, UsageError


@dataclass(frozen=True)
class Candidate:
    instances: int
    max_batch_size: int
    batching: bool
    delay_us: int = 0
    threads: int | None = None  # INTRA_OP_THREAD_COUNT; None leaves the parameter as it is

    def sort_key(self) -> tuple:
        # threads=None (torch's default) sorts first; a plain tuple comparison would compare None with int.
        return (
            self.instances,
            self.max_batch_size,
            self.batching,
            self.delay_us,
            -1 if self.threads is None else self.threads,
        )

    def key(self) -> str:
        """A stable, readable id (JSON keys, table rows)."""
        parts = [f"i{self.instances}", f"b{self.max_batch_size}"]
        parts.append(f"db{self.delay_us}" if self.batching else "nodb")
        if self.threads is not None:
            parts.append(f"t{self.threads}")
        return "-".join(parts)

    def describe(self) -> str:
        batching = f"dynamic batching, delay {self.delay_us} µs" if self.batching else "no dynamic batching"
        threads = f", {self.threads} intra-op threads" if self.threads is not None else ""
        return f"{self.instances} instance(s), max_batch_size {self.max_batch_size}, {batching}{threads}"

    def to_json(self) -> dict:
        return {
            "instances": self.instances,
            "max_batch_size": self.max_batch_size,
            "batching": self.batching,
            "delay_us": self.delay_us,
            "threads": self.threads,
        }

    @classmethod
    def from_json(cls, doc: dict) -> Candidate:
        return cls(
            int(doc["instances"]),
            int(doc["max_batch_size"]),
            bool(doc["batching"]),
            int(doc.get("delay_us", 0)),
            None if doc.get("threads") is None else int(doc["threads"]),
        )


@dataclass(frozen=True)
class Space:
    instances: tuple[int, ...]
    max_batch_sizes: tuple[int, ...]
    delays_us: tuple[int, ...]  # queue delays tried with dynamic batching on
    threads: tuple[int | None, ...] = (None,)
    batching_off: bool = True  # also try dynamic batching off
    # With batching off, max_batch_size only limits what clients may send: off points keep this
    # value (the repository's) instead of multiplying the grid with configs that serve identically.
    off_max_batch_size: int | None = None

    def __post_init__(self):
        for name in ("instances", "max_batch_sizes", "delays_us", "threads"):
            values = getattr(self, name)
            if not values:
                raise UsageError(f"the search space is empty: no value for {name}; widen the options")
            if list(values) != sorted(set(values), key=lambda v: -1 if v is None else v):
                object.__setattr__(self, name, tuple(sorted(set(values), key=lambda v: -1 if v is None else v)))

    def canonical(self, c: Candidate) -> Candidate:
        if c.batching:
            return c
        return replace(c, delay_us=0, max_batch_size=self.off_max_batch_size or c.max_batch_size)

    def grid(self) -> list[Candidate]:
        """Every distinct point (what brute force measures)."""
        points: set[Candidate] = set()
        for inst, mbs, threads in itertools.product(self.instances, self.max_batch_sizes, self.threads):
            if self.batching_off:
                points.add(Candidate(inst, self.off_max_batch_size or mbs, False, 0, threads))
            if mbs > 1:  # a batcher with max_batch_size 1 cannot batch anything
                for delay in self.delays_us:
                    points.add(Candidate(inst, mbs, True, delay, threads))
        return sorted(points, key=Candidate.sort_key)

    def nearest(self, c: Candidate) -> Candidate:
        """The grid point closest to `c` along every axis (a repository's config may lie off the grid: a
        thread count the space does not try, a delay between two of its values). A search starts here."""

        def near(values: tuple, v):
            if v in values:
                return v
            numbers = [x for x in values if x is not None]
            if v is None or not numbers:
                return values[0]
            return min(numbers, key=lambda x: (abs(x - v), x))

        sizes = tuple(m for m in self.max_batch_sizes if m > 1)
        batching = bool(sizes) and (c.batching or not self.batching_off)
        point = Candidate(
            near(self.instances, c.instances),
            near(sizes if batching else self.max_batch_sizes, c.max_batch_size),
            batching,
            near(self.delays_us, c.delay_us) if batching else 0,
            near(self.threads, c.threads),
        )
        point = self.canonical(point)
        return point if self.contains(point) else self.grid()[0]

    def contains(self, c: Candidate) -> bool:
        return c in set(self.grid())

    # The order a climb walks them in: instances (and threads, which share the cores with them) first,
    # because they move throughput most and the batching axes are then walked once, at the instance
    # count that wins; walked last, every batching axis was walked again after instances moved.
    AXES = ("instances", "threads", "batching", "max_batch_size", "delay_us")

    def step(self, c: Candidate, axis: str, direction: int) -> Candidate | None:
        """The point one step from `c` along `axis` (+1 up, -1 down), or None at the edge or where the
        axis means nothing (the batch size or delay of a config without dynamic batching)."""
        if axis == "batching":
            if (direction > 0) == c.batching:
                return None
            if c.batching:
                n = self.canonical(replace(c, batching=False)) if self.batching_off else None
            else:
                sizes = [m for m in self.max_batch_sizes if m > 1]
                n = replace(c, batching=True, max_batch_size=sizes[0], delay_us=self.delays_us[0]) if sizes else None
            return n if n is not None and n in set(self.grid()) else None
        values = {
            "max_batch_size": self.max_batch_sizes,
            "delay_us": self.delays_us,
            "instances": self.instances,
            "threads": self.threads,
        }[axis]
        if axis in ("max_batch_size", "delay_us") and not c.batching:
            return None
        current = getattr(c, axis)
        if current not in values:
            return None
        i = values.index(current) + direction
        if not 0 <= i < len(values):
            return None
        n = self.canonical(replace(c, **{axis: values[i]}))
        return n if n != c and n in set(self.grid()) else None

    def neighbours(self, c: Candidate) -> list[Candidate]:
        """Points one step away along one axis (batching on/off counts as a step)."""
        out: set[Candidate] = set()

        def step(values: tuple, current, field: str) -> None:
            if current not in values:
                return
            i = values.index(current)
            for j in (i - 1, i + 1):
                if 0 <= j < len(values):
                    out.add(replace(c, **{field: values[j]}))

        step(self.instances, c.instances, "instances")
        step(self.max_batch_sizes, c.max_batch_size, "max_batch_size")
        step(self.threads, c.threads, "threads")
        if c.batching:
            step(self.delays_us, c.delay_us, "delay_us")
            if self.batching_off:
                out.add(replace(c, batching=False, delay_us=0))
        else:
            # Turning batching on: at the largest max_batch_size not above this one's (where batching can act).
            sizes = [m for m in self.max_batch_sizes if 1 < m <= max(c.max_batch_size, 2)] or [
                m for m in self.max_batch_sizes if m > 1
            ]
            if sizes:
                out.add(replace(c, batching=True, max_batch_size=sizes[-1], delay_us=self.delays_us[0]))
        grid = set(self.grid())
        found = {self.canonical(n) for n in out} - {c}
        return sorted((n for n in found if n in grid), key=Candidate.sort_key)


def current_candidate(cfg: pb.ModelConfig) -> Candidate:
    """The config a repository ships today, as a point (it may lie outside the space). A thread count the
    libtorch backend would refuse counts as none here: tune refuses it before this for a libtorch model
    (config.thread_count), and another backend's parameter is its own."""
    instances = sum(g.count or 1 for g in cfg.instance_group) or 1
    batching = cfg.HasField("dynamic_batching")
    delay = cfg.dynamic_batching.max_queue_delay_microseconds if batching else 0
    try:
        threads = thread_count(cfg, "INTRA_OP_THREAD_COUNT", "the model's config")
    except ConfigError:
        threads = None
    return Candidate(instances, cfg.max_batch_size, batching, int(delay), threads)


def apply(cfg: pb.ModelConfig, c: Candidate) -> pb.ModelConfig:
    """A copy of `cfg` with the candidate's values: what is loaded on the server for a trial."""
    out = pb.ModelConfig()
    out.CopyFrom(cfg)
    out.max_batch_size = c.max_batch_size
    if out.instance_group:
        # One group keeps its kind and GPUs; more groups are folded into the first (tune sets one count).
        first = pb.ModelInstanceGroup()
        first.CopyFrom(out.instance_group[0])
        del out.instance_group[:]
        first.count = c.instances
        out.instance_group.append(first)
    else:
        out.instance_group.add(kind=pb.ModelInstanceGroup.KIND_AUTO, count=c.instances)
    if c.batching:
        out.dynamic_batching.SetInParent()
        out.dynamic_batching.max_queue_delay_microseconds = c.delay_us
        # A preferred size the new max_batch_size cannot reach would be refused by the server.
        kept = [p for p in out.dynamic_batching.preferred_batch_size if p <= c.max_batch_size]
        del out.dynamic_batching.preferred_batch_size[:]
        out.dynamic_batching.preferred_batch_size.extend(kept)
    else:
        out.ClearField("dynamic_batching")
    if c.threads is not None:
        out.parameters["INTRA_OP_THREAD_COUNT"].string_value = str(c.threads)
    return out

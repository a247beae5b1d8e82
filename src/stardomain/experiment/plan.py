"""An experiment as a plan: units of work, each writing one file, in dependency order.

Why a plan: a unit's result is a pure function of (config, run folder, unit id) and of the files of
the units it waits for, so any worker on any machine that sees the run folder can compute it, in
any order the dependencies allow. Executors (local, Ray, SLURM) only decide *where* units run;
the run folder alone decides *what* is done, so results never depend on who ran what.

A unit's inputs are the checkpoints of the units it waits for; their content hashes are only
known once those exist, so each unit records the hashes it read inside its own output file
(pair curves and BMA rows in their cache key, stars in their ``identity``), and a stale output is
recomputed rather than trusted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from stardomain.errors import StardomainError


@dataclass(frozen=True)
class Unit:
    """One piece of work: ``id`` is unique in its plan, ``output`` is relative to the run folder."""

    id: str
    stage: str
    output: str
    waits_for: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """A file name for this unit's claim and log (ids hold '/' and ':')."""
        return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in self.id)


class Plan:
    """Units in dependency order (every unit after the units it waits for); validated on build."""

    def __init__(self, units: Iterable[Unit]):
        self.units: tuple[Unit, ...] = tuple(units)
        self._by_id: dict[str, Unit] = {}
        slugs: dict[str, str] = {}
        for u in self.units:
            if u.id in self._by_id:
                raise StardomainError(f"plan: unit {u.id} appears twice")
            if u.slug in slugs:
                raise StardomainError(f"plan: units {slugs[u.slug]} and {u.id} would share a claim file")
            missing = [d for d in u.waits_for if d not in self._by_id]
            if missing:
                raise StardomainError(f"plan: unit {u.id} waits for {missing[0]}, which is not planned before it")
            self._by_id[u.id] = u
            slugs[u.slug] = u.id

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units)

    def __getitem__(self, unit_id: str) -> Unit:
        return self._by_id[unit_id]

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self._by_id

    @property
    def stages(self) -> list[str]:
        """Stage names in the order they first appear."""
        return list(dict.fromkeys(u.stage for u in self.units))

    def ready(self, done: set[str], busy: set[str]) -> list[Unit]:
        """Units not done nor busy whose dependencies are all done, in plan order."""
        return [u for u in self.units if u.id not in done and u.id not in busy and all(d in done for d in u.waits_for)]

    def waves(self) -> list[list[Unit]]:
        """Units grouped by dependency depth: wave k needs only waves < k (SLURM submits one array per wave)."""
        depth: dict[str, int] = {}
        for u in self.units:
            depth[u.id] = 1 + max((depth[d] for d in u.waits_for), default=-1)
        out: list[list[Unit]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for u in self.units:
            out[depth[u.id]].append(u)
        return out


@dataclass
class Board:
    """Who is where: done / running / waiting per stage, with an ETA from the seconds units took.

    The ETA assumes ``parallel`` units run at once and that a stage's remaining units cost what its
    finished ones did (a stage with none finished borrows the mean of all finished units).
    """

    plan: Plan
    parallel: int = 1
    done: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    elsewhere: set[str] = field(default_factory=set)  # held by another worker or run; shown as running
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def finish(self, unit_id: str, seconds: float | None) -> None:
        self.running.discard(unit_id)
        self.elsewhere.discard(unit_id)
        self.done.add(unit_id)
        if seconds is not None:
            self.seconds[unit_id] = seconds

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {s: {"done": 0, "running": 0, "waiting": 0} for s in self.plan.stages}
        for u in self.plan:
            state = "done" if u.id in self.done else "running" if u.id in self.running | self.elsewhere else "waiting"
            out[u.stage][state] += 1
        return out

    def eta_seconds(self) -> float | None:
        """Remaining work / parallelism, or None before any unit has been timed."""
        if not self.seconds:
            return None
        overall = sum(self.seconds.values()) / len(self.seconds)
        per_stage: dict[str, list[float]] = {}
        for uid, s in self.seconds.items():
            per_stage.setdefault(self.plan[uid].stage, []).append(s)
        left = 0.0
        for u in self.plan:
            if u.id not in self.done:
                costs = per_stage.get(u.stage)
                left += (sum(costs) / len(costs)) if costs else overall
        return left / max(1, self.parallel)

    def line(self) -> str:
        """One line: 'train 3/8 done, 2 running, 3 waiting | pair 0/12 ... | ETA 1m20s'."""
        parts = [
            f"{s} {c['done']}/{sum(c.values())} done, {c['running']} running, {c['waiting']} waiting" for s, c in self.counts().items()
        ]
        eta = 0.0 if len(self.done) == len(self.plan) else self.eta_seconds()  # all done: nothing left to estimate
        parts.append("ETA " + (format_seconds(eta) if eta is not None else "?"))
        return " | ".join(parts)


def format_seconds(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"

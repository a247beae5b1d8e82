"""``stardomain run --dry-run``: a study's plan (its units by kind, the models and pairs) and an estimate of its time
from the per-unit costs a run folder's events.jsonl measured, without training, evaluating or writing anything.

The plan is :func:`stardomain.experiment.units.build_plan`'s, built on an Experiment that never claims its folder
(no experiment.json, no events, no metrics sinks): what ``run`` would execute, unit id for unit id. A unit counts as
done where its output is already there (checkpoints complete, an evaluation's cache entry present); the estimate
covers the rest, by the mean measured seconds of the same unit where it ran before, else of its stage.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from stardomain.experiment.config import ExperimentConfig

# the kinds a plan's units are counted by, from their stage (any other stage: an evaluation of a study)
KINDS = (("train", "models to train"), ("star", "stars"), ("pairs", "pair evaluations"))
OTHER = "other evaluations"


def kind_of(stage: str) -> str:
    return dict(KINDS).get(stage, OTHER)


def measured_costs(out_dir: str | Path) -> dict[str, list[float]]:
    """Seconds of every unit a run in ``out_dir`` finished (events.jsonl's ``unit`` records with status done), by
    unit id and by ``stage:<stage>``; empty where the folder or the file is absent (nothing is created)."""
    path = Path(out_dir) / "events.jsonl"
    costs: dict[str, list[float]] = {}
    if not path.is_file():
        return costs
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if not isinstance(rec, dict) or rec.get("event") != "unit" or rec.get("status") != "done":
            continue
        seconds = rec.get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            continue
        for key in (str(rec.get("unit")), f"stage:{rec.get('stage')}"):
            costs.setdefault(key, []).append(float(seconds))
    return costs


def dry_run(config: ExperimentConfig, out_dir: str | Path) -> dict[str, Any]:
    """The plan of ``config`` in ``out_dir`` and its estimated time; nothing is trained or written.

    Returns {units: [{id, stage, kind, done, estimate_s}], by_kind: {kind: {total, to_run}}, models, pairs,
    estimate_s (None without any measured cost), unmeasured: [stages of units to run with no measured cost],
    measured (whether events.jsonl held any unit cost)}."""
    from stardomain.checkpoints import store
    from stardomain.experiment.pipeline import Experiment
    from stardomain.experiment.units import build_plan

    quiet = dataclasses.replace(config, logging={})  # metrics sinks would open files in the folder
    exp = Experiment(quiet, out_dir, progress=False)
    planned = build_plan(exp)
    plan, actions = planned.plan, planned.actions
    out = Path(out_dir)
    exists = out.is_dir()
    done: dict[str, bool] = {}
    for unit in plan.units:
        if not exists:
            done[unit.id] = False
        elif unit.stage in ("train", "star"):
            done[unit.id] = bool(actions[unit.id].done())  # complete checkpoints: read only
        else:  # an evaluation: its inputs finished and its cache entry there (the key reads their hashes)
            done[unit.id] = all(done.get(w, False) for w in unit.waits_for) and actions[unit.id].output().is_file()
    costs = measured_costs(out)
    units, unmeasured, total = [], [], 0.0
    for unit in plan.units:
        estimate = None
        if not done[unit.id]:
            seen = costs.get(unit.id) or costs.get(f"stage:{unit.stage}")
            if seen:
                estimate = sum(seen) / len(seen)
                total += estimate
            elif unit.stage not in unmeasured:
                unmeasured.append(unit.stage)
        units.append({"id": unit.id, "stage": unit.stage, "kind": kind_of(unit.stage), "done": done[unit.id], "estimate_s": estimate})
    by_kind: dict[str, dict[str, int]] = {}
    for u in units:
        k = by_kind.setdefault(str(u["kind"]), {"total": 0, "to_run": 0})
        k["total"] += 1
        k["to_run"] += not u["done"]
    models = [
        {"id": u.id, "output": u.output, "kind": "star" if u.stage == "star" else "model", "complete": store.is_complete(out / u.output)}
        for u in plan.units
        if u.stage in ("train", "star")
    ]
    return {
        "out": str(out),
        "units": units,
        "by_kind": by_kind,
        "models": models,
        "pairs": [u["id"] for u in units if u["stage"] == "pairs"],
        "estimate_s": total if costs else None,
        "unmeasured": unmeasured if costs else [],
        "measured": bool(costs),
    }


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plan_lines(summary: dict[str, Any]) -> list[str]:
    """What ``run --dry-run`` prints: the counts by kind, every unit (models, stars, pairs, evaluations) with
    whether it is done, and the estimate (or why there is none)."""
    units, by_kind = summary["units"], summary["by_kind"]
    order = [name for _, name in KINDS] + [OTHER]
    counts = ", ".join(f"{by_kind[k]['to_run']} of {by_kind[k]['total']} {k}" for k in order if k in by_kind)
    lines = [f"plan for {summary['out']}: {len(units)} units ({counts} to run); dry run: nothing trained or written"]
    for kind in order:
        mine = [u for u in units if u["kind"] == kind]
        if not mine:
            continue
        lines.append(f"{kind}:")
        for u in mine:
            cost = f"  ~{_duration(u['estimate_s'])}" if u["estimate_s"] is not None else ""
            lines.append(f"  {u['id']}{'  (done)' if u['done'] else ''}{cost}")
    to_run = sum(1 for u in units if not u["done"])
    if not summary["measured"]:
        lines.append(f"estimate: no measured costs yet ({to_run} units to run; events.jsonl of a run in this folder gives them)")
    else:
        gaps = f"; no measured cost for stage {', '.join(summary['unmeasured'])} (not counted)" if summary["unmeasured"] else ""
        lines.append(
            f"estimate: ~{_duration(summary['estimate_s'])} for {to_run} units to run, one at a time, from measured unit costs{gaps}"
        )
    return lines

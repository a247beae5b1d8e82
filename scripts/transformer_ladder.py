"""The transformer alignment ladder (issue 31): how much of a regular pair's barrier is our matcher's?

For every regular pair of a zoo (disjoint pairs of its sources, seed order), B is aligned to A by one rung of
the ladder after another, each adding a symmetry class to the one before:

    unaligned -> units only (units inside each head; heads fixed) -> + whole heads -> + orthogonal residual maps
    -> + invertible per-head QK/OV maps, and learned matching (STE) alone and with the best class of maps,

for both matchers (weight matching; activation matching on the seeded class-stratified matching sample)

and the pair's linear path is evaluated (``evaluate_pair``: the same curve, points and data as ``stardomain
barrier``): train- and test-loss barriers, the test-accuracy barrier, the l2 distance after alignment, and the wall
time of the alignment and curve. A rung the model cannot take (e.g. orthogonal maps on a LayerNorm model whose gains
cannot be folded) is recorded with its one-line reason instead of numbers.

    python scripts/transformer_ladder.py runs/ladder/vit/sources --pairs 3 --out runs/ladder/vit_ladder.json

Writes the per-pair records (JSON) and prints the table (mean +- sample std over the n pairs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

RUNGS: list[tuple[str, dict[str, Any]]] = [
    ("unaligned", {"align": "none"}),
    ("weight: units only", {"align": "weight", "heads": False}),
    ("weight: + whole heads", {"align": "weight"}),
    ("weight: + orthogonal", {"align": "weight", "symmetry": "orthogonal"}),
    ("weight: + invertible", {"align": "weight", "symmetry": "invertible"}),
    ("weight: + learned (STE)", {"align": "weight", "refine": "ste"}),  # the permutation refined; no maps
    ("weight: + learned + best maps", {"align": "weight", "refine": "ste", "symmetry": "best"}),
    ("activation: units only", {"align": "activation", "heads": False}),
    ("activation: + whole heads", {"align": "activation"}),
    ("activation: + orthogonal", {"align": "activation", "symmetry": "orthogonal"}),
    ("activation: + invertible", {"align": "activation", "symmetry": "invertible"}),
    ("activation: + learned (STE)", {"align": "activation", "refine": "ste"}),
    ("activation: + learned + best maps", {"align": "activation", "refine": "ste", "symmetry": "best"}),
]
METRICS = ("train_loss", "test_loss", "test_acc")


def evaluate(paths: tuple[Path, Path], rung: dict[str, Any], points: int, ste_steps: int) -> dict[str, Any]:
    from stardomain.barrier import evaluate_pair
    from stardomain.checkpoints import store
    from stardomain.checkpoints.provenance import load_recorded_data
    from stardomain.data.protocol import data_example
    from stardomain.errors import StardomainError
    from stardomain.permute import trace_spec

    (a, meta), (b, meta_b) = store.load_state(paths[0]), store.load_state(paths[1])
    model = store.build_model(meta["arch"])
    dataset, _ = load_recorded_data([(paths[0].name, meta), (paths[1].name, meta_b)])
    kwargs = {k: v for k, v in rung.items() if k != "heads"}
    spec = None
    if kwargs["align"] != "none":
        spec = trace_spec(model, example_input=data_example(dataset))
        if rung.get("heads") is False:
            spec = dataclasses.replace(spec, heads={})
    if kwargs.get("refine") == "ste":
        kwargs["refine_options"] = {"steps": ste_steps}
    t0 = time.perf_counter()
    try:
        res = evaluate_pair(a, b, model=model, dataset=dataset, points=points, spec=spec, **kwargs)
    except StardomainError as e:
        return {"refused": str(e)}
    rec = res.record()
    out = {f"{m}_barrier": rec["barriers"][m] for m in METRICS}
    out.update(l2=rec["l2"], l2_aligned=rec["l2_aligned"], seconds=round(time.perf_counter() - t0, 2))
    for key in ("symmetry", "refine"):
        if isinstance(rec.get(key), dict):
            out[key] = {k: v for k, v in rec[key].items() if k not in ("scores", "losses")}
    return out


def summary(rows: list[dict[str, Any]], key: str) -> str:
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return "—"
    sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
    return f"{statistics.fmean(vals):.3f} ± {sd:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("zoo", type=Path, help="folder of the regular models (seed-S.safetensors)")
    ap.add_argument("--pairs", type=int, default=3, help="disjoint pairs of the zoo's first 2*pairs models")
    ap.add_argument("--points", type=int, default=21)
    ap.add_argument("--ste-steps", type=int, default=200)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    models = sorted(args.zoo.glob("seed-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    pairs = [(models[2 * i], models[2 * i + 1]) for i in range(min(args.pairs, len(models) // 2))]
    results: dict[str, Any] = {"zoo": str(args.zoo), "points": args.points, "ste_steps": args.ste_steps, "rungs": {}}
    best: dict[str, tuple[str, float]] = {}  # matcher -> (symmetry class, its mean test-loss barrier)
    for name, rung in RUNGS:
        rung = dict(rung)
        if rung.get("symmetry") == "best":
            rung["symmetry"] = best.get(rung["align"], ("permutation", 0.0))[0]
        rows = [{"a": a.stem, "b": b.stem, **evaluate((a, b), rung, args.points, args.ste_steps)} for a, b in pairs]
        results["rungs"][name] = {"settings": rung, "pairs": rows}
        ok = [r for r in rows if "refused" not in r]
        if rung["align"] != "none" and "refine" not in rung and len(ok) == len(rows):
            mean = statistics.fmean(r["test_loss_barrier"] for r in ok)
            if rung["align"] not in best or mean < best[rung["align"]][1]:
                best[rung["align"]] = (rung.get("symmetry", "permutation"), mean)
        print(
            f"| {name} | {len(ok)} | "
            + " | ".join(summary(ok, f"{m}_barrier") for m in METRICS)
            + f" | {summary(ok, 'l2_aligned')} | {summary(ok, 'seconds')} |"
            + ("" if ok else f" refused: {rows[0]['refused']}"),
            flush=True,
        )
        args.out.write_text(json.dumps(results, indent=2, allow_nan=False))
    results["best_symmetry"] = {matcher: cls for matcher, (cls, _) in best.items()}
    args.out.write_text(json.dumps(results, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()

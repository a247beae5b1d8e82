"""The studies beyond the main barrier groups: the |Z| sweep, BMA, fusion, width/depth and optimizer.

Each function takes the :class:`~stardomain.experiment.pipeline.Experiment` that owns the run
folder (its models, pairs and cache; typed ``Any`` so this module stays below the pipeline) and
returns its section of results.json. The plan (:mod:`.units`) uses the same tags and cache keys,
so a study assembled from unit files finds every model and evaluation it asks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain import store
from stardomain.stats import mean_std, over_stars
from stardomain.train import Recipe

# what results.json keeps of one training setting (width/depth rows, the optimizer study)
SETTING_KEYS = ("tag", "options", "n_sources", "n_held_out", "summary", "pairs", "endpoints", "star_seed", "star_metrics", "regular_metrics",
                "stars", "star_seeds")


def star_records(exp: Any, stars: Sequence[Path]) -> list[dict[str, Any]]:
    """What results.json says of each repeat of a star: its file, recorded seed, repeat index and metrics."""
    metas = [store.read_metadata(p) for p in stars]
    return [{"path": str(p.relative_to(exp.out)), "seed": m["seed"], "repeat": r, "metrics": m["metrics"]}
            for r, (p, m) in enumerate(zip(stars, metas))]


# -- |Z|: one star per number of sources, each against the held-out models ----------------------------------------
def n_sources_study(exp: Any, sources: Sequence[Path], held: Sequence[Path], options: Mapping[str, Any], star_recipe: Recipe,
                    reference: Mapping[str, Any] | None) -> dict[str, Any]:
    rows = []
    for k in sorted(set(exp.cfg.studies.n_sources.sizes)):
        stars = exp.stars(f"main-z{k}", sources[:k], options, star_recipe, mu=exp.cfg.star.mu)
        by_star = [[exp.pair(star, h) for h in held] for star in stars]
        pairs = [p for ps in by_star for p in ps]
        metas = [store.read_metadata(star) for star in stars]
        metrics = list(pairs[0]["barriers"])
        values_by_star = {m: [[p["barriers"][m] for p in ps] for ps in by_star] for m in metrics}
        rows.append({"n_sources": k, "star": str(stars[0].relative_to(exp.out)), "star_seed": metas[0]["seed"],
                     "star_test_acc": metas[0]["metrics"]["test_acc"], "endpoints": exp.endpoints(stars, sources[:k], held),
                     "stars": [str(p.relative_to(exp.out)) for p in stars], "star_seeds": [m["seed"] for m in metas],
                     "stars_test_acc": mean_std([m["metrics"]["test_acc"] for m in metas]),
                     "star_held_out": {m: mean_std([p["barriers"][m] for p in pairs]) for m in metrics},
                     "values": {m: [p["barriers"][m] for p in pairs] for m in metrics},
                     "values_by_star": values_by_star, "over_stars": {m: over_stars(v) for m, v in values_by_star.items()}})
    rr = reference.get("regular-regular") if reference else None
    return {"rows": rows, "regular_regular": rr["barriers"] if rr else None, "regular_regular_values": rr["values"] if rr else None}


# -- BMA: the star domain's posterior against the ensemble of its sources (one unit) ------------------------------
def bma_key(exp: Any, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    """What the BMA study depends on: every checkpoint's content hash and the settings that change it."""
    b, ev = exp.cfg.studies.bma, exp.cfg.eval
    return {"star": store.content_hash(star), "sources": [store.content_hash(p) for p in sources], "max_samples": b.max_samples,
            "seed": b.seed, "bn_samples": ev.bn_samples, "align": ev.align, "subset": exp.cfg.subset,
            "matching_samples": ev.matching_samples if ev.align == "activation" else None, "tests": 1}


def bma_study(exp: Any, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    from stardomain import bma
    from stardomain.permute import align as align_states

    b, ev = exp.cfg.studies.bma, exp.cfg.eval

    def compute() -> dict[str, Any]:
        star_state, meta = store.load_state(star)
        model = store.build_model(meta["arch"]).to(exp.device)
        aligned = []
        for p in sources:
            s, _ = store.load_state(p)
            if ev.align != "none":
                s, _ = align_states(star_state, s, spec=exp.spec(model), method=ev.align, model=model,
                                    x=exp.matching_x(ev.align), seed=0, allow_unpermuted=exp.cfg.allow_unpermuted)
            aligned.append(s)
        out = bma.bma_study(model, star_state, aligned, exp.dataset, max_samples=b.max_samples, seed=b.seed,
                            bn_samples=ev.bn_samples, device=exp.device, return_probs=True)
        probs = {k: out[k].pop("probs") for k in ("star_domain", "ensemble")}
        out["tests"] = bma.posterior_tests(probs["star_domain"], probs["ensemble"], exp.dataset.test_y, seed=b.seed)
        return out

    return exp.cache.get_or_compute("bma", bma_key(exp, star, sources), compute)


# -- fusion: a star trained with mu > 0 as one fused model, per number of sources ---------------------------------
def fusion_tag(exp: Any, k: int) -> str:
    return f"fusion-z{k}-mu{exp.cfg.studies.fusion.mu:g}"


def fusion_key(exp: Any, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    return {"star": store.content_hash(star), "sources": [store.content_hash(p) for p in sources], "subset": exp.cfg.subset}


def fusion_row(exp: Any, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
    """The fused star against its sources and their ensemble (one unit)."""
    from stardomain import bma

    def compute() -> dict[str, Any]:
        star_state, meta = store.load_state(star)
        model = store.build_model(meta["arch"]).to(exp.device)
        states = [store.load_state(p)[0] for p in sources]
        return bma.fusion_row(model, states, star_state, exp.dataset, device=exp.device)

    return exp.cache.get_or_compute("fusion", fusion_key(exp, star, sources), compute)


def fusion_study(exp: Any, sources: Sequence[Path], options: Mapping[str, Any], star_recipe: Recipe) -> dict[str, Any]:
    f = exp.cfg.studies.fusion
    rows = []
    for k in sorted(set(f.sizes)):
        star = exp.star_model(fusion_tag(exp, k), sources[:k], options, star_recipe, mu=f.mu)
        row = fusion_row(exp, star, sources[:k])
        rows.append({"n_sources": k, **row, "star_seed": store.read_metadata(star)["seed"]})
    return {"mu": f.mu, "rows": rows, "repeats": 1}  # one fused star per |Z|: star.repeats does not apply here


# -- other training settings: the main barrier study again, for another width/depth or optimizer ------------------
def setting(exp: Any, tag: str, options: Mapping[str, Any], recipe: Recipe, n_sources: int, n_held: int,
            star_recipe: Recipe) -> dict[str, Any]:
    """The core barrier study for one training setting (its own zoo folder and star)."""
    sources, held = exp.regular_models(tag, options, recipe, n_sources, n_held)
    stars = exp.stars(f"{tag}-z{n_sources}", sources, options, star_recipe, mu=exp.cfg.star.mu)
    star = stars[0]
    groups, record = exp.barrier_groups(sources, held, stars)
    return {"tag": tag, "options": dict(options), "optimizer": recipe.optimizer, "n_sources": n_sources, "n_held_out": n_held,
            "star": str(star.relative_to(exp.out)), "star_seed": store.read_metadata(star)["seed"],
            "star_metrics": store.read_metadata(star)["metrics"],
            "stars": [str(p.relative_to(exp.out)) for p in stars], "star_seeds": [store.read_metadata(p)["seed"] for p in stars],
            "regular_metrics": {k: mean_std([store.read_metadata(p)["metrics"][k] for p in sources]) for k in ("test_acc", "test_loss")},
            "endpoints": exp.endpoints(stars, sources, held), "pairs": record,
            "groups": groups, "summary": exp.summarize_groups(groups)}


def width_depth_tag(i: int, extra: Mapping[str, Any]) -> str:
    return "wd-" + "-".join(f"{k}{v}" for k, v in sorted(extra.items())) if extra else f"wd-{i}"


def width_depth_study(exp: Any, options: Mapping[str, Any], star_recipe: Recipe) -> dict[str, Any]:
    wd = exp.cfg.studies.width_depth
    rows = []
    for i, extra in enumerate(wd.settings):
        res = setting(exp, width_depth_tag(i, extra), {**options, **extra}, exp.recipe, wd.sources, wd.held_out, star_recipe)
        rows.append({k: res[k] for k in SETTING_KEYS})
    return {"rows": rows}


def optimizer_study(exp: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    cfg = exp.cfg
    os_ = cfg.studies.optimizer
    rec = cfg.optimizer_recipe()
    opt_star = cfg.star_recipe(rec, os_.star_recipe)  # never star.recipe: that is the main optimizer's star
    res = setting(exp, f"opt-{os_.optimizer}", options, rec, os_.sources, os_.held_out, opt_star)
    out = {k: res[k] for k in ("optimizer", *SETTING_KEYS)}
    out["recipe"] = rec.to_dict()
    out["star_recipe"] = opt_star.to_dict()
    return out

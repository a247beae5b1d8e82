"""``stardomain run``: every study of the paper from one config, resumable at any point.

Work is split into units whose results live on disk as soon as they exist:
regular models in ``zoo/`` (one folder per training setting), star models in ``stars/``, and
every evaluation (one pair's curve, one BMA study) as a JSON file in ``cache/`` keyed by the
*content hashes* of the checkpoints it used plus the evaluation settings. A re-run therefore
redoes no finished model or evaluation, and half-finished training resumes from its per-epoch
state; since every unit is deterministic, a killed-and-resumed run ends with the same
``results.json`` as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from stardomain import store, zoo
from stardomain.errors import StardomainError
from stardomain.experiment.config import ExperimentConfig
from stardomain.train import Recipe, default_recipe

SCHEMA_VERSION = 1


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean, (sample) standard deviation and count; std is 0 for a single value."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


class Cache:
    """One JSON file per finished evaluation; written atomically, so a kill never leaves half a result."""

    def __init__(self, root: Path):
        self.root = root

    def get_or_compute(self, kind: str, key: Mapping[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.root / kind / f"{_digest(key)}.json"
        if path.exists():
            return json.loads(path.read_text())["value"]
        value = compute()
        store.atomic_write_json(path, {"key": key, "value": value})
        return value


class Experiment:
    """Runs the studies of one :class:`ExperimentConfig` into ``out_dir``."""

    def __init__(self, config: ExperimentConfig, out_dir: str | Path, progress: bool | None = None,
                 log: Callable[[str], None] | None = None):
        from stardomain.device import resolve_device
        from stardomain.data import load_dataset

        self.cfg = config
        self.out = Path(out_dir)
        self.progress = progress
        self.log = log or (lambda msg: None)
        self.device = resolve_device(config.device)
        self.dataset = load_dataset(config.dataset, root=config.data_root, subset=config.subset, seed=config.seed,
                                    image_size=config.image_size)
        base = default_recipe(config.dataset).to_dict()
        self.recipe = Recipe.from_dict({**base, **config.train})
        self.cache = Cache(self.out / "cache")
        self._specs: dict[str, Any] = {}
        self._events = self.out / "events.jsonl"
        from stardomain.experiment.sinks import Sinks

        self.sinks = Sinks(config.logging, self.out, config.name)

    # -- bookkeeping --------------------------------------------------------------------------
    def _claim_folder(self) -> None:
        """Refuse to mix two different experiments in one folder (it would corrupt both)."""
        self.out.mkdir(parents=True, exist_ok=True)
        marker = self.out / "experiment.json"
        mine = self.cfg.to_dict()
        if marker.exists():
            theirs = json.loads(marker.read_text()).get("config")
            comparable = {k: v for k, v in mine.items() if k not in ("studies", "eval", "logging", "device")}
            if {k: theirs.get(k) for k in comparable} != comparable:
                diff = sorted(k for k in comparable if theirs.get(k) != comparable[k])
                raise StardomainError(f"{self.out} already holds a different experiment (differs in: {', '.join(diff)}); use another --out folder")
        store.atomic_write_json(marker, {"config": mine, "schema_version": SCHEMA_VERSION})

    def event(self, kind: str, **fields: Any) -> None:
        """Append a progress event (timings live here, never in results.json, which stays deterministic)."""
        with open(self._events, "a") as f:
            f.write(json.dumps({"time": time.time(), "event": kind, **fields}) + "\n")
        self.sinks.log(kind, fields)
        self.log(f"{kind}: " + ", ".join(f"{k}={v}" for k, v in fields.items()))

    def spec(self, model: torch.nn.Module) -> Any:
        from stardomain.permute import trace_spec

        key = _digest(model.arch)
        if key not in self._specs:
            self._specs[key] = trace_spec(model)
        return self._specs[key]

    # -- regular models ------------------------------------------------------------------------
    def zoo_folder(self, tag: str) -> Path:
        return self.out / "zoo" / tag

    def regular_models(self, tag: str, options: Mapping[str, Any], recipe: Recipe, n_sources: int, n_held: int) -> tuple[list[Path], list[Path]]:
        """Sources use seeds s0..s0+|Z|-1 and held-out models s0+1000.. so growing |Z| never changes H."""
        s0 = self.cfg.seed
        seeds = list(range(s0, s0 + n_sources)) + list(range(s0 + 1000, s0 + 1000 + n_held))
        folder = self.zoo_folder(tag)
        paths = []
        for s in seeds:
            done = store.is_complete(zoo.member_path(folder, s))
            t0 = time.perf_counter()
            paths.append(zoo.train_member(self.dataset, self.cfg.model.name, options, recipe, s, folder, device=self.device,
                                          progress=self.progress, subset=self.cfg.subset))
            if not done:
                self.event("trained", zoo=tag, seed=s, seconds=round(time.perf_counter() - t0, 2))
        return paths[:n_sources], paths[n_sources:]

    # -- star models ---------------------------------------------------------------------------
    def star_model(self, tag: str, sources: Sequence[Path], options: Mapping[str, Any], recipe: Recipe, mu: float) -> Path:
        """Train (or reuse) a star model on ``sources``; its metadata records the sources' hashes."""
        from stardomain import models
        from stardomain.starlight import Starlight, StarlightConfig
        from stardomain.train import final_metrics, seed_everything

        sc = self.cfg.star
        star_recipe = Recipe.from_dict({**recipe.to_dict(), **sc.recipe})
        config = StarlightConfig(recipe=star_recipe, t_sampling=sc.t_sampling, t_beta=tuple(sc.t_beta), pairs_per_step=sc.pairs_per_step,
                                 mu=mu, realign_every=sc.realign_every, matching=sc.matching, bn_samples=self.cfg.eval.bn_samples)
        hashes = [store.content_hash(p) for p in sources]
        seed = self.cfg.seed + 10_000
        ident = {"config": config.to_dict(), "sources": hashes, "seed": seed, "init": sc.init, "model": self.cfg.model.name, "options": dict(options)}
        path = self.out / "stars" / f"{tag}.safetensors"
        if store.is_complete(path):
            meta = store.read_metadata(path)
            if meta.get("identity") == ident:
                return path
            raise StardomainError(f"{path} was trained with other settings; delete it or use another --out folder")
        seed_everything(seed)
        model = models.create(self.cfg.model.name, self.dataset.num_classes, tuple(self.dataset.in_shape), **dict(options))
        states = [store.load_state(p)[0] for p in sources]
        if sc.init == "source":
            model.load_state_dict(states[0])
        t0 = time.perf_counter()
        runner = Starlight(model, states, self.dataset, config, seed=seed, device=self.device)
        result = runner.fit(progress=self.progress, resume_path=self.out / "stars" / f".{tag}.state.safetensors")
        meta = {
            "kind": "star", "arch": model.arch, "dataset": self.dataset.name, "seed": seed, "identity": ident,
            "starlight": config.to_dict(), "sources": [{"path": str(p.relative_to(self.out)), "sha256": h} for p, h in zip(sources, hashes)],
            "metrics": final_metrics(runner.model, self.dataset, device=self.device), "history": result.history,
        }
        out = store.save(path, runner.model, meta)
        self.event("star", tag=tag, n_sources=len(sources), mu=mu, seconds=round(time.perf_counter() - t0, 2))
        return out

    # -- evaluations ---------------------------------------------------------------------------
    def pair(self, path_a: Path, path_b: Path, align: str | None = None) -> dict[str, Any]:
        """Curve, barriers and distances for one pair; B is aligned to A first unless align is none."""
        from stardomain.barrier import barriers, curve
        from stardomain.permute import align as align_states, l2_distance

        ev = self.cfg.eval
        align = ev.align if align is None else align
        key = {"a": store.content_hash(path_a), "b": store.content_hash(path_b), "align": align, "points": ev.points,
               "bn_samples": ev.bn_samples, "eval_train_samples": ev.eval_train_samples, "subset": self.cfg.subset}

        def compute() -> dict[str, Any]:
            state_a, meta = store.load_state(path_a)
            state_b, _ = store.load_state(path_b)
            model = store.build_model(meta["arch"]).to(self.device)
            keys = [k for k, _ in model.named_parameters()]
            out: dict[str, Any] = {"a": path_a.stem, "b": path_b.stem, "l2": l2_distance(state_a, state_b, keys)}
            if align != "none":
                x = self.dataset.train_x[:1024].to(self.device)
                state_b, match = align_states(state_a, state_b, self.spec(model), method=align, model=model, x=x, seed=0)
                out["match_objective"] = float(match.objective)
            out["l2_aligned"] = l2_distance(state_a, state_b, keys)
            c = curve(model, state_a, state_b, self.dataset, num_points=ev.points, bn_samples=ev.bn_samples, device=self.device,
                      eval_train_samples=ev.eval_train_samples)
            out["curve"] = c.to_dict()
            out["barriers"] = barriers(c)
            return out

        return self.cache.get_or_compute("pairs", key, compute)

    def barrier_groups(self, sources: Sequence[Path], held: Sequence[Path], star: Path) -> dict[str, list[dict[str, Any]]]:
        """regular–regular (sources, aligned), star–source and star–held-out (each aligned to the star)."""
        ev = self.cfg.eval
        reg_pairs = list(itertools.islice(itertools.combinations(sources, 2), ev.max_pairs))
        return {
            "regular-regular": [self.pair(a, b) for a, b in reg_pairs],
            "star-source": [self.pair(star, s) for s in sources[: ev.max_pairs]],
            "star-held-out": [self.pair(star, h) for h in held],
        }

    @staticmethod
    def summarize_groups(groups: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
        out = {}
        for name, pairs in groups.items():
            if not pairs:
                continue
            metrics = pairs[0]["barriers"].keys()
            out[name] = {
                "n_pairs": len(pairs),
                "barriers": {m: mean_std([p["barriers"][m] for p in pairs]) for m in metrics},
                "l2": mean_std([p["l2"] for p in pairs]),
                "l2_aligned": mean_std([p["l2_aligned"] for p in pairs]),
            }
        return out

    def setting(self, tag: str, options: Mapping[str, Any], recipe: Recipe, n_sources: int, n_held: int) -> dict[str, Any]:
        """The core barrier study for one training setting (used by barriers, width_depth, optimizer)."""
        sources, held = self.regular_models(tag, options, recipe, n_sources, n_held)
        star = self.star_model(f"{tag}-z{n_sources}", sources, options, recipe, mu=self.cfg.star.mu)
        groups = self.barrier_groups(sources, held, star)
        return {"tag": tag, "options": dict(options), "optimizer": recipe.optimizer, "n_sources": n_sources, "n_held_out": n_held,
                "star": str(star.relative_to(self.out)), "star_metrics": store.read_metadata(star)["metrics"],
                "regular_metrics": {k: mean_std([store.read_metadata(p)["metrics"][k] for p in sources]) for k in ("test_acc", "test_loss")},
                "groups": groups, "summary": self.summarize_groups(groups)}

    # -- the studies -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self._claim_folder()
        cfg, st = self.cfg, self.cfg.studies
        options = dict(cfg.model.options)
        results: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": cfg.name,
            "config": cfg.to_dict(),
            "dataset": {"name": self.dataset.name, "train": len(self.dataset.train_y), "test": len(self.dataset.test_y),
                        "in_shape": list(self.dataset.in_shape), "num_classes": self.dataset.num_classes},
            "recipe": self.recipe.to_dict(),
        }
        self.event("start", name=cfg.name, device=self.device)
        # all sources any study needs, then the held-out models
        sources, held = self.regular_models("main", options, self.recipe, cfg.zoo_size, cfg.held_out)
        z = sources[: cfg.sources]
        results["models"] = {"sources": [p.stem for p in z], "held_out": [p.stem for p in held],
                             "regular_test_acc": mean_std([store.read_metadata(p)["metrics"]["test_acc"] for p in sources])}
        main_star = self.star_model(f"main-z{cfg.sources}", z, options, self.recipe, mu=cfg.star.mu)
        results["models"]["star"] = str(main_star.relative_to(self.out))
        results["models"]["star_metrics"] = store.read_metadata(main_star)["metrics"]
        groups = None
        if st.barriers or st.distances:
            groups = self.barrier_groups(z, held, main_star)
            summary = self.summarize_groups(groups)
        if st.barriers:
            results["barriers"] = {"groups": groups, "summary": summary}
        if st.distances:
            results["distances"] = {name: {"l2": s["l2"], "l2_aligned": s["l2_aligned"], "n_pairs": s["n_pairs"]} for name, s in summary.items()}
        if st.n_sources:
            results["n_sources"] = self.n_sources_study(sources, held, options, summary if groups else None)
        if st.bma:
            results["bma"] = self.bma_study(main_star, z)
        if st.fusion:
            results["fusion"] = self.fusion_study(sources, options)
        if st.width_depth:
            wd = st.width_depth
            rows = []
            for i, extra in enumerate(wd.settings):
                opts = {**options, **extra}
                tag = "wd-" + "-".join(f"{k}{v}" for k, v in sorted(extra.items())) if extra else f"wd-{i}"
                res = self.setting(tag, opts, self.recipe, wd.sources, wd.held_out)
                rows.append({k: res[k] for k in ("tag", "options", "n_sources", "n_held_out", "summary", "star_metrics", "regular_metrics")})
            results["width_depth"] = {"rows": rows}
        if st.optimizer:
            os_ = st.optimizer
            base = default_recipe(cfg.dataset, os_.optimizer).to_dict()
            rec = Recipe.from_dict({**base, **{k: v for k, v in cfg.train.items() if k not in ("optimizer", "lr", "nesterov")}, **os_.recipe})
            res = self.setting(f"opt-{os_.optimizer}", options, rec, os_.sources, os_.held_out)
            results["optimizer"] = {k: res[k] for k in ("tag", "optimizer", "n_sources", "n_held_out", "summary", "star_metrics", "regular_metrics")}
            results["optimizer"]["recipe"] = rec.to_dict()
        self.event("done")
        self.sinks.close()
        return results

    def n_sources_study(self, sources: Sequence[Path], held: Sequence[Path], options: Mapping[str, Any],
                        reference: Mapping[str, Any] | None) -> dict[str, Any]:
        rows = []
        for k in sorted(set(self.cfg.studies.n_sources.sizes)):
            star = self.star_model(f"main-z{k}", sources[:k], options, self.recipe, mu=self.cfg.star.mu)
            pairs = [self.pair(star, h) for h in held]
            rows.append({"n_sources": k, "star": str(star.relative_to(self.out)),
                         "star_test_acc": store.read_metadata(star)["metrics"]["test_acc"],
                         "star_held_out": {m: mean_std([p["barriers"][m] for p in pairs]) for m in pairs[0]["barriers"]}})
        ref = reference["regular-regular"]["barriers"] if reference and "regular-regular" in reference else None
        return {"rows": rows, "regular_regular": ref}

    def bma_study(self, star: Path, sources: Sequence[Path]) -> dict[str, Any]:
        from stardomain import bma
        from stardomain.permute import align as align_states

        b = self.cfg.studies.bma
        key = {"star": store.content_hash(star), "sources": [store.content_hash(p) for p in sources], "max_samples": b.max_samples,
               "seed": b.seed, "bn_samples": self.cfg.eval.bn_samples, "align": self.cfg.eval.align, "subset": self.cfg.subset}

        def compute() -> dict[str, Any]:
            star_state, meta = store.load_state(star)
            model = store.build_model(meta["arch"]).to(self.device)
            aligned = []
            for p in sources:
                s, _ = store.load_state(p)
                if self.cfg.eval.align != "none":
                    s, _ = align_states(star_state, s, self.spec(model), method=self.cfg.eval.align, model=model,
                                        x=self.dataset.train_x[:1024].to(self.device), seed=0)
                aligned.append(s)
            return bma.bma_study(model, star_state, aligned, self.dataset, max_samples=b.max_samples, seed=b.seed,
                                 bn_samples=self.cfg.eval.bn_samples, device=self.device)

        return self.cache.get_or_compute("bma", key, compute)

    def fusion_study(self, sources: Sequence[Path], options: Mapping[str, Any]) -> dict[str, Any]:
        from stardomain import bma

        f = self.cfg.studies.fusion
        rows = []
        for k in sorted(set(f.sizes)):
            star = self.star_model(f"fusion-z{k}-mu{f.mu:g}", sources[:k], options, self.recipe, mu=f.mu)
            key = {"star": store.content_hash(star), "sources": [store.content_hash(p) for p in sources[:k]], "subset": self.cfg.subset}

            def compute(star: Path = star, k: int = k) -> dict[str, Any]:
                star_state, meta = store.load_state(star)
                model = store.build_model(meta["arch"]).to(self.device)
                states = [store.load_state(p)[0] for p in sources[:k]]
                return bma.fusion_row(model, states, star_state, self.dataset, device=self.device)

            row = self.cache.get_or_compute("fusion", key, compute)
            rows.append({"n_sources": k, **row})
        return {"mu": f.mu, "rows": rows}


def run_experiment(config: ExperimentConfig, out_dir: str | Path, progress: bool | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every study, then write results.json, report.md and the figures (all atomically)."""
    from stardomain.report import write_report

    exp = Experiment(config, out_dir, progress=progress, log=log)
    results = exp.run()
    store.atomic_write_json(Path(out_dir) / "results.json", results)
    write_report(results, Path(out_dir))
    return results

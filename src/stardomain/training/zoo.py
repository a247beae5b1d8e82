"""Model zoos: folders of independently trained solutions (sources Z and held-out models H).

A zoo member is ``seed-<s>.safetensors`` + ``.json``. Training a zoo is idempotent: members
already complete with the same configuration are skipped, a member with a *different*
configuration is an error (never silently mixed or overwritten), and an interrupted member
resumes from its per-epoch training state (``.seed-<s>.train-state.*``, hidden from discovery).

Every member records its ``role`` (``source`` or ``held_out``) and the exact ``data`` it was
trained on, so :func:`load_zoo` can hand out exactly the sources: the direct children of one
folder, ordered by seed, never mixed with held-out models, other recipes, data or architectures.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import torch

from stardomain._util.progress import ProgressConfig
from stardomain.checkpoints import store
from stardomain.checkpoints.meta import Checkpoint, read_checkpoint
from stardomain.errors import StardomainError
from stardomain.training import batched as train_batched
from stardomain.training.loop import Recipe, final_metrics, train_model
from stardomain.training.state import remove_training_state

if TYPE_CHECKING:
    from stardomain.data.protocol import Data


def member_path(out_dir: str | Path, seed: int) -> Path:
    return Path(out_dir) / f"seed-{seed}.safetensors"


ROLES = ("source", "held_out")


def run_config(
    dataset: str, model: str, options: Mapping[str, Any], recipe: Recipe, subset: int | None = None, subset_seed: int | None = None
) -> dict[str, Any]:
    """What makes two training runs 'the same run' (everything but the seed); names are registry keys."""
    from stardomain import models

    name = models.canonical_name(model)
    options = {"init": models.DEFAULT_INIT, **dict(options)}  # the init is always explicit: it changes the run
    config = {"dataset": dataset, "model": name, "options": dict(sorted(options.items())), "recipe": recipe.to_dict(), "subset": subset}
    if subset is not None:
        config["subset_seed"] = subset_seed  # two subsets of one size are different runs
    return config


def _config_of(ck: Checkpoint) -> dict[str, Any]:
    """A member's run config; one recorded before ``init`` existed gets the init it was trained from."""
    from stardomain import models

    config = dict(ck.config or {})
    if "options" in config and "init" not in config["options"]:
        config["options"] = dict(sorted(models.with_init(str(config.get("model")), config["options"]).items()))
    return config


def check_member(path: Path, config: Mapping[str, Any], role: str | None = None) -> bool:
    """True when ``path`` is a complete member trained with ``config`` (and ``role``); raises if it is a different run."""
    if not store.is_complete(path):
        return False
    ck = read_checkpoint(path)
    existing = _config_of(ck)
    if existing != dict(config):
        there, asked = _difference(existing, dict(config))
        raise StardomainError(
            f"{path} already holds a different run ({there} there, {asked} requested); choose another --out folder or delete it"
        )
    if role is not None and ck.role != role:
        have = ck.role or "no recorded role (an older stardomain)"
        raise StardomainError(f"{path} already holds a model with {have}, not a {role} model; choose another --out folder or delete it")
    return True


def dataset_record(dataset: Data, subset: int | None = None) -> dict[str, Any]:
    """The data record of a training set (``Dataset.record``), cross-checked against a caller's ``subset``."""
    if hasattr(dataset, "record"):
        data = dict(dataset.record())
    else:  # a duck-typed dataset: all we know is its name and the caller's word
        data = {"name": dataset.name, "subset": subset, "subset_seed": None, "image_size": None}
    if data["subset"] is None and subset is not None:
        data["subset"] = int(subset)  # a hand-built Dataset of an unknown draw: the seed stays unknown
    if subset is not None and data["subset"] != subset:
        raise StardomainError(
            f"subset={subset} but the dataset was loaded with subset={data['subset']}; pass the subset to load_dataset only"
        )
    return data


def train_member(
    dataset: Data,
    model_name: str,
    options: Mapping[str, Any],
    recipe: Recipe,
    seed: int,
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    progress: bool | ProgressConfig | None = None,
    subset: int | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    role: str = "source",
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> Path:
    """Train one model (or skip it if already complete) and write its checkpoint.

    ``role`` says what the model is for (``source`` or ``held_out``); it is recorded with the
    data record of ``dataset`` (name, subset and its seed, image size), which later stages rebuild.
    ``subset`` is only a cross-check: the subset is the one ``dataset`` was loaded with.
    ``on_epoch(seed, record)`` is called after each epoch trained here (its history record).
    """
    config, data = member_config(dataset, model_name, options, recipe, subset, role)
    path = member_path(out_dir, seed)
    if check_member(path, config, role):
        return path
    model = initial_model(dataset, config, seed)
    resume = Path(out_dir) / f".seed-{seed}.train-state.safetensors"
    t0 = time.perf_counter()
    each = None if on_epoch is None else functools.partial(on_epoch, seed)
    history = train_model(model, dataset, recipe, seed=seed, device=device, progress=progress, resume_path=resume, on_epoch=each)
    meta = member_meta(model, dataset, config, data, recipe, seed, role, history, time.perf_counter() - t0, device)
    meta.update(dict(extra_meta or {}))
    return store.save(path, model, meta)


def member_config(
    dataset: Data, model_name: str, options: Mapping[str, Any], recipe: Recipe, subset: int | None, role: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run config, data record) of a member: what must match for an existing member to be reused."""
    if role not in ROLES:
        raise StardomainError(f"role {role!r}: use one of {', '.join(ROLES)}")
    data = dataset_record(dataset, subset)
    config = run_config(dataset.name, model_name, options, recipe, data["subset"], data["subset_seed"])
    if getattr(dataset, "name", None) == "imagefolder":
        # one name, many folders: the image size and class list tell two image-folder runs apart
        config["data"] = {"image_size": int(dataset.in_shape[-1]), "classes": list(getattr(dataset, "classes", None) or [])}
    return config, data


def initial_model(dataset: Data, config: Mapping[str, Any], seed: int) -> torch.nn.Module:
    """Run ``seed``'s model at initialisation (global RNG seeded first, as every member is built)."""
    from stardomain import models
    from stardomain.training.loop import seed_everything

    seed_everything(seed)
    return models.create(config["model"], dataset.num_classes, tuple(dataset.in_shape), **dict(config["options"]))


def member_meta(
    model: torch.nn.Module,
    dataset: Data,
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    recipe: Recipe,
    seed: int,
    role: str,
    history: list[dict[str, Any]],
    seconds: float,
    device: str | torch.device = "cpu",
    metrics: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """A trained member's metadata, however it was trained; final metrics computed here unless
    ``metrics`` brings them (a batched group measures all its members in one pass)."""
    return {
        "kind": "regular",
        "role": role,
        "arch": model.arch,
        "config": dict(config),
        "dataset": dataset.name,
        "data": dict(data),
        "seed": seed,
        "recipe": recipe.to_dict(),
        "metrics": dict(metrics) if metrics is not None else final_metrics(model, dataset, device=device),
        "history": history,
        "train_seconds": round(seconds, 3),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),  # CPU threads it was computed with: weights depend on it (to ~1e-7)
    }


def train_zoo(
    dataset: Data,
    model_name: str,
    options: Mapping[str, Any],
    recipe: Recipe,
    seeds: Iterable[int],
    out_dir: str | Path,
    device: str | torch.device = "cpu",
    progress: bool | ProgressConfig | None = None,
    subset: int | None = None,
    on_member: Callable[[Path], None] | None = None,
    role: str = "source",
    batch_models: int = 1,
    notify: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[Path]:
    """Train every seed into ``out_dir`` as ``role`` models; complete members are skipped. Returns the checkpoint
    paths; each member's metadata (:func:`load_zoo`) holds its final ``metrics``, accuracies as fractions in [0, 1].

    ``batch_models`` M > 1 trains the missing members M at a time in one vmapped pass
    (:mod:`stardomain.training.batched`; same weights as one at a time, to float rounding).
    Where a model cannot be batched, ``notify`` (default: a logged warning) gets one line
    saying why and the members are trained one at a time. ``on_epoch(seed, record)`` is called
    after each epoch of each member trained here (batched too).
    """
    if batch_models < 1:
        raise StardomainError(f"batch_models must be >= 1 (got {batch_models})")
    if batch_models > 1:
        return train_zoo_batched(
            dataset,
            model_name,
            options,
            recipe,
            list(seeds),
            out_dir,
            batch_models,
            device=device,
            progress=progress,
            subset=subset,
            on_member=on_member,
            role=role,
            notify=notify,
            on_epoch=on_epoch,
        )
    paths = []
    for seed in seeds:
        p = train_member(
            dataset,
            model_name,
            options,
            recipe,
            seed,
            out_dir,
            device=device,
            progress=progress,
            subset=subset,
            role=role,
            on_epoch=on_epoch,
        )
        paths.append(p)
        if on_member is not None:
            on_member(p)
    return paths


Member = tuple[Path, dict[str, torch.Tensor], dict[str, Any]]


def checkpoints_in(zoo_dir: str | Path) -> list[Path]:
    """Complete checkpoints directly in ``zoo_dir`` (subfolders are other zoos, never searched)."""
    return store.find_checkpoints(zoo_dir, recursive=False)


def seed_list(seeds: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 7]`` -> ``seed-0..3, 7``: which models, in one short phrase."""
    seeds = sorted(int(s) for s in seeds)
    runs: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        runs.append(str(seeds[i]) if i == j else f"{seeds[i]}..{seeds[j]}")
        i = j + 1
    return "seed-" + ", ".join(runs)


def _identity(ck: Checkpoint) -> list[tuple[str, Any]]:
    """(what, value) pairs that must agree across one set of models, in the order differences are reported."""
    from stardomain.checkpoints.provenance import recorded_data

    return [
        ("roles", ck.role),
        ("architectures", ck.arch.record),
        ("datasets", ck.dataset),
        ("training data", recorded_data(ck.raw)),
        ("recipes", ck.recipe),
        ("model options", _config_of(ck).get("options")),
    ]


def _difference(a: Any, b: Any) -> tuple[str, str]:
    """The first differing entry of two values, as two short phrases (``optimizer sgd`` / ``optimizer adam``)."""
    from stardomain._util.diff import difference_phrases

    return difference_phrases(a, b) or (str(a), str(b))


def check_one_kind(label: str, members: Sequence[Checkpoint]) -> None:
    """Refuse a set of models that mixes roles, architectures, data, recipes or options, naming the difference."""
    import json

    for i, (what, _) in enumerate(_identity(members[0])):
        groups: dict[str, list[int]] = {}
        values: dict[str, Any] = {}
        for ck in members:
            value = _identity(ck)[i][1]
            key = json.dumps(value, sort_keys=True, default=str)
            groups.setdefault(key, []).append(_seed_key(ck))
            values[key] = value
        if len(groups) > 1:
            (ka, sa), (kb, sb) = sorted(groups.items(), key=lambda kv: min(kv[1]))[:2]
            da, db = _difference(values[ka], values[kb])
            raise StardomainError(
                f"{label} mixes {what}: {da} ({seed_list(sa)}) vs {db} ({seed_list(sb)}); keep one kind of model per folder"
            )
    seen: dict[int, Path] = {}
    for ck in members:
        if ck.seed is None:  # a save_pretrained folder records no seed: its path tells it apart
            continue
        s = ck.seed
        if s in seen:
            raise StardomainError(f"{label} holds two models of seed {s} ({seen[s].name}, {ck.path.name}); keep one")
        seen[s] = ck.path


def _seed_key(ck: Checkpoint) -> int:
    """Where a member sorts and how a message names it: its seed (-1 when none is recorded: save_pretrained folders)."""
    return -1 if ck.seed is None else ck.seed


def zoo_checkpoints(zoo_dir: str | Path, role: str | None = "source", kind: str | None = "regular") -> list[Checkpoint]:
    """The typed metadata of the ``role`` members directly in ``zoo_dir``, ordered by seed, checked to be one kind.

    ``role=None`` takes every member but still refuses a mix of roles. Models without a
    recorded role (older versions) are refused: nothing says whether they are held out.
    """
    root = Path(zoo_dir)
    found = [read_checkpoint(p) for p in checkpoints_in(root)]
    found = [ck for ck in found if kind is None or ck.kind == kind]
    roles: list[str] = []
    if role is not None:
        unlabelled = [ck.path for ck in found if ck.role is None]
        if unlabelled:
            raise StardomainError(
                f"{unlabelled[0]} has no recorded role (written by an older stardomain), so it may be a held-out model; "
                f'retrain the zoo into a new folder (`stardomain train ... --role {role}`), or add "role": "{role}" to its .json '
                "if you know what it is"
            )
        roles = sorted({str(ck.role) for ck in found})
        found = [ck for ck in found if ck.role == role]
    if not found:
        nested = [q.parent.name for q in root.glob(f"*/*{store.SUFFIX}")] if root.is_dir() else []
        hint = f" (subfolders are not searched; pass one of them, e.g. {root / sorted(nested)[0]})" if nested else ""
        other = f" (it holds only {', '.join(roles)} models)" if role is not None and roles else ""
        raise StardomainError(
            f"no {role or ''} {kind or ''} checkpoints directly in {root}{other}{hint}; "
            f"train some with `stardomain train --n N --out {root}`".replace("  ", " ")
        )
    found.sort(key=_seed_key)
    check_one_kind(str(root), found)
    return found


def zoo_metadata(zoo_dir: str | Path, role: str | None = "source", kind: str | None = "regular") -> list[tuple[Path, dict[str, Any]]]:
    """(path, metadata as written) of :func:`zoo_checkpoints`: what :func:`load_zoo` hands to the public API."""
    return [(ck.path, dict(ck.raw)) for ck in zoo_checkpoints(zoo_dir, role=role, kind=kind)]


def load_zoo(zoo_dir: str | Path, limit: int | None = None, kind: str | None = "regular", role: str | None = "source") -> list[Member]:
    """(path, state, metadata) of the ``limit`` lowest-seed ``role`` members of a folder (see :func:`zoo_metadata`);
    ``metadata["metrics"]`` gives accuracies as fractions in [0, 1]."""
    found = zoo_metadata(zoo_dir, role=role, kind=kind)
    if limit is not None:
        if limit < 1:
            raise StardomainError(f"the number of sources must be >= 1 (got {limit})")
        found = found[:limit]
    return [(p, store.load_state(p)[0], m) for p, m in found]


def initial_state(meta: Checkpoint | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a member started from, rebuilt from its recorded seed and architecture (global RNG untouched);
    ``meta``: its :class:`~stardomain.checkpoints.meta.Checkpoint`, or its metadata dict (the public API's)."""
    from stardomain.training.loop import seed_everything

    seed, arch = (meta.seed, meta.arch.record) if isinstance(meta, Checkpoint) else (meta.get("seed"), meta.get("arch"))
    if seed is None:
        raise StardomainError(f"{getattr(meta, 'path', 'a checkpoint')} records no seed: its initial weights cannot be rebuilt")
    if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(arch, Mapping):  # a dict's, unchecked
        raise StardomainError(
            f"a checkpoint's metadata needs an integer 'seed' and an 'arch' mapping to rebuild its initial weights "
            f"(got seed {seed!r}, arch {type(arch).__name__}); read it with stardomain.checkpoints.meta.read_checkpoint"
        )
    with torch.random.fork_rng(devices=[]):
        seed_everything(int(seed))
        return store.build_model(arch).state_dict()


def train_zoo_batched(
    dataset: Data,
    model_name: str,
    options: Mapping[str, Any],
    recipe: Recipe,
    seeds: Sequence[int],
    out_dir: str | Path,
    batch_models: int,
    device: str | torch.device = "cpu",
    progress: Any = None,
    subset: int | None = None,
    on_member: Callable[[Path], None] | None = None,
    role: str = "source",
    notify: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[Path]:
    """:func:`train_zoo` with the missing members trained ``batch_models`` at a time.

    Members are ordinary zoo members (same files, same metadata as one at a time) plus a
    ``batched`` record: how many models shared the pass, their seeds and the pass's seconds.
    Each group checkpoints after every epoch to a hidden state file and resumes from it.
    """
    say = notify or logging.getLogger("stardomain").warning
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    config, data = member_config(dataset, model_name, options, recipe, subset, role)
    paths = {s: member_path(out_dir, s) for s in seeds}
    pending = [s for s in seeds if not check_member(paths[s], config, role)]
    for s in seeds:
        if s not in pending and on_member is not None:
            on_member(paths[s])
    groups = [pending[i : i + batch_models] for i in range(0, len(pending), batch_models)]
    reason = None
    if len(pending) > 1:
        reason = train_batched.batching_refusal(initial_model(dataset, config, pending[0]), recipe, tuple(dataset.in_shape), device)
        if reason is not None:
            say(reason)
            groups = [[s] for s in pending]
    for group in groups:
        if len(group) == 1:  # nothing to batch with: the ordinary path
            train_member(
                dataset,
                model_name,
                options,
                recipe,
                group[0],
                out_dir,
                device=device,
                progress=progress,
                subset=subset,
                role=role,
                on_epoch=on_epoch,
            )
        else:
            _train_group(dataset, config, data, recipe, group, out_dir, paths, role, device, progress, on_epoch)
        if on_member is not None:
            for s in group:
                on_member(paths[s])
    return [paths[s] for s in seeds]


def _each_member(
    on_epoch: Callable[[int, dict[str, Any]], None] | None, group: Sequence[int]
) -> Callable[[list[dict[str, Any]]], None] | None:
    """A batched pass's epoch records (one per member, in ``group``'s order) as ``on_epoch(seed, record)`` calls."""
    if on_epoch is None:
        return None

    def each(records: list[dict[str, Any]]) -> None:
        for seed, rec in zip(group, records):
            on_epoch(seed, rec)

    return each


def _train_group(
    dataset: Data,
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    recipe: Recipe,
    group: list[int],
    out_dir: str | Path,
    paths: Mapping[int, Path],
    role: str,
    device: str | torch.device,
    progress: Any,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> None:
    """Train one group in one pass and write its members; the state file goes only after all are written."""
    members = [initial_model(dataset, config, s) for s in group]
    resume = train_batched.state_file(out_dir, group)
    t0 = time.perf_counter()
    stack, histories = train_batched.train_models_batched(
        members,
        dataset,
        recipe,
        group,
        device=device,
        progress=progress,
        resume_path=resume,
        identity={"config": dict(config), "role": role, "seeds": group},
        on_epoch=_each_member(on_epoch, group),
    )
    seconds = time.perf_counter() - t0
    metrics = stack.final_metrics(dataset)  # every member's, each split read once
    for k, (s, model) in enumerate(zip(group, members)):
        model.load_state_dict(stack.unstack(k))
        model.eval()
        meta = member_meta(model, dataset, config, data, recipe, s, role, histories[k], seconds / len(group), device, metrics[k])
        meta["batched"] = {"models_per_pass": len(group), "seeds": list(group), "pass_seconds": round(seconds, 3)}
        store.save(paths[s], model, meta)
    remove_training_state(resume)

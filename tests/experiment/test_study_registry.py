"""Adding a study is one file: a plugin module registers a Study with YAML settings, whose one ``run`` plans its
units and makes its section; a study cannot read at assembly a unit its plan did not hold."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator

import pytest
import yaml
from cli_helpers import run_cli, tiny_config

from stardomain.errors import StardomainError
from stardomain.experiment.config import experiment_config
from stardomain.experiment.folder import KeyedCall
from stardomain.experiment.pipeline import Experiment
from stardomain.experiment.study import Context, Main, Study, read_pending, register_study, registered_studies, unregister_study
from stardomain.experiment.units import build_plan, unit_keys


@pytest.fixture
def registered() -> Iterator[Any]:
    added: list[str] = []

    def add(study: Study) -> Study:
        register_study(study)
        added.append(study.key)  # only what was registered: a refused clash must not remove the built-in study
        return study

    yield add
    for key in added:
        unregister_study(key)


@pytest.fixture
def plugin() -> Iterator[None]:
    """own_study is imported by the config's ``plugins:`` (it registers on import); removed again afterwards."""
    yield
    unregister_study("star_norm")
    sys.modules.pop("own_study", None)


def _config(**studies: Any) -> dict[str, Any]:
    return tiny_config("toy", plugins=["own_study"], studies={"barriers": True, "distances": False, **studies})


def _run(tmp_path: Path, capsys, data: dict[str, Any]) -> tuple[Any, Path]:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    return run_cli(capsys, "run", path, "--out", out, "-q"), out


def test_a_plugin_study_with_yaml_settings_runs_as_units_and_writes_its_section_and_report(tmp_path: Path, capsys, plugin) -> None:
    r, out = _run(tmp_path, capsys, _config(star_norm={"p": 1}))
    assert r.code == 0, r.err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["studies"]["star_norm"] == {"p": 1.0}  # its settings are part of the run's record
    sec = results["star_norm"]
    assert sec["p"] == 1.0 and sec["stars"][0]["norm"] > 0 and len(sec["sources"]) == 2
    assert set(results["tests"]["star_norm"]) == {"star_below_sources"}  # its verdict test
    assert len(list((out / "cache" / "star_norm").glob("*.json"))) == 3  # one unit per model, computed, then read back
    assert "## Star norm" in (out / "report.md").read_text() and "ℓ1 norm" in (out / "report.md").read_text()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert any(e.get("unit", "").startswith("star_norm/") for e in events)  # the executor ran them as units of the plan


def test_a_plugin_studys_settings_reach_its_unit_keys_and_are_checked(tmp_path: Path, plugin) -> None:
    out = tmp_path / "run"
    Experiment(experiment_config(_config(star_norm={"p": 1})), out, progress=False).run()  # evaluation keys hash the checkpoints
    keys = {p: unit_keys(Experiment(experiment_config(_config(star_norm={"p": p})), out, progress=False)) for p in (1, 2)}
    norm = {p: {u.split("@")[0]: k for u, k in keys[p].items() if u.startswith("star_norm/")} for p in (1, 2)}  # id: kind/model@settings
    assert len(norm[1]) == 3 and norm[1].keys() == norm[2].keys() and all(norm[1][u] != norm[2][u] for u in norm[1])
    plan = build_plan(Experiment(experiment_config(_config(star_norm={"p": 1})), out, progress=False)).plan
    waits = {u.id.split("@")[0]: u.waits_for for u in plan if u.id.startswith("star_norm/")}  # id: kind, model, settings
    assert waits == {
        "star_norm/star/main-z2": ("star/main-z2",),
        **{f"star_norm/train/main/seed-{s}": (f"train/main/seed-{s}",) for s in (0, 1)},
    }
    with pytest.raises(StardomainError, match=r"studies\.star_norm\.p: a norm's order is >= 1"):
        experiment_config(_config(star_norm={"p": 0.5}))
    with pytest.raises(StardomainError, match=r"studies\.star_norm: unknown key 'q'; allowed: p"):
        experiment_config(_config(star_norm={"q": 1}))
    with pytest.raises(StardomainError, match=r"studies: unknown key 'star_nrom'; allowed: barriers, distances, .*star_norm"):
        experiment_config(_config(star_nrom={}))


class Branching(Study):
    """Decides what to ask for from a result: impossible, the result is not known while planning."""

    key = "branching"

    def enabled(self, cfg: Any) -> bool:
        return True

    def run(self, ctx: Context, main: Main) -> Any:
        first = ctx.pair(main.stars[0], main.held[0])
        if first["barriers"]["test_loss"] > 0.1:
            ctx.pair(main.stars[0], main.z[0])
        return first


class LateAsking(Study):
    """Asks for a unit while its section is assembled (inside a derive): refused, the plan did not hold it."""

    key = "late_asking"
    order = 50  # before the built-in studies: the refusal must name it, not the study that planned last

    def enabled(self, cfg: Any) -> bool:
        return True

    def run(self, ctx: Context, main: Main) -> Any:
        return ctx.derive(lambda pair: ctx.pair(main.stars[0], main.z[0]), ctx.pair(main.stars[0], main.held[0]))


def test_a_study_cannot_let_a_result_decide_its_units(tmp_path: Path, registered) -> None:
    registered(Branching())
    exp = Experiment(experiment_config(tiny_config("toy")), tmp_path / "run", progress=False)
    with pytest.raises(StardomainError, match="is a unit's result, known only when the results are assembled"):
        build_plan(exp)


def test_a_study_cannot_ask_for_a_unit_at_assembly(tmp_path: Path, capsys, registered) -> None:
    registered(LateAsking())
    r, out = _run(tmp_path, capsys, tiny_config("toy"))
    assert r.code == 2 and "study late_asking: asked for pair/star/main-z2~train/main/seed-0 while its results were assembled" in r.err
    assert not (out / "results.json").exists()


def test_what_assembly_reads_is_exactly_what_the_plan_held(tmp_path: Path) -> None:
    """One code path: resolving every section reads units of the plan only, each of them at least once."""
    exp = Experiment(
        experiment_config(tiny_config("toy", studies={"barriers": True, "distances": True, "n_sources": {"sizes": [2]}})),
        tmp_path / "run",
        progress=False,
    )
    exp.run()  # computes the plan's units in order, then assembles
    planned = build_plan(exp)
    read: list[str] = []
    for uid, action in planned.actions.items():
        action.compute = (lambda f, u: lambda: (read.append(u), f())[1])(action.compute, uid)
    exp.cache.frozen = True
    for _, section in planned.sections:
        planned.ctx.resolve(section)
    assert set(read) == set(planned.actions)


class Peeking(Study):
    """Reads a result while planning, through the one reader there is: refused, the plan may not depend on results."""

    key = "peeking"

    def run(self, ctx: Context, main: Main) -> Any:
        return read_pending(ctx.pair(main.stars[0], main.held[0]))


class SameIdOtherCall(Study):
    """Asks for the main zoo's first model under its id, trained otherwise: refused, one id is one computation."""

    key = "same_id"

    def run(self, ctx: Context, main: Main) -> Any:
        ctx.zoo("main", {**main.options, "width": 32}, ctx.exp.recipe, 2, 1)


class ReadsAFileNoUnitMakes(Study):
    key = "reads_elsewhere"

    def run(self, ctx: Context, main: Main) -> Any:
        call = KeyedCall("elsewhere", 1, {"model": Path("/tmp/not-a-model.safetensors")}, {}, {})
        return ctx.evaluation(call, lambda: {})


class SetInSection(Study):
    key = "set_in_section"

    def run(self, ctx: Context, main: Main) -> Any:
        return {"rows": [{"pairs": {ctx.pair(main.stars[0], main.held[0]).what}}]}


class TakesMainsVerdict(Study):
    key = "takes"

    def run(self, ctx: Context, main: Main) -> Any:
        return {"n": 1}

    def tests(self, results: Any, judge: Any) -> Any:
        return {"barriers": "mine"}


@pytest.mark.parametrize(
    "study, message",
    [
        (Peeking(), "study peeking: read pair/star/main-z2~train/main/seed-1000 while planning"),
        (SameIdOtherCall(), "study same_id: asks for train/main/seed-0 computed otherwise than study main asked for it"),
        (ReadsAFileNoUnitMakes(), "study reads_elsewhere: elsewhere reads /tmp/not-a-model.safetensors, which no unit of the plan makes"),
        (SetInSection(), r"study set_in_section: its section holds a set at \['rows'\]\[0\]\['pairs'\]"),
    ],
)
def test_what_a_plan_cannot_hold_is_refused_while_planning(tmp_path: Path, registered, study: Study, message: str) -> None:
    registered(study)
    exp = Experiment(experiment_config(tiny_config("toy")), tmp_path / "run", progress=False)
    with pytest.raises(StardomainError, match=message):
        build_plan(exp)


def test_a_result_refuses_every_use_as_a_value_and_main_is_read_only(tmp_path: Path) -> None:
    exp = Experiment(experiment_config(tiny_config("toy")), tmp_path / "run", progress=False)
    planned = build_plan(exp)
    pending = next(s for study, s in planned.sections if study.key == "main")["barriers"]["summary"]
    for use in (bool, str, len, iter, float, lambda p: p == 0, lambda p: f"{p}", lambda p: p + 1, lambda p: p["x"], copy.copy):
        with pytest.raises(StardomainError, match="is a unit's result, known only when the results are assembled"):
            use(pending)
    with pytest.raises(TypeError):
        hash(pending)
    with pytest.raises(TypeError):  # a study changing the main options would retrain the main zoo behind the others
        Main((), (), (), (), MappingProxyType({"width": 8}), None).options["width"] = 32  # type: ignore[index]


def test_verdict_tests_of_two_studies_cannot_share_a_key(tmp_path: Path, capsys, registered) -> None:
    registered(TakesMainsVerdict())
    r, _ = _run(tmp_path, capsys, tiny_config("toy"))
    assert r.code == 2 and "study takes: its verdict test 'barriers' is another's" in r.err


def test_a_study_only_this_process_knows_is_refused_for_ray_before_any_work(tmp_path: Path, registered) -> None:
    from stardomain.experiment.executor_config import ExecutorConfig
    from stardomain.experiment.runner import check_studies_travel

    registered(TakesMainsVerdict())
    cfg = experiment_config(tiny_config("toy"))
    check_studies_travel(cfg, ExecutorConfig())  # local: this process is the worker
    with pytest.raises(StardomainError, match=r"study takes \(test_study_registry\) is registered in this process only: ray workers"):
        check_studies_travel(cfg, ExecutorConfig(kind="ray"))


def test_registry_refuses_a_taken_or_missing_key(registered) -> None:
    keys = [s.key for s in registered_studies()]
    assert keys[:7] == ["main", "n_sources", "bma", "fusion", "width_depth", "optimizer", "recipe_study"]
    with pytest.raises(StardomainError, match="exists already"):
        registered(type("Clash", (Branching,), {"key": "bma"})())
    with pytest.raises(StardomainError, match="exists already"):
        registered(type("Reserved", (Branching,), {"key": "barriers"})())
    with pytest.raises(StardomainError, match="another study's YAML key"):
        registered(type("YamlClash", (Branching,), {"key": "recipe2", "yaml_key": "recipe"})())
    with pytest.raises(StardomainError, match="needs a key"):
        registered(type("NoKey", (Study,), {})())


def test_studies_check_their_blocks_however_they_are_built() -> None:
    """Not only the YAML: Studies(...) and dataclasses.replace refuse a key no study has and coerce a block's type."""
    from stardomain.experiment.config_blocks import Studies
    from stardomain.experiment.studies.bma import BMASettings

    with pytest.raises(
        StardomainError, match=r"studies: unknown key 'bmaa'; allowed: barriers, distances, .*list its module under plugins:"
    ):
        Studies(bmaa=BMASettings())
    assert Studies(bma={"max_samples": 3}).get("bma") == BMASettings(max_samples=3)
    with pytest.raises(StardomainError, match=r"studies\.bma\.max_samples: expected an integer"):
        Studies(bma={"max_samples": "3"})

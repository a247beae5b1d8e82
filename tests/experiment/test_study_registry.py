"""Adding a study is one file: a registered Study plans its own units and assembles its own section and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
import yaml
from cli_helpers import run_cli, tiny_config

from stardomain.checkpoints import store
from stardomain.errors import StardomainError
from stardomain.experiment.study import Main, Study, register_study, registered_studies, unregister_study


class StarNormStudy(Study):
    """A toy study: the ℓ2 norm of the main star's weights, as one cached evaluation unit."""

    key = "star_norm"

    def enabled(self, cfg: Any) -> bool:
        return True

    @staticmethod
    def _key(star: Path) -> dict[str, Any]:
        return {"star": store.content_hash(star)}

    @staticmethod
    def _compute(star: Path) -> dict[str, Any]:
        state, _ = store.load_state(star)
        return {"norm": float(sum(float((v.double() ** 2).sum()) for v in state.values()) ** 0.5)}

    def plan(self, builder: Any, main: Main) -> None:
        star = main.stars[0]
        builder.evaluation(
            "star_norm",
            f"star_norm/{star.unit}",
            [star],
            lambda: self._key(star.path),
            lambda: builder.exp.cache.get_or_compute("star_norm", self._key(star.path), lambda: self._compute(star.path)),
        )

    def assemble(self, exp: Any, main: Main) -> Any:
        star = main.stars[0]
        return exp.cache.get_or_compute("star_norm", self._key(star), lambda: self._compute(star))

    def report(self, results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
        return ["## Star norm", "", f"ℓ2 norm of the star's weights: {results[self.key]['norm']:.3f}", ""]


class ForgetfulStudy(StarNormStudy):
    """Assembles what its plan never asked for: the frozen assembly must refuse it, not compute it."""

    key = "forgetful"

    def plan(self, builder: Any, main: Main) -> None:
        pass


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


def _run(tmp_path: Path, capsys) -> tuple[Any, Path]:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_config("toy")))
    out = tmp_path / "run"
    return run_cli(capsys, "run", path, "--out", out, "-q"), out


def test_a_registered_study_runs_as_units_and_writes_its_section_and_report(tmp_path: Path, capsys, registered) -> None:
    registered(StarNormStudy())
    r, out = _run(tmp_path, capsys)
    assert r.code == 0, r.err
    results = json.loads((out / "results.json").read_text())
    assert list(results)[-2:] == ["star_norm", "tests"]  # after the built-in sections, before the verdicts
    assert results["star_norm"]["norm"] > 0
    assert len(list((out / "cache" / "star_norm").glob("*.json"))) == 1  # computed by its unit, then read back
    assert "## Star norm" in (out / "report.md").read_text()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert any("star_norm/" in json.dumps(e) for e in events)  # the executor ran it as a unit of the plan


def test_a_study_whose_plan_forgets_a_unit_is_refused_at_assembly(tmp_path: Path, capsys, registered) -> None:
    registered(ForgetfulStudy())
    r, out = _run(tmp_path, capsys)
    assert r.code != 0 and "missing when the results are assembled" in r.err


def test_registry_refuses_a_taken_or_missing_key(registered) -> None:
    keys = [s.key for s in registered_studies()]
    assert keys[:6] == ["n_sources", "bma", "fusion", "width_depth", "optimizer", "recipe_study"]
    with pytest.raises(StardomainError, match="exists already"):
        registered(type("Clash", (StarNormStudy,), {"key": "bma"})())
    with pytest.raises(StardomainError, match="exists already"):
        registered(type("Reserved", (StarNormStudy,), {"key": "barriers"})())
    with pytest.raises(StardomainError, match="needs a key"):
        registered(type("NoKey", (Study,), {})())

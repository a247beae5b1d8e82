"""User code runs only because a config names it, and only when the config is loaded, never in a constructor."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from stardomain.experiment.config import ExperimentConfig, from_dict, load_config


def test_the_dataclass_imports_nothing_and_load_config_imports_the_plugins(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "marker_plugin_mod.py").write_text("IMPORTED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "marker_plugin_mod", raising=False)
    data = {"dataset": "digits", "model": {"name": "mlp"}, "plugins": ["marker_plugin_mod"]}
    cfg = from_dict(ExperimentConfig, data)
    assert cfg.plugins == ["marker_plugin_mod"] and "marker_plugin_mod" not in sys.modules
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data))
    load_config(tmp_path / "exp.yaml")
    assert "marker_plugin_mod" in sys.modules

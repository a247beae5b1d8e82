"""One star writer: the CLI's ``star`` and the pipeline's stars go through ``train_star`` and write one schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from cli_helpers import run_cli, tiny_config

from stardomain.checkpoints import store
from stardomain.starlight import STAR_META_KEYS, StarlightConfig, star_seed, train_star
from stardomain.training.loop import Recipe


def _shape(value: Any) -> Any:
    """The schema of a metadata value: dict keys (recursively), the shape of a list's first entry, a leaf's type."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def _pipeline_star(tmp_path: Path, capsys) -> Path:
    cfg = tiny_config("schema")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = run_cli(capsys, "run", path, "--out", tmp_path / "run", "-q")
    assert r.code == 0, r.err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    return tmp_path / "run" / results["models"]["star"]


def test_cli_star_and_pipeline_star_write_the_same_metadata_schema(tmp_path: Path, capsys) -> None:
    piped = _pipeline_star(tmp_path, capsys)
    zoo_dir = tmp_path / "run" / "zoo" / "main"
    cli_out = tmp_path / "cli-star.safetensors"
    r = run_cli(capsys, "star", "--sources", zoo_dir, "--n-sources", "2", "--epochs", "1", "--out", cli_out, "-q")
    assert r.code == 0, r.err
    a, b = store.read_metadata(piped), store.read_metadata(cli_out)
    written_by_store = {"sha256", "format_version"}
    assert set(a) - written_by_store == set(b) - written_by_store == set(STAR_META_KEYS)
    for key in STAR_META_KEYS:  # key by key, down to the nested records
        if key in ("history", "metrics"):
            continue  # same keys, checked below; their number of entries differs with the epochs
        if key == "identity":  # its options are the architecture options as the caller gave them: any keys
            assert _shape({**a[key], "options": {}}) == _shape({**b[key], "options": {}})
            continue
        assert _shape(a[key]) == _shape(b[key]), key
    assert _shape(a["history"][-1]) == _shape(b["history"][-1]) and set(a["metrics"]) == set(b["metrics"])
    # both record every source by path (relative to the star's folder), SHA-256 and seed, and both resolve
    for meta, star in ((a, piped), (b, cli_out)):
        for entry, src in zip(meta["sources"], sorted(zoo_dir.glob("*.safetensors"))[:2]):
            assert (star.parent / entry["path"]).resolve() == src.resolve()
            assert entry["sha256"] == store.content_hash(src) and entry["seed"] == store.read_metadata(src)["seed"]
    assert a["data"] == b["data"] and a["init"] == b["init"] == "fresh"
    assert a["seed"] == star_seed(0, "main-z2") and a["seed_option"] == 0


def test_train_star_reuses_a_finished_star_and_refuses_another_identity(tmp_path: Path, capsys) -> None:
    import pytest

    from stardomain.data import open_dataset
    from stardomain.errors import StardomainError

    zoo_dir = tmp_path / "zoo"
    r = run_cli(capsys, "train", "-d", "digits", "-o", "width=8", "-o", "depth=1", "-e", "1", "--n", "2", "--out", zoo_dir, "-q")
    assert r.code == 0, r.err
    sources = sorted(zoo_dir.glob("*.safetensors"))
    ds = open_dataset("digits")
    config = StarlightConfig(recipe=Recipe.from_dict(store.read_metadata(sources[0])["recipe"]).replace(epochs=1))
    out = tmp_path / "star.safetensors"
    first = train_star(sources, ds, config, out, seed=7)
    assert first.trained and not any(p.name.endswith(".state.safetensors") for p in tmp_path.iterdir())
    again = train_star(sources, ds, config, out, seed=7)
    assert not again.trained and again.meta["sha256"] == first.meta["sha256"]
    with pytest.raises(StardomainError, match="trained with other settings"):
        train_star(sources, ds, config, out, seed=8)
    # the seed seeds the star's initial weights: the same call elsewhere gives the same bytes
    twin = train_star(sources, ds, config, tmp_path / "twin.safetensors", seed=7)
    assert twin.meta["sha256"] == first.meta["sha256"]


def test_train_star_refuses_to_reuse_a_star_trained_on_other_data(tmp_path: Path, capsys) -> None:
    import pytest

    from stardomain.data import open_dataset
    from stardomain.errors import StardomainError

    zoo_dir = tmp_path / "zoo"
    r = run_cli(capsys, "train", "-d", "digits", "-o", "width=8", "-o", "depth=1", "-e", "1", "--n", "2", "--out", zoo_dir, "-q")
    assert r.code == 0, r.err
    sources = sorted(zoo_dir.glob("*.safetensors"))
    config = StarlightConfig(recipe=Recipe.from_dict(store.read_metadata(sources[0])["recipe"]).replace(epochs=1))
    out = tmp_path / "star.safetensors"
    train_star(sources, open_dataset("digits"), config, out, seed=7)
    # same sources, settings and seed, but a subset of the data: never handed back as if it were the same star
    with pytest.raises(StardomainError, match="trained on other data .*subset 500"):
        train_star(sources, open_dataset("digits", subset=500, seed=0), config, out, seed=7)

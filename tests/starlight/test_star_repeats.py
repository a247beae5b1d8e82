"""Repeated stars: k stars from the same sources with distinct recorded seeds, and figures over stars."""

from __future__ import annotations

import math
import statistics

import pytest

from stardomain.analysis import stats


def test_over_stars_keeps_the_two_spreads_apart():
    # star 0 is consistently low, star 1 consistently high: pairs vary little within a star
    by_star = [[0.010, 0.012, 0.011], [0.030, 0.028, 0.032], [0.020, None, math.nan]]
    s = stats.over_stars(by_star)
    assert s["n_stars"] == 3 and s["n_pairs"] == 7
    means = [0.011, 0.030, 0.020]
    assert [p["mean"] for p in s["per_star"]] == pytest.approx(means)
    assert s["over_stars"]["mean"] == pytest.approx(statistics.fmean(means))
    assert s["over_stars"]["std"] == pytest.approx(statistics.stdev(means))
    assert s["over_stars"]["n"] == 3
    pooled = [0.010, 0.012, 0.011, 0.030, 0.028, 0.032, 0.020]
    assert s["over_pairs"]["mean"] == pytest.approx(statistics.fmean(pooled))
    assert s["over_pairs"]["std"] == pytest.approx(statistics.stdev(pooled))
    # the pooled mean weights star 2 (one finite pair) less than the mean over stars does
    assert s["over_pairs"]["mean"] != pytest.approx(s["over_stars"]["mean"])
    assert "over_stars" in s["spread"] and "over_pairs" in s["spread"]


def test_one_star_has_no_spread_over_stars_and_an_empty_star_does_not_count():
    s = stats.over_stars([[0.1, 0.3], []])
    assert s["n_stars"] == 1 and s["n_pairs"] == 2
    assert s["over_stars"] == {"mean": pytest.approx(0.2), "std": 0.0, "n": 1}
    assert s["over_pairs"]["std"] == pytest.approx(statistics.stdev([0.1, 0.3]))
    assert math.isnan(stats.over_stars([])["over_stars"]["mean"])


def test_star_repeats_trains_distinct_stars_with_recorded_seeds(tmp_path, capsys):
    import torch
    from cli_helpers import assert_one_line_error, run_cli

    from stardomain.checkpoints import store
    from stardomain.starlight import repeat_seed, star_seed
    from stardomain.training import zoo
    from stardomain.training.loop import seed_everything

    zdir = tmp_path / "zoo"
    r = run_cli(capsys, "train", "-d", "digits", "-o", "width=8", "-o", "depth=1", "-e", "1", "--n", "2", "--out", zdir, "-q")
    assert r.code == 0, r.err
    out = tmp_path / "star.safetensors"
    r = run_cli(capsys, "star", "--sources", zdir, "--epochs", "1", "--repeats", "3", "--seed", "4", "--out", out, "-q")
    assert r.code == 0, r.err
    paths = [tmp_path / f"star-r{i}.safetensors" for i in range(3)]
    assert not out.exists() and all(p.exists() for p in paths)
    loaded = [store.load_state(p) for p in paths]
    metas = [m for _, m in loaded]
    assert [m["repeat"] for m in metas] == [0, 1, 2] and {m["repeats"] for m in metas} == {3}
    seeds = [m["seed"] for m in metas]
    assert seeds == [repeat_seed(4, i) for i in range(3)] and seeds[0] == star_seed(4) and len(set(seeds)) == 3
    assert all(m["kind"] == "star" and m["seed_option"] == 4 for m in metas)
    sources = [m for _, m in zoo.zoo_metadata(zdir)]
    assert not set(seeds) & {m["seed"] for m in sources}
    # distinct trained stars, and no star started from a source's initial weights
    states = [s for s, _ in loaded]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not all(torch.equal(states[i][k], states[j][k]) for k in states[i])
    inits = [zoo.initial_state(m) for m in sources]
    for m in metas:
        seed_everything(m["seed"])
        start = store.build_model(m["arch"]).state_dict()
        for init in inits:
            assert not all(torch.equal(start[k], init[k]) for k in init)
    # an existing repeat is never overwritten without --force: the same one is reused (and said), another refused
    before = paths[1].read_bytes()
    r = run_cli(capsys, "star", "--sources", zdir, "--epochs", "1", "--repeats", "2", "--seed", "4", "--out", out, "-q")
    assert r.code == 0 and r.out.count("reused") == 2, r.err
    r = run_cli(capsys, "star", "--sources", zdir, "--epochs", "1", "--repeats", "2", "--seed", "5", "--out", out, "-q")
    assert_one_line_error(r, "star-r0.safetensors", "--force")
    assert paths[1].read_bytes() == before
    assert_one_line_error(run_cli(capsys, "star", "--sources", zdir, "--repeats", "0", "--out", out), "--repeats")

"""The width-trend figure: barrier vs width per group from results.json's width_depth rows."""

from __future__ import annotations

import pytest

from stardomain import StardomainError
from stardomain.analysis import stats
from stardomain.report.width_plot import plot_width_trend, width_series


def _results(widths=(16, 4, 8), repeats: bool = True, depth=lambda w: 1) -> dict:
    rows = []
    for w in widths:
        summary = {}
        for g, scale in (("regular-regular", 1.0), ("star-source", 0.1), ("star-held-out", 0.4)):
            vals = [scale / w * (1 + 0.1 * i) for i in range(4)]
            summary[g] = {"barriers": {"test_loss": stats.mean_std(vals)}, "n_pairs": 4}
            if repeats and g != "regular-regular":
                summary[g]["over_stars"] = {"test_loss": stats.over_stars([vals[:2], vals[2:]])}
        rows.append({"options": {"depth": depth(w), "width": w}, "summary": summary})
    return {"dataset": {"name": "fashion_mnist"}, "width_depth": {"rows": rows}}


def test_series_are_sorted_by_width_and_stars_spread_over_stars():
    widths, series = width_series(_results())
    assert widths == [4.0, 8.0, 16.0]
    reg, held = series["regular-regular"], series["star-held-out"]
    assert reg["spread"] == ["pairs"] and reg["n"] == [4, 4, 4]
    assert reg["mean"] == pytest.approx([1.15 / w for w in (4, 8, 16)])  # mean of 1/w · (1, 1.1, 1.2, 1.3)
    assert held["spread"] == ["stars"] and held["n"] == [2, 2, 2]
    per_star = stats.mean_std([0.4 / 4 * 1.05, 0.4 / 4 * 1.25])  # the two stars' means over their pairs at width 4
    assert held["mean"][0] == pytest.approx(per_star["mean"]) and held["std"][0] == pytest.approx(per_star["std"])
    # one star per width: the only spread there is is over pairs, and the legend says so
    assert width_series(_results(repeats=False))[1]["star-held-out"]["spread"] == ["pairs"]


def test_figure_renders_with_the_published_panel(tmp_path):
    path = plot_width_trend(_results(), tmp_path / "width.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.with_suffix(".pdf").exists()
    plot_width_trend(_results(), tmp_path / "ours.png", published=False)
    assert (tmp_path / "ours.png").exists()


def test_rows_that_are_not_a_width_trend_are_refused(tmp_path):
    with pytest.raises(StardomainError, match="at least two widths"):
        width_series(_results(widths=(8,)))
    with pytest.raises(StardomainError, match="other than width"):
        width_series(_results(depth=lambda w: w))
    with pytest.raises(StardomainError, match="repeat a width"):
        width_series(_results(widths=(4, 4)))
    with pytest.raises(StardomainError, match="no width_depth rows"):
        plot_width_trend({"width_depth": {"rows": []}}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("model", ["mlp", "resnet20"])
def test_report_sets_the_published_mlp_panel_beside_mlps_only(tmp_path, monkeypatch, model):
    """The authors' published widths are MLP hidden units: beside a CNN's width multiplier they would mislead."""
    from stardomain.report import stars as report_stars
    from stardomain.report import width_plot

    seen, real = {}, width_plot.plot_width_trend

    def spy(results, path, **kw):
        seen.update(kw)
        return real(results, path, **kw)

    monkeypatch.setattr(width_plot, "plot_width_trend", spy)
    res = {**_results(), "config": {"model": {"name": model}}}
    figures: list[str] = []
    lines = report_stars.width_trend_lines(res, tmp_path, figures)
    assert figures == ["width_trend.png"] and any("width_trend.png" in ln for ln in lines)
    assert seen == ({"published": True, "xlabel": "hidden width"} if model == "mlp" else {"published": False, "xlabel": "width multiplier"})

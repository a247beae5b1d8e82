"""Figures are written atomically, are real PNGs and carry content."""

from __future__ import annotations

import math

import matplotlib
import pytest

from stardomain import StardomainError
from stardomain.barrier import Curve
from stardomain.report.plots import plot_curves, plot_loss_acc, plot_series

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_curves(n: int, height: float, shift: float = 0.0) -> list[Curve]:
    ts = [i / 10 for i in range(11)]
    out = []
    for k in range(n):
        bump = [height * (1 + 0.1 * k) * math.sin(math.pi * t) for t in ts]
        out.append(
            Curve(
                t=ts,
                test_loss=[0.3 + shift + b for b in bump],
                test_acc=[0.9 - b / 4 for b in bump],
                train_loss=[0.1 + b for b in bump],
                train_acc=[0.99 - b / 4 for b in bump],
            )
        )
    return out


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_plot_curves_and_loss_acc(tmp_path):
    backend = matplotlib.get_backend()
    groups = {"star – held-out": fake_curves(4, 0.05), "regular – regular": fake_curves(4, 0.6, 0.02)}
    p1 = plot_curves(groups, "test_loss", tmp_path / "loss.png", title="test loss along t")
    p2 = plot_loss_acc(groups, tmp_path / "sub" / "both.png", title="interpolation")
    p3 = plot_curves({"one pair": fake_curves(1, 0.2)}, metric="train_acc", path=tmp_path / "acc.png")
    for p in (p1, p2, p3):
        assert_png(p)
    assert matplotlib.get_backend() == backend  # no global backend switch


def test_plot_series(tmp_path):
    xs = [2, 5, 10, 20, 50]
    p = plot_series(
        xs,
        {"star – held-out": ([0.5, 0.3, 0.2, 0.15, 0.1], [0.05] * 5), "regular – regular": ([0.6] * 5, [0.1] * 5)},
        "number of source models |Z|",
        "test loss barrier",
        tmp_path / "z.png",
    )
    assert_png(p)
    q = plot_series(["w1", "w2", "w4"], {"barrier": ([0.3, 0.2, 0.1], None)}, "setting", "barrier", tmp_path / "c.png")
    assert_png(q)


def test_plot_errors(tmp_path):
    a = fake_curves(1, 0.1)[0]
    b = Curve(t=[0.0, 1.0], test_loss=[0.1, 0.2], test_acc=[0.9, 0.8])
    with pytest.raises(StardomainError, match="t grids"):
        plot_curves({"mixed": [a, b]}, path=tmp_path / "x.png")
    with pytest.raises(StardomainError, match="metric"):
        plot_curves({"g": [a]}, "val_loss", tmp_path / "x.png")
    with pytest.raises(StardomainError):
        plot_series([1, 2], {"s": ([1.0], None)}, "x", "y", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_curve_panel_says_barrier_n_and_band_and_survives_greyscale():
    from matplotlib.figure import Figure

    from stardomain.barrier import barriers
    from stardomain.report.plots import BAND_LABEL, _draw_metric

    groups = {"regular – regular": fake_curves(4, 0.6, 0.02), "star – held-out": fake_curves(2, 0.05)}
    ax = Figure().add_subplot(1, 1, 1)
    _draw_metric(ax, groups, "loss", ("test", "train"))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    b = [barriers(c)["test_loss"] for c in groups["regular – regular"]]
    mean = sum(b) / len(b)
    assert labels[0].startswith("regular – regular, test (n=4): B = ") and f"{mean:.3f} ± " in labels[0]
    assert labels[-1] == BAND_LABEL and any(lb.startswith("star – held-out, train (n=2)") for lb in labels)
    lines = ax.get_lines()
    styles = {(ln.get_linestyle(), ln.get_marker(), ln.get_markerfacecolor() == "white") for ln in lines}
    assert len(styles) == len(lines) == 4  # every curve differs in line style or marker, not only in colour
    assert ax.get_ylabel() == "loss (nats)" and ax.get_xlabel() == "interpolation coefficient t"


def test_plot_training_and_pdf_beside_png(tmp_path):
    from stardomain.report.plots import plot_training

    def history(shift: float) -> list[dict]:
        return [
            {"epoch": e, "train_loss": 1 / (e + shift), "test_loss": 1.2 / (e + shift), "test_acc": 0.8 + 0.01 * e} for e in range(1, 6)
        ]

    star = [{"epoch": e, "interp_train_loss": 1.5 / e} for e in range(1, 9)]
    star[-1]["star_test_acc"] = 0.9
    p = plot_training({"sources Z": [history(0), history(1)], "star θ⋆": [star]}, tmp_path / "train.png")
    assert_png(p)
    assert (tmp_path / "train.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(StardomainError, match="at least one model history"):
        plot_training({"empty": []}, tmp_path / "none.png")

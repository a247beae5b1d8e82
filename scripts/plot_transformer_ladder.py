"""The ladder figure: train- and test-loss barriers of regular pairs per alignment rung, one panel per model.

    python scripts/plot_transformer_ladder.py runs/ladder/vit_ladder.json runs/ladder/gpt2_ladder.json \
        --labels "ViT (n=3 pairs)" "GPT-2 (n=2 pairs)" --out docs/transformer_ladder.png

Bars: mean over pairs; error bars: sample std over pairs (n in each panel's title); dots: the pairs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ladders", nargs="+", type=Path)
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    fig, axes = plt.subplots(len(args.ladders), 1, figsize=(11, 3.6 * len(args.ladders)), squeeze=False)
    for ax, path, label in zip(axes[:, 0], args.ladders, args.labels):
        rungs = json.loads(path.read_text())["rungs"]
        names = list(rungs)
        for j, (metric, colour) in enumerate((("train_loss_barrier", "tab:blue"), ("test_loss_barrier", "tab:orange"))):
            for i, name in enumerate(names):
                vals = [r[metric] for r in rungs[name]["pairs"] if metric in r]
                if not vals:
                    continue
                x = i + (j - 0.5) * 0.38
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                ax.bar(
                    x,
                    statistics.fmean(vals),
                    0.36,
                    yerr=sd,
                    color=colour,
                    alpha=0.75,
                    capsize=2,
                    label=metric.replace("_barrier", "") if i == 0 else None,
                )
                ax.scatter([x] * len(vals), vals, s=6, color="black", zorder=3)
        n = len(next(iter(rungs.values()))["pairs"])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("loss barrier (nats)")
        ax.set_title(f"{label}: regular-regular loss barrier by alignment (mean ± std over n={n} pairs; dots: pairs)", fontsize=9)
        ax.axhline(0.05, color="grey", lw=0.8, ls="--")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()

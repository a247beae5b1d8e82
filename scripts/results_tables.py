"""Markdown tables for the README's "Results" section, read from finished runs' results.json.

Why a script: the README quotes several runs side by side (the MLP width trend beside the
authors' MNIST numbers, two BatchNorm CNNs, the BN ablation, |Z|, BMA). Retyping numbers from
report.md invites transcription errors; this prints the same cells, with n, spreads and the
verdicts of the tests stored in results.json (``results["tests"]``), so the README is a paste.

    python scripts/results_tables.py width runs/fmnist_width
    python scripts/results_tables.py cnn runs/fmnist_resnet20 runs/fmnist_vgg11
    python scripts/results_tables.py settings runs/digits_resnet20 runs/digits_vgg11 runs/digits_recipe_resnet20
    python scripts/results_tables.py grid runs/digits_recipe_lr_resnet20 runs/digits_recipe_lr_vgg11
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping

from stardomain.analysis.published import MNIST_MLP_WIDTH
from stardomain.analysis.stats import undefined, verdict
from stardomain.report.bma_plot import AUROC_DEFINITION
from stardomain.report.formatting import GROUP_LABELS, GROUPS, fmt, interval, num, poor_star, table


def g(x: float | None, spec: str) -> str:
    """``format(x, spec)``, or "–" for no number (null in a strict-JSON results.json, NaN in an older one)."""
    return "–" if undefined(x) else format(x, spec)


def load(run: Path) -> dict[str, Any]:
    path = run / "results.json"
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; run the experiment to completion first")
    return json.loads(path.read_text())


def over_stars(group: Mapping[str, Any] | None, metric: str = "test_loss", digits: int = 3) -> str:
    if not group or "over_stars" not in group:
        return "—"
    o = group["over_stars"][metric]
    return f"{fmt(o['over_stars'], digits=digits, n=False)} (k={o['n_stars']})"


def welch(t: Mapping[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    p = t["welch"]["p"]
    return f"{num(t['diff'], scale, digits)}, CI {interval(t['ci95'], scale, digits)}, Welch p = {g(p, '.2g')} (n = {t['a']['n']} vs {t['b']['n']})"


def near(t: Mapping[str, Any]) -> str:
    return f"{fmt(t['values'])}, one-sided bounds {interval(t['bounds'])} vs {t['tolerance']:g}"


def width_table(res: Mapping[str, Any]) -> str:
    """One row per width: our three groups (stars: spread over stars) and the authors' MNIST numbers."""
    rows = []
    tests = {t["tag"]: t for t in res["tests"]["width_depth"]}
    for r in sorted(res["width_depth"]["rows"], key=lambda r: r["options"]["width"]):
        s, t = r["summary"], tests[r["tag"]]
        w = int(r["options"]["width"])
        pub = MNIST_MLP_WIDTH.get(w, {})
        acc = r["endpoints"]
        rr_word = verdict(t["regular_regular_vs_zero"], "near 0", "above tol.")
        # the tests over stars where k >= 2; with one star the columns' "over stars" is not true: say so
        over = "star_held_out_vs_regular_over_stars" in t
        ss = t["star_source_near_zero_over_stars" if over else "star_source_near_zero"]
        sh = t["star_held_out_vs_regular_over_stars" if over else "star_held_out_vs_regular"]
        flag = ("" if over else " (tested over pairs: one star)") + ("" if t["comparable"] else " (star not comparable)")
        stars = acc.get("stars_over_repeats", {}).get("test_acc") or {"mean": acc["star"]["test_acc"], "n": 1}
        rows.append(
            [
                w,
                f"{100 * acc['sources']['test_acc']['mean']:.1f}",
                fmt(stars, 100, 1, n=False),
                fmt(s["regular-regular"]["barriers"]["test_loss"]),
                rr_word,
                over_stars(s["star-source"]),
                verdict(ss, "near 0", "above tol.") + flag,
                over_stars(s["star-held-out"]),
                f"{num(sh['diff'])}: {verdict(sh, 'below r–r', 'ABOVE r–r')} (p = {g(sh['welch']['p'], '.2g')}){flag}",
                " / ".join(f"{pub[g]:.3f}" for g in GROUPS) if pub else "–",
            ]
        )
    return table(
        [
            "width",
            "sources' test acc (%)",
            "stars' test acc (%)",
            "regular–regular (over pairs)",
            "vs 0.05",
            "star–source (over stars)",
            "vs 0.05",
            "star–held-out (over stars)",
            "star–held-out − r–r (over stars)",
            "authors' MNIST r–r / s–s / s–h",
        ],
        rows,
    )


def cnn_tables(run: Path, res: Mapping[str, Any]) -> str:
    s, t, ep = res["barriers"]["summary"], res["tests"], res["endpoints"]
    d = res.get("distances", {})
    rows = []
    for grp in GROUPS:
        if grp in s:
            rows.append(
                [
                    GROUP_LABELS[grp],
                    s[grp]["n_pairs"],
                    fmt(s[grp]["barriers"]["test_loss"]),
                    over_stars(s[grp]),
                    fmt(s[grp]["barriers"]["test_acc"], 100, 2, n=False),
                    fmt(s[grp]["barriers"]["train_loss"], n=False),
                    fmt(d[grp]["l2_aligned"], digits=2, n=False) if grp in d else "–",
                ]
            )
    out = [
        f"**{res['name']}** (`{run}`)",
        "",
        table(
            [
                "pair type",
                "pairs",
                "test loss barrier (over pairs)",
                "over stars",
                "test acc barrier (pp)",
                "train loss barrier",
                "ℓ2 w/ perm",
            ],
            rows,
        ),
        "",
    ]
    star = ep.get("stars_over_repeats") or {k: {"mean": v, "n": 1} for k, v in ep["star"].items() if k in ("test_acc", "test_loss")}
    out.append(
        f"Endpoints, test acc (%) / loss: stars {fmt(star['test_acc'], 100, 2)} / {fmt(star['test_loss'], n=False)}; "
        f"sources {fmt(ep['sources']['test_acc'], 100, 2)} / {fmt(ep['sources']['test_loss'], n=False)}; "
        f"held-out {fmt(ep['held_out']['test_acc'], 100, 2)} / {fmt(ep['held_out']['test_loss'], n=False)}; "
        f"star below its sources: {'yes' if ep['star_below_sources'] else 'no'}"
        + (
            f"; sources and held-out train accuracy {fmt(ep['convergence']['train_acc'], 100, 2)} (lowest "
            f"{100 * ep['convergence']['min_train_acc']:.2f}), {'converged' if ep['convergence']['converged'] else 'NOT converged'}"
            if "convergence" in ep
            else ""
        )
        + "."
    )
    out.append("")
    b = t["barriers"]
    gap = f"not comparable: {poor_star(ep)}"

    def star_word(x: Mapping[str, Any], lower: str, higher: str, comparable: bool = b["comparable"], why: str = gap) -> str:
        """A star claim's verdict, or why it cannot be made (a poor star has small barriers trivially)."""
        return verdict(x, lower, higher) if comparable else f"{why} ({verdict(x, lower, higher)} otherwise)"

    claims = [
        [
            "regular–regular barrier above 0",
            near(b["regular_regular_vs_zero"]),
            verdict(b["regular_regular_vs_zero"], "near 0", "holds: above"),
        ],
        [
            "star–source near 0 (pairs)",
            near(b["star_source_near_zero"]),
            star_word(b["star_source_near_zero"], "holds: near 0", "NOT near 0"),
        ],
    ]
    if "star_source_near_zero_over_stars" in b:
        x = b["star_source_near_zero_over_stars"]
        claims.append([f"star–source near 0 (over {b['n_stars']} stars)", near(x), star_word(x, "holds: near 0", "NOT near 0")])
    claims.append(
        [
            "star–held-out below regular–regular (pairs)",
            welch(b["star_held_out_vs_regular"]),
            star_word(b["star_held_out_vs_regular"], "holds: below", "does NOT hold: above"),
        ]
    )
    if "star_held_out_vs_regular_over_stars" in b:
        x = b["star_held_out_vs_regular_over_stars"]
        claims.append(
            [
                f"star–held-out below regular–regular (over {b['n_stars']} stars)",
                welch(x),
                star_word(x, "holds: below", "does NOT hold: above"),
            ]
        )
    if "distances" in t:
        x = t["distances"]["star_held_out_vs_regular"]
        claims.append(
            ["star closer in ℓ2 after permutation (pairs)", welch(x, digits=2), verdict(x, "holds: closer", "does NOT hold: farther")]
        )
        if "star_held_out_vs_regular_over_stars" in t["distances"]:
            x = t["distances"]["star_held_out_vs_regular_over_stars"]
            claims.append(
                [
                    f"star closer in ℓ2 (over {t['distances']['n_stars']} stars)",
                    welch(x, digits=2),
                    verdict(x, "holds: closer", "does NOT hold: farther"),
                ]
            )
    if "n_sources" in t:
        ns = t["n_sources"]
        worst = max(
            max(r["endpoints"].get("star_acc_gaps") or [r["endpoints"]["star_acc_gap"]])
            for r in res["n_sources"]["rows"]
            if r["n_sources"] in (ns["first"], ns["last"])
        )
        ns_gap = f"not comparable: a star here is {100 * worst:.2f} pp below its sources' test accuracy"
        vals = " → ".join(g(r["star_held_out"]["test_loss"]["mean"], ".3f") for r in res["n_sources"]["rows"])
        claims.append(
            [
                f"more sources lower the star–held-out barrier (\\|Z\\| {ns['first']} → {ns['last']}: {vals}; pairs)",
                welch(ns["trend"]),
                star_word(ns["trend"], "holds: lower", "does NOT hold: higher", ns["comparable"], ns_gap),
            ]
        )
        if "trend_over_stars" in ns:
            claims.append(
                [
                    f"the same over {ns['n_stars']} stars per \\|Z\\|",
                    welch(ns["trend_over_stars"]),
                    star_word(ns["trend_over_stars"], "holds: lower", "does NOT hold: higher", ns["comparable"], ns_gap),
                ]
            )
    if "bma" in t:
        k, ke = res["bma"]["star_domain"]["k"][-1], res["bma"]["ensemble"]["k"][-1]
        ks = f"K = {k}" if k == ke else f"BMA K = {k} vs ensemble K = {ke}"
        for key, label in (
            ("auroc_max_prob", "misclassification AUROC max prob"),
            ("auroc_neg_entropy", "misclassification AUROC neg. entropy"),
        ):
            x = t["bma"][key]
            claims.append(
                [
                    f"BMA ranks uncertainty better than the ensemble ({label}, {ks})",
                    f"{num(x['diff'], digits=4)}, paired bootstrap CI {interval(x['ci95'], digits=4)} over {x['n_items']} test images",
                    verdict(x, "does NOT hold: BMA lower", "holds: BMA higher"),
                ]
            )
    out += [table(["claim (paper)", "numbers", "verdict here"], claims), ""]
    return "\n".join(out)


def bn_table(runs: list[tuple[Path, Mapping[str, Any]]]) -> str:
    rows = []
    for _run, res in runs:
        ab = res.get("bn_ablation", {})
        if not ab.get("applicable"):
            continue
        for grp in GROUPS:
            if grp not in ab["groups"]:
                continue
            a, pt = ab["groups"][grp]["test_loss"], ab["tests"][grp]["paired"]
            word = verdict(pt, "lower without the reset", "higher without the reset")
            rows.append(
                [
                    res["name"],
                    GROUP_LABELS[grp],
                    ab["groups"][grp]["n_pairs"],
                    fmt(a["reset"], n=False),
                    fmt(a["interpolate"], n=False),
                    f"{num(pt['difference']['mean'])}, 95% t CI {interval(pt['ci'])}: {word}",
                ]
            )
    return table(
        [
            "run",
            "pair type",
            "pairs",
            "test loss barrier, BN re-estimated (paper)",
            "BN statistics interpolated",
            "interpolated − re-estimated (paired)",
        ],
        rows,
    )


def n_sources_table(runs: list[tuple[Path, Mapping[str, Any]]]) -> str:
    """The |Z| study: per number of sources, the stars' accuracy and their barrier to the held-out models."""
    rows = []
    for _, res in runs:
        if "n_sources" not in res:
            continue
        ref = res["n_sources"].get("regular_regular")
        for r in res["n_sources"]["rows"]:
            ep = r["endpoints"]
            rows.append(
                [
                    res["name"],
                    r["n_sources"],
                    fmt(r["stars_test_acc"], 100, 2, n=False) + f" (k={r['stars_test_acc']['n']})",
                    f"{100 * ep['sources']['test_acc']['mean']:.2f}",
                    over_stars(r),
                    fmt(r["star_held_out"]["test_loss"]),
                    fmt(ref["test_loss"]) if ref else "–",
                    "yes" if ep["star_below_sources"] else "no",
                ]
            )
    return table(
        [
            "run",
            "\\|Z\\|",
            "stars' test acc (%)",
            "sources' test acc (%)",
            "star–held-out barrier (over stars)",
            "(over pairs)",
            "regular–regular (reference)",
            "star not comparable?",
        ],
        rows,
    )


def bma_table(runs: list[tuple[Path, Mapping[str, Any]]]) -> str:
    rows = []
    for _, res in runs:
        if "bma" not in res:
            continue
        b = res["bma"]
        for key, label in (("star_domain", "star-domain BMA"), ("ensemble", "deep ensemble")):
            m = b[key]["metrics"]
            rows.append(
                [
                    res["name"],
                    label,
                    b[key]["k"][-1],
                    f"{100 * m['accuracy'][-1]:.2f}",
                    g(m["nll"][-1], ".4f"),
                    g(m["ece"][-1], ".4f"),
                    g(m["auroc_max_prob"][-1], ".4f"),
                    g(m["auroc_neg_entropy"][-1], ".4f"),
                ]
            )
    header = [
        "run",
        "posterior",
        "K",
        "test acc (%)",
        "NLL",
        "ECE",
        "misclassification AUROC (max prob)",
        "misclassification AUROC (neg. entropy)",
    ]
    return table(header, rows) + f"\n\n{AUROC_DEFINITION}."


def settings(res: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every training setting of a run with barriers: the main one, each width/depth row, each recipe cell."""
    cfg = res["config"]
    out = []
    if "barriers" in res:
        out.append(
            {
                "tag": "main",
                "options": {**cfg["model"]["options"], "init": cfg["model"].get("init", "kaiming")},
                "recipe": res["recipe"],
                "summary": res["barriers"]["summary"],
                "endpoints": res["endpoints"],
                "tests": res["tests"]["barriers"],
                "n": (cfg["sources"], cfg["held_out"]),
            }
        )
    for key in ("width_depth", "recipe_study"):
        if key not in res:
            continue
        tests = {t["tag"]: t for t in res["tests"][key]}
        for r in res[key]["rows"]:
            out.append(
                {
                    "tag": r["tag"],
                    "options": r["options"],
                    "recipe": r.get("recipe", res["recipe"]),
                    "summary": r["summary"],
                    "endpoints": r["endpoints"],
                    "tests": tests[r["tag"]],
                    "n": (r["n_sources"], r["n_held_out"]),
                }
            )
    return out


def settings_table(runs: list[tuple[Path, Mapping[str, Any]]]) -> str:
    """One row per setting: its recipe, its zoo's convergence, the three barrier groups and the star verdicts
    (over stars where k >= 2), and star–held-out / regular–regular beside the authors' CIFAR-10 ResNet-18 0.31."""
    rows = []
    for _, res in runs:
        for st in settings(res):
            s, t, ep, o, rec = st["summary"], st["tests"], st["endpoints"], st["options"], st["recipe"]
            conv = ep.get("convergence")
            over = "star_held_out_vs_regular_over_stars" in t
            ss = t["star_source_near_zero_over_stars" if over else "star_source_near_zero"]
            sh = t["star_held_out_vs_regular_over_stars" if over else "star_held_out_vs_regular"]
            flags = [
                *([] if over else ["one star: tested over pairs"]),
                *([] if t["comparable"] else ["star not comparable"]),
                *(["sources not converged"] if conv and not conv["converged"] else []),
            ]
            stars = ep.get("stars_over_repeats", {}).get("test_acc") or {"mean": ep["star"]["test_acc"], "std": 0.0, "n": 1}
            m = t.get("metric", "test_loss")  # the verdicts' metric (eval.metric); results before it: the test loss
            rr_mean = s["regular-regular"]["barriers"][m]["mean"]
            sh_mean = (s["star-held-out"].get("over_stars", {}).get(m, {}).get("over_stars") or s["star-held-out"]["barriers"][m])["mean"]
            width = f"w{o['width']:g} · " if "width" in o else ""
            rows.append(
                [
                    f"{res['name']} · {st['tag']}",
                    f"{width}{o.get('init', 'kaiming')} · {rec['epochs']} ep · wd {rec['weight_decay']:g}",
                    f"{st['n'][0]} / {st['n'][1]} / {stars['n']}",
                    (
                        f"{g(conv['train_loss']['mean'], '.4f')} / {100 * conv['min_train_acc']:.2f}"
                        + ("" if conv["converged"] else " **not converged**")
                    )
                    if conv
                    else "–",
                    f"{100 * ep['sources']['test_acc']['mean']:.2f} / {fmt(stars, 100, 2, n=False)}",
                    m.replace("_", " "),
                    fmt(s["regular-regular"]["barriers"][m]),
                    over_stars(s["star-source"], m),
                    over_stars(s["star-held-out"], m),
                    verdict(ss, "near 0", f"above {ss['tolerance']:g}"),
                    f"{num(sh['diff'])}: {verdict(sh, 'below', 'ABOVE')} (p = {g(sh['welch']['p'], '.2g')})",
                    f"{sh_mean / rr_mean:.2f}" if rr_mean > 0 else "–",
                    "; ".join(flags) or "–",
                ]
            )
    return table(
        [
            "run · setting",
            "width · init · epochs · weight decay",
            "\\|Z\\| / \\|H\\| / stars",
            "train loss (mean) / lowest train acc (%)",
            "test acc (%): sources / stars",
            "barrier (eval.metric)",
            "regular–regular (over pairs)",
            "star–source (over stars)",
            "star–held-out (over stars)",
            "star–source vs tolerance",
            "star–held-out − r–r",
            "s–h / r–r (authors' CIFAR-10 ResNet-18: 0.31)",
            "flags",
        ],
        rows,
    )


def _claims(t: Mapping[str, Any]) -> tuple[str, str]:
    """star–source ≈ 0 and star–held-out < regular–regular on one metric, over stars where k >= 2, as short words."""
    over = "star_held_out_vs_regular_over_stars" in t
    ss = t["star_source_near_zero_over_stars" if over else "star_source_near_zero"]
    sh = t["star_held_out_vs_regular_over_stars" if over else "star_held_out_vs_regular"]
    if not t["comparable"]:
        return "not comparable", "not comparable"
    return verdict(ss, "near 0", "NOT near 0"), f"{verdict(sh, 'below', 'ABOVE')} (p = {g(sh['welch']['p'], '.2g')})"


def grid_table(runs: list[tuple[Path, Mapping[str, Any]]]) -> str:
    """The recipe grids (issue 33): one row per cell with every axis, its convergence, and the barriers and star
    verdicts on train AND test loss side by side; a cell whose regular pairs are already near 0 is marked "trivial"
    (a star is then no evidence); the last column says where the two losses disagree."""
    rows = []
    for _, res in runs:
        tests = {t["tag"]: t for t in res["tests"].get("recipe_study", [])}
        for r in res.get("recipe_study", {}).get("rows", []):
            t, c, ep, s = tests[r["tag"]], r["cell"], r["endpoints"], r["summary"]
            by = t.get("by_metric") or {"test_loss": t}
            conv = ep.get("convergence")
            stars = ep.get("stars_over_repeats", {}).get("test_acc") or {"mean": ep["star"]["test_acc"], "std": 0.0, "n": 1}
            cells, words = [], {}
            for m in ("train_loss", "test_loss"):
                if m not in by:
                    cells += ["–"] * 5
                    continue
                rr = by[m]["regular_regular_vs_zero"]
                words[m] = _claims(by[m])
                trivial = " (trivial: r–r ≈ 0)" if rr["direction"] < 0 else ""
                cells += [
                    fmt(s["regular-regular"]["barriers"][m]) + trivial,
                    over_stars(s["star-source"], m),
                    over_stars(s["star-held-out"], m),
                    *words[m],
                ]
            differ = (
                len(words) == 2
                and words["train_loss"][0] != words["test_loss"][0]
                or (len(words) == 2 and words["train_loss"][1].split(" ")[0] != words["test_loss"][1].split(" ")[0])
            )
            rows.append(
                [
                    f"{res['config']['model']['name']} · {c['epochs']} ep · {c.get('optimizer', '–')} lr {c.get('lr', float('nan')):g} · wd {c['weight_decay']:g}",
                    f"{g(conv['train_loss']['mean'], '.4f')} / {100 * conv['min_train_acc']:.2f}"
                    + ("" if conv["converged"] else " **not converged**")
                    if conv
                    else "–",
                    f"{100 * ep['sources']['test_acc']['mean']:.2f} / {fmt(stars, 100, 2, n=False)}",
                    *cells,
                    "**yes**" if differ else "no",
                ]
            )
    header = ["cell", "train loss / lowest train acc (%)", "test acc (%): sources / stars"]
    for m in ("train loss", "test loss"):
        header += [f"{m}: r–r (pairs)", f"{m}: s–s (stars)", f"{m}: s–h (stars)", f"{m}: s–s ≈ 0", f"{m}: s–h < r–r"]
    return table([*header, "verdicts differ between losses?"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["width", "cnn", "settings", "grid"])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    runs = [(r, load(r)) for r in args.runs]
    if args.kind == "width":
        for _, res in runs:
            print(width_table(res), end="\n\n")
        return
    if args.kind == "settings":
        print(settings_table(runs))
        return
    if args.kind == "grid":
        print(grid_table(runs))
        return
    for run, res in runs:
        print(cnn_tables(run, res))
    for text in (n_sources_table(runs), bn_table(runs), bma_table(runs)):
        if text.count("\n") > 1:  # a header and its rule alone: no run holds that study
            print(text, end="\n\n")


if __name__ == "__main__":
    main()

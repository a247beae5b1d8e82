"""results.json -> report.md + PNG figures, tables ready to paste into a paper.

Every claim of the paper gets a table, a one-line verdict computed from our numbers (never
hard-coded), and — where our setting matches one of the paper's — the paper's figure beside ours.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from stardomain import store

GROUPS = ("regular-regular", "star-source", "star-held-out")
GROUP_LABELS = {"regular-regular": "regular – regular", "star-source": "star θ⋆ – source Z", "star-held-out": "star θ⋆ – held-out H"}

# Paper v1, Table 1 (CIFAR-10, ResNet-18): ℓ2 distances without / with the winning permutation.
PAPER_DISTANCES = {
    ("cifar10", "resnet18"): {"regular-regular": ("30.7 ± 0.19", "28.2 ± 0.37"), "star-held-out": ("29.7 ± 0.18", "26.8 ± 0.45"),
                              "star-source": ("29.8 ± 0.08", "26.8 ± 0.07")},
}
# Paper v1, Table 2 (ResNet-18): test accuracy (%) of regular models, the ensemble and the fused star model.
PAPER_FUSION = {
    ("cifar10", "resnet18"): {2: ("95.2 ± 0.03", "95.8", "95.3 ± 0.16"), 5: ("95.1 ± 0.14", "96.0", "95.2 ± 0.15"), 50: ("95.1 ± 0.16", "96.3", "95.3 ± 0.20")},
    ("cifar100", "resnet18"): {2: ("77.3 ± 0.16", "79.6", "78.0 ± 0.24"), 5: ("77.4 ± 0.21", "80.4", "78.1 ± 0.02"), 50: ("77.3 ± 0.28", "81.3", "78.4 ± 0.10")},
}


def fmt(ms: Mapping[str, float] | None, scale: float = 1.0, digits: int = 3) -> str:
    """'mean ± std' of a mean_std dict (scaled, e.g. 100 for %)."""
    if not ms or ms.get("n", 1) == 0 or ms.get("mean") is None or (isinstance(ms.get("mean"), float) and math.isnan(ms["mean"])):
        return "–"
    return f"{ms['mean'] * scale:.{digits}f} ± {ms['std'] * scale:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _key(results: Mapping[str, Any]) -> tuple[str, str]:
    return results["dataset"]["name"], results["config"]["model"]["name"]


def barrier_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    from stardomain.barrier import Curve
    from stardomain.plots import plot_loss_acc

    summary = results["barriers"]["summary"]
    rows = []
    for g in GROUPS:
        if g in summary:
            b = summary[g]["barriers"]
            rows.append([GROUP_LABELS[g], summary[g]["n_pairs"], fmt(b["test_loss"]), fmt(b["test_acc"], 100, 2),
                         fmt(b["train_loss"]), fmt(b["train_acc"], 100, 2)])
    lines = ["## Loss barriers (paper Fig. 2, v2 Table 1)", "",
             "Barrier = max over t of the metric along the linear path minus its linear interpolation between the end points "
             "(Eq. 1–2); accuracy barriers are the largest drop, in percentage points. Pairs are aligned by "
             f"{results['config']['eval']['align']} matching; BatchNorm statistics are re-estimated on training data at every t.", "",
             table(["pair type", "pairs", "test loss barrier", "test acc barrier (pp)", "train loss barrier", "train acc barrier (pp)"], rows), ""]
    rr = summary.get("regular-regular", {}).get("barriers", {}).get("test_loss", {}).get("mean")
    ss = summary.get("star-source", {}).get("barriers", {}).get("test_loss", {}).get("mean")
    sh = summary.get("star-held-out", {}).get("barriers", {}).get("test_loss", {}).get("mean")
    if None not in (rr, ss, sh):
        lines += ["Verdicts (test loss):", "",
                  f"- regular–regular barrier after matching is {'clearly above 0' if rr > 0.05 else 'close to 0'} ({rr:.3f}): "
                  f"{'the convexity conjecture fails here' if rr > 0.05 else 'this setting is (nearly) linearly connected already, so there is little for a star model to show'}.",
                  f"- star–source barrier {ss:.3f} is {'near 0 (≤ 25% of regular–regular)' if ss <= 0.25 * max(rr, 1e-12) else 'NOT near 0 relative to regular–regular'}.",
                  f"- star–held-out barrier {sh:.3f} is {'below' if sh < rr else 'NOT below'} regular–regular ({sh / rr:.2f}× of it)." if rr > 0 else
                  f"- star–held-out barrier {sh:.3f} (regular–regular is {rr:.3f}).", ""]
    groups = {GROUP_LABELS[g]: [Curve.from_dict(p["curve"]) for p in results["barriers"]["groups"][g]] for g in GROUPS if results["barriers"]["groups"].get(g)}
    path = out / "barrier_curves.png"
    plot_loss_acc(groups, path, title=f"{results['name']}: interpolation curves (test)")
    figures.append(path.name)
    lines += [f"![interpolation curves]({path.name})", ""]
    return lines


def distances_section(results: Mapping[str, Any]) -> list[str]:
    d = results["distances"]
    ref = PAPER_DISTANCES.get(_key(results))
    header = ["pair type", "ℓ2 w/o perm", "ℓ2 w/ perm"] + (["paper w/o", "paper w/"] if ref else [])
    rows = []
    for g in GROUPS:
        if g in d:
            row = [GROUP_LABELS[g], fmt(d[g]["l2"], digits=2), fmt(d[g]["l2_aligned"], digits=2)]
            if ref:
                row += list(ref.get(g, ("–", "–")))
            rows.append(row)
    lines = ["## ℓ2 distances (paper Table 1)", "", table(header, rows), ""]
    rr, sh = d.get("regular-regular"), d.get("star-held-out")
    if rr and sh:
        closer = sh["l2_aligned"]["mean"] < rr["l2_aligned"]["mean"]
        lines += [f"Star models are {'closer to' if closer else 'NOT closer to'} held-out solutions than regular solutions are to each other "
                  f"after permutation ({sh['l2_aligned']['mean']:.2f} vs {rr['l2_aligned']['mean']:.2f}).", ""]
    return lines


def n_sources_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    from stardomain.plots import plot_series

    ns = results["n_sources"]
    rows = [[r["n_sources"], fmt(r["star_held_out"]["test_loss"]), fmt(r["star_held_out"]["test_acc"], 100, 2), f"{100 * r['star_test_acc']:.2f}"]
            for r in ns["rows"]]
    lines = ["## Starness vs number of sources (paper Fig. 3)", "",
             table(["\\|Z\\|", "star–held-out test loss barrier", "test acc barrier (pp)", "star test acc (%)"], rows), ""]
    ref = ns.get("regular_regular")
    if ref:
        lines += [f"Reference regular–regular test loss barrier: {fmt(ref['test_loss'])}.", ""]
    vals = [r["star_held_out"]["test_loss"]["mean"] for r in ns["rows"]]
    if len(vals) >= 2:
        lines += [f"Barrier to held-out models {'decreases' if vals[-1] < vals[0] else 'does NOT decrease'} from |Z|={ns['rows'][0]['n_sources']} "
                  f"({vals[0]:.3f}) to |Z|={ns['rows'][-1]['n_sources']} ({vals[-1]:.3f}).", ""]
    xs = [r["n_sources"] for r in ns["rows"]]
    series = {"star – held-out": ([r["star_held_out"]["test_loss"]["mean"] for r in ns["rows"]], [r["star_held_out"]["test_loss"]["std"] for r in ns["rows"]])}
    if ref:
        series["regular – regular"] = ([ref["test_loss"]["mean"]] * len(xs), [ref["test_loss"]["std"]] * len(xs))
    path = out / "n_sources.png"
    plot_series(xs, series, "number of source models |Z|", "test loss barrier", path)
    figures.append(path.name)
    return lines + [f"![barrier vs |Z|]({path.name})", ""]


def bma_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    from stardomain.bma import plot_bma

    b = results["bma"]
    names = {"star_domain": "star-domain BMA", "ensemble": "deep ensemble"}
    metric_names = ["accuracy", "nll", "ece", "brier", "auroc_max_prob", "auroc_neg_entropy"]
    rows = []
    for key, label in names.items():
        m = b[key]["metrics"]
        k = b[key]["k"][-1]
        rows.append([label, k] + [f"{m[name][-1]:.4f}" for name in metric_names])
    for key, label in (("star", "star model alone"), ("single", "single regular model")):
        if key in b:
            rows.append([label, 1] + [f"{b[key][name]:.4f}" for name in metric_names])
    lines = ["## Bayesian model averaging over the star domain (paper Fig. 5)", "",
             table(["posterior", "K", "accuracy", "NLL", "ECE", "Brier", "AUROC (max prob)", "AUROC (neg. entropy)"], rows), ""]
    sd, en = b["star_domain"]["metrics"], b["ensemble"]["metrics"]
    kmax = min(len(sd["auroc_max_prob"]), len(en["auroc_max_prob"]))
    if kmax >= 2:
        ks = range(1, kmax)
        wins = sum(sd["auroc_max_prob"][i] > en["auroc_max_prob"][i] for i in ks)
        lines += [f"Star-domain BMA has the higher AUROC (max prob) at {wins} of {len(ks)} values of K ≥ 2 "
                  f"(paper: better AUROC, worse ECE); ECE at K={kmax}: {sd['ece'][kmax - 1]:.4f} vs {en['ece'][kmax - 1]:.4f}.", ""]
    path = out / "bma.png"
    plot_bma(b, path)
    figures.append(path.name)
    return lines + [f"![BMA vs K]({path.name})", ""]


def fusion_section(results: Mapping[str, Any]) -> list[str]:
    f = results["fusion"]
    ref = PAPER_FUSION.get(_key(results))
    header = ["\\|Z\\|", "regular models (%)", "best regular (%)", "ensemble (%)", "fused star (%)"] + (["paper regular / ens. / star"] if ref else [])
    rows = []
    for r in f["rows"]:
        row = [r["n_sources"], f"{100 * r['regular_acc_mean']:.2f} ± {100 * r['regular_acc_std']:.2f}", f"{100 * r['best_regular_acc']:.2f}",
               f"{100 * r['ensemble_acc']:.2f}", f"{100 * r['star_acc']:.2f}"]
        if ref:
            row.append(" / ".join(ref[r["n_sources"]]) if r["n_sources"] in ref else "–")
        rows.append(row)
    last = f["rows"][-1]
    cost = last.get("cost", {})
    lines = [f"## Model fusion (paper Table 2; star trained with μ = {f['mu']:g})", "", table(header, rows), ""]
    if cost:
        lines += ["Inference cost per input (for the largest |Z|): " + "; ".join(
            f"{name}: {c['forward_passes']} forward pass(es), {c['parameters']:,} parameters held" for name, c in cost.items()), ""]
    beats = sum(r["star_acc"] > r["regular_acc_mean"] for r in f["rows"])
    lines += [f"The fused star model beats the mean regular model at {beats} of {len(f['rows'])} sizes.", ""]
    return lines


def setting_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    out = []
    for r in rows:
        s = r["summary"]
        out.append([r["tag"], ", ".join(f"{k}={v}" for k, v in r["options"].items()),
                    fmt(s.get("regular-regular", {}).get("barriers", {}).get("test_loss")),
                    fmt(s.get("star-held-out", {}).get("barriers", {}).get("test_loss")),
                    fmt(s.get("star-source", {}).get("barriers", {}).get("test_loss")),
                    fmt(r["regular_metrics"]["test_acc"], 100, 2), f"{100 * r['star_metrics']['test_acc']:.2f}"])
    return out


def width_depth_section(results: Mapping[str, Any], out: Path, figures: list[str]) -> list[str]:
    from stardomain.plots import plot_series

    rows = results["width_depth"]["rows"]
    header = ["setting", "options", "regular–regular", "star–held-out", "star–source", "regular acc (%)", "star acc (%)"]
    lines = ["## Width and depth (paper v2 Fig. 2): test loss barriers", "", table(header, setting_rows(rows)), ""]
    xs = list(range(len(rows)))
    series = {}
    for g in ("regular-regular", "star-held-out"):
        ms = [r["summary"].get(g, {}).get("barriers", {}).get("test_loss", {"mean": float("nan"), "std": 0.0}) for r in rows]
        series[GROUP_LABELS[g]] = ([m["mean"] for m in ms], [m["std"] for m in ms])
    path = out / "width_depth.png"
    plot_series(xs, series, "setting (" + ", ".join(r["tag"] for r in rows) + ")", "test loss barrier", path)
    figures.append(path.name)
    return lines + [f"![barriers across width/depth]({path.name})", ""]


def optimizer_section(results: Mapping[str, Any]) -> list[str]:
    r = results["optimizer"]
    header = ["setting", "options", "regular–regular", "star–held-out", "star–source", "regular acc (%)", "star acc (%)"]
    return [f"## Optimizer: {r['optimizer']}-trained sources and star (paper v2 Table 1, second row)", "",
            table(header, setting_rows([{**r, "options": {"optimizer": r["optimizer"]}}])), ""]


def write_report(results: Mapping[str, Any], out: Path) -> Path:
    """Write report.md and figures into ``out``; returns the report path."""
    cfg = results["config"]
    figures: list[str] = []
    m = results["models"]
    lines = [f"# stardomain report: {results['name']}", "",
             f"Dataset **{results['dataset']['name']}** ({results['dataset']['train']} train / {results['dataset']['test']} test), "
             f"model **{cfg['model']['name']}** {cfg['model']['options'] or ''}, |Z| = {cfg['sources']} sources, |H| = {cfg['held_out']} held-out; "
             f"recipe {results['recipe']['optimizer']} lr {results['recipe']['lr']} × {results['recipe']['epochs']} epochs; "
             f"star: μ = {cfg['star']['mu']}, t ~ {cfg['star']['t_sampling']}, matching {cfg['star']['matching']}.", "",
             f"Regular models' test accuracy {fmt(m['regular_test_acc'], 100, 2)} %; star model {100 * m['star_metrics']['test_acc']:.2f} %.", ""]
    if "barriers" in results:
        lines += barrier_section(results, out, figures)
    if "distances" in results:
        lines += distances_section(results)
    if "n_sources" in results:
        lines += n_sources_section(results, out, figures)
    if "bma" in results:
        lines += bma_section(results, out, figures)
    if "fusion" in results:
        lines += fusion_section(results)
    if "width_depth" in results:
        lines += width_depth_section(results, out, figures)
    if "optimizer" in results:
        lines += optimizer_section(results)
    lines += ["---", f"Machine-readable numbers: `results.json` (schema {results['schema_version']}). Figures: " + ", ".join(figures) + "."]
    path = out / "report.md"
    store.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path

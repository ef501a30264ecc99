"""Statistics, summary, plot and Markdown of benchmarks/classification_real.py."""
import numpy as np

from imagescore_det.evaluation.auroc import auroc
from imagescore_det.evaluation.bootstrap import resample_weights

from _bench_cli import save_figure  # benchmarks/, beside this file


def within_class_auroc(scores, positive, pred):
    """AUROC inside each predicted class (what the selection ranks), weighted by class size."""
    parts = [(auroc(scores[pred == c], positive[pred == c]), np.sum(pred == c))
             for c in np.unique(pred)]
    parts = [(a, n) for a, n in parts if a is not None]
    return float(sum(a * n for a, n in parts) / sum(n for _, n in parts)) if parts else None


def decile_accuracy(scores, correct, bins=10):
    """Pseudo-label accuracy in equal-count score bins, lowest scores first."""
    order = np.lexsort((np.arange(len(scores)), scores))
    return [float(np.mean(correct[part])) for part in np.array_split(order, bins) if len(part)]


def paired_bootstrap(correct_a, correct_b, groups, resamples=1000, seed=0):
    """One-sided paired bootstrap of B - A over test crops, overall and per group (class).

    ``correct_*``: (N,) per-crop correctness (0/1, or the mean over seeds). Each resample
    draws the crops with replacement, the same draw for A and B; p = the share of resamples
    in which B does not beat A (ties count half): small p = B better, identical runs 0.5.
    """
    weights = resample_weights(len(correct_a), resamples, seed)
    diff = np.asarray(correct_b, float) - np.asarray(correct_a, float)
    out = {}
    for name, members in [("overall", np.ones(len(groups), bool))] + [
            (c, groups == c) for c in np.unique(groups)]:
        w = weights[:, members]
        drawn = w.sum(1) > 0
        d = (w @ diff[members])[drawn] / w.sum(1)[drawn]
        out[name] = {"difference": float(diff[members].mean()), "n": int(members.sum()),
                     "p_value": float((np.sum(d < 0) + 0.5 * np.sum(d == 0)) / len(d))}
    return out


def mean_std(values):
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "values": values.tolist()}


def summarize(results, selectors, y_test, classes, resamples):
    """Mean +- std over seeds; the paired bootstrap on the seed-mean correctness per test crop."""
    out = {"accuracy_before": mean_std([r["accuracy_before"] for r in results]),
           "pretrain_curve_mean": np.mean([r["pretrain_curve"] for r in results], 0).tolist(),
           "selectors": {}, "pool": {}, "per_class_accuracy": {}, "bootstrap": {}}
    correct = {s: np.mean([r["selectors"][s]["test_correct"] for r in results], 0)
               for s in selectors}
    for s in selectors:
        runs = [r["selectors"][s] for r in results]
        entry = {"accuracy_after": mean_std([x["accuracy"] for x in runs]),
                 "gain": mean_std([x["accuracy"] - r["accuracy_before"]
                                   for x, r in zip(runs, results)]),
                 "curve_mean": np.mean([x["curve"] for x in runs], 0).tolist(),
                 "seconds": mean_std([x["seconds"] for x in runs])}
        if "none" in selectors and s != "none":  # paired by seed: same checkpoint, same order
            diffs = [x["accuracy"] - r["selectors"]["none"]["accuracy"]
                     for x, r in zip(runs, results)]
            entry["vs_none_per_seed"] = dict(mean_std(diffs),
                                             seeds_better=int(np.sum(np.array(diffs) > 0)))
        if s != "none":
            entry["selected_count"] = mean_std(
                [np.mean([e["count"] for e in x["selected"]]) for x in runs])
            entry["selected_precision_first_epoch"] = mean_std(
                [x["selected"][0]["precision"] for x in runs])
            entry["selected_precision_all_epochs"] = mean_std(
                [np.mean([e["precision"] for e in x["selected"]]) for x in runs])
        out["selectors"][s] = entry
        out["per_class_accuracy"][s] = {classes[c]: float(correct[s][y_test == c].mean())
                                        for c in np.unique(y_test)}
        for base in ("none", "softmax", "random"):
            if base in selectors and base != s:
                boot = paired_bootstrap(correct[base], correct[s], y_test, resamples)
                out["bootstrap"].setdefault(f"vs_{base}", {})[s] = {
                    (k if k == "overall" else classes[k]): v for k, v in boot.items()}
    pools = [r["pool"] for r in results]
    for key in ("auroc", "auroc_within_class"):
        out["pool"][key] = {k: mean_std([p[key][k] for p in pools]) for k in pools[0][key]}
    out["pool"]["decile_accuracy"] = {
        k: np.mean([p["decile_accuracy"][k] for p in pools], 0).tolist()
        for k in pools[0]["decile_accuracy"]}
    out["pool"]["pseudo_label_accuracy"] = mean_std([p["pseudo_label_accuracy"] for p in pools])
    return out


def plot(path, summary, selectors):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(17, 4.8))
    pre = summary["pretrain_curve_mean"]
    ax[0].plot(range(1, len(pre) + 1), pre, color="black", label="pre-train (labeled)")
    for s in selectors:
        c = summary["selectors"][s]["curve_mean"]
        ax[0].plot(range(len(pre), len(pre) + len(c) + 1), [pre[-1]] + c, label=s, lw=1.2)
    ax[0].set(xlabel="epoch", ylabel="test accuracy (mean over seeds)", title="test accuracy")
    ax[0].legend(fontsize=7)
    for k, dec in summary["pool"]["decile_accuracy"].items():
        ax[1].plot(range(1, len(dec) + 1), dec, marker="o", label=k)
    ax[1].set(xlabel="score decile (1 = lowest scores)", ylabel="pseudo-label accuracy",
              title="pool pseudo-label accuracy by score decile\n(pre-trained checkpoint)")
    ax[1].legend(fontsize=7)
    after = [summary["selectors"][s]["accuracy_after"] for s in selectors]
    ax[2].bar(range(len(selectors)), [a["mean"] for a in after], yerr=[a["std"] for a in after],
              color="#1f77b4")
    ax[2].axhline(summary["accuracy_before"]["mean"], color="black", ls="--",
                  label="before continuation")
    lo = min(a["mean"] - a["std"] for a in after + [summary["accuracy_before"]])
    ax[2].set_ylim(max(0.0, lo - 0.03), None)
    ax[2].set_xticks(range(len(selectors)))
    ax[2].set_xticklabels(selectors, rotation=35, ha="right", fontsize=8)
    ax[2].set(ylabel="test accuracy after continuation", title="mean ± std over seeds")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def pm(d, scale=100.0, digits=1):
    return f"{d['mean'] * scale:.{digits}f} ± {d['std'] * scale:.{digits}f}"


def verdict(boot, s, base):
    b = boot.get(f"vs_{base}", {}).get(s, {}).get("overall")
    if b is None:
        return f"({base} not run)"
    p = b["p_value"]
    word = ("better than" if p < 0.05 else "worse than" if p > 0.95
            else "not distinguishable from")
    return f"{word} {base} ({b['difference'] * 100:+.2f} points, one-sided p = {p:.3f})"


def auroc_words(value):
    return ("about chance" if value < 0.55 else "weak" if value < 0.65 else
            "moderate" if value < 0.8 else "strong")


def answers(summary, selectors):
    pool, boot, sel, lines = summary["pool"], summary["bootstrap"], summary["selectors"], []
    au, wc = pool["auroc"], pool["auroc_within_class"]
    variants = [k for k in au if k.startswith("image_score")]
    if variants:
        best = max(variants, key=lambda k: wc[k]["mean"])
        lines.append(
            "* **Does the image score predict whether a pseudo-label is correct?** AUROC on the "
            "pool at the pre-trained checkpoint (0.5 = chance; \"within class\" ranks inside each "
            "predicted class, as the selection does): image_score "
            f"{au['image_score']['mean']:.3f} ({auroc_words(au['image_score']['mean'])}), within "
            f"class {wc['image_score']['mean']:.3f} ({auroc_words(wc['image_score']['mean'])}); "
            f"the best variant, {best}, {au[best]['mean']:.3f}, within class "
            f"{wc[best]['mean']:.3f} ({auroc_words(wc[best]['mean'])}); softmax confidence "
            f"{au['softmax']['mean']:.3f}, within class {wc['softmax']['mean']:.3f} "
            f"({auroc_words(wc['softmax']['mean'])}). "
            + ("Every image score variant predicts correctness worse than softmax confidence."
               if all(wc[v]["mean"] < wc["softmax"]["mean"] for v in variants) else
               "Some variant predicts correctness at least as well as softmax confidence."))
    for s in [x for x in selectors if x.startswith("image_score")]:
        prec = sel[s]["selected_precision_first_epoch"]["mean"]
        others = ", ".join(f"{o} {sel[o]['selected_precision_first_epoch']['mean'] * 100:.1f}%"
                           for o in ("softmax", "random") if o in sel)
        lines.append(f"* **{s}**: test accuracy {verdict(boot, s, 'softmax')}; "
                     f"{verdict(boot, s, 'random')}. Its first selection's pseudo-labels are "
                     f"{prec * 100:.1f}% correct ({others}).")
    pseudo = [s for s in selectors if s not in ("none", "oracle")]
    if "none" in selectors and pseudo:
        p = {s: boot["vs_none"][s]["overall"]["p_value"] for s in pseudo}
        wins = [s for s in pseudo if p[s] < 0.05]
        held = [s for s in wins if p[s] * len(pseudo) < 0.05]
        lines.append(
            "* **Does pseudo-labeling beat training longer on the labeled crops only (none)?** "
            + "; ".join(f"{s}: {verdict(boot, s, 'none')}, better in "
                        f"{sel[s]['vs_none_per_seed']['seeds_better']} of "
                        f"{len(sel[s]['accuracy_after']['values'])} seeds" for s in pseudo) + ". "
            + (f"p < 0.05 for {', '.join(wins)}; after a Bonferroni correction for the "
               f"{len(pseudo)} selectors (p x {len(pseudo)}) "
               + (f"{', '.join(held)} still is." if held else "none is.")
               if wins else "No selector is significantly better than none."))
        if "oracle" in selectors:
            lines.append("* The oracle (random's crops with their true labels: an upper bound "
                         "for pseudo-labels at this count) is "
                         f"{verdict(boot, 'oracle', 'none')}.")
    lines.append("* The p-values come from a paired bootstrap over the test crops of the "
                 "seed-mean correctness: they measure test-set sampling, not the seed-to-seed "
                 "spread (the ± columns show that). The per-class tables hold many comparisons: "
                 "expect about 1 in 20 cells with p < 0.05 by chance.")
    return "\n".join(lines)


def class_table(summary, base):
    table = summary["bootstrap"].get(f"vs_{base}")
    if not table:
        return []
    cols = list(table)
    acc = summary["per_class_accuracy"][base]
    out = ["", f"## Per-class test accuracy difference vs {base} (points; one-sided paired "
               "bootstrap p that the selector is not better)\n",
           f"| class | test crops | {base} accuracy | " + " | ".join(cols) + " |",
           "| --- | --- | --- |" + " --- |" * len(cols)]
    for row in table[cols[0]]:
        a = summary["selectors"][base]["accuracy_after"]["mean"] if row == "overall" else acc[row]
        a = f"{a * 100:.1f}"
        out.append(f"| {row} | {table[cols[0]][row]['n']} | {a} | " + " | ".join(
            f"{table[c][row]['difference'] * 100:+.1f} (p={table[c][row]['p_value']:.2f})"
            for c in cols) + " |")
    return out


def markdown(summary, meta, selectors, png_name):
    sel = summary["selectors"]
    out = ["# Classification experiment on real photos (Image Score Tables 1-2, CPU-sized)\n",
           f"Command: `{meta['command']}` ({meta['threads']} thread, {meta['machine']}). "
           f"Seeds {meta['seeds']}. Compute recorded in the per-seed results (pre-training, pool "
           f"analysis, selectors; summed over seeds): {meta['compute_seconds'] / 60:.1f} min; "
           f"wall time: {meta['wall_seconds'] / 60:.1f} min (this invocation "
           f"{meta['invocation_seconds'] / 60:.1f} min, plus "
           f"{meta['reused_seconds'] / 60:.1f} min of per-seed steps reused from the work dir, "
           "timed when they ran).\n",
           f"Data: {meta['root']}: crops ({meta['crop_size']} px, context {meta['context']} of "
           f"the box on each side, boxes under {meta['min_box']} px skipped): labeled "
           f"{meta['crops']['labeled']}, pool {meta['crops']['unlabeled']}, test "
           f"{meta['crops']['test']}. Skips and clips per split: {meta['data_stats']}.\n",
           f"Model: SmallCNN (4 conv blocks {meta['widths']}, BN, ReLU; the 4 ReLUs are the "
           f"scored layers), SGD; pre-train {meta['epochs']} epochs on the labeled crops, then "
           f"{meta['continue_epochs']} epochs per selector from the same checkpoint, selection "
           f"refreshed every epoch, alpha = {meta['alpha']} per predicted class (equal counts). "
           "`none` trains as many SGD steps per epoch as the selectors (more passes over the "
           "labeled crops). Oracle = the crops random chooses, trained on with their true "
           "labels (an upper bound for pseudo-labels at this count). "
           f"{meta['note']}\n",
           "## Answers\n", answers(summary, selectors), "",
           "## Test accuracy (%)\n",
           f"Before continuation (the pre-trained checkpoint): {pm(summary['accuracy_before'])}.\n",
           "| selector | after (mean ± std) | gain vs before | per seed | vs none, paired by seed "
           "(seeds better) | selected / epoch | precision of the selected pseudo-labels (1st "
           "epoch; all epochs) |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in selectors:
        e = sel[s]
        has = "selected_count" in e
        prec = (f"{pm(e['selected_precision_first_epoch'])}; "
                f"{pm(e['selected_precision_all_epochs'])}" if has else "–")
        count = f"{e['selected_count']['mean']:.0f}" if has else "0"
        seeds = " / ".join(f"{v * 100:.1f}" for v in e["accuracy_after"]["values"])
        paired = (f"{pm(e['vs_none_per_seed'], digits=2)} ({e['vs_none_per_seed']['seeds_better']})"
                  if "vs_none_per_seed" in e else "–")
        out.append(f"| {s} | {pm(e['accuracy_after'])} | {pm(e['gain'], digits=2)} | {seeds} | "
                   f"{paired} | {count} | {prec} |")
    out += ["", "Pool pseudo-label accuracy at the checkpoint: "
                f"{pm(summary['pool']['pseudo_label_accuracy'])}.\n",
            "## Does the score predict a correct pseudo-label? (pool, pre-trained checkpoint)\n",
            "| score | AUROC | AUROC within predicted class | pseudo-label accuracy by score "
            "decile, lowest → highest |", "| --- | --- | --- | --- |"]
    for k, a in summary["pool"]["auroc"].items():
        dec = " ".join(f"{v:.2f}" for v in summary["pool"]["decile_accuracy"][k])
        within = pm(summary["pool"]["auroc_within_class"][k], 1, 3)
        out.append(f"| {k} | {pm(a, 1, 3)} | {within} | {dec} |")
    out += class_table(summary, "none") + class_table(summary, "softmax")
    out += ["", f"![{png_name}]({png_name})", ""]
    return "\n".join(out)

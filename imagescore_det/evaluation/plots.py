"""PNG plots of a selection round: score histogram and pseudo-label precision by score bin."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return os.path.basename(path)


def score_histogram(path, scores, chosen, title, groups=None,
                    chosen_label="selected (pseudo-labeled)"):
    """Histogram of the pool's scores, the selected part highlighted.

    ``groups``: optional {label: boolean mask over the pool} drawn as outlines (e.g. the
    synthetic pool's typical/shifted domains).
    """
    scores = np.asarray(scores, dtype=np.float64)
    sel = np.zeros(len(scores), dtype=bool)
    sel[np.asarray(chosen, dtype=np.int64)] = True
    bins = np.histogram_bin_edges(scores, bins=min(40, max(5, len(scores) // 5)))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(scores[~sel], bins=bins, color="#bbbbbb", label="not selected")
    ax.hist(scores[sel], bins=bins, color="#1f77b4", label=chosen_label)
    for (label, mask), color in zip((groups or {}).items(), ("#2ca02c", "#d62728", "#9467bd")):
        ax.hist(scores[np.asarray(mask)], bins=bins, histtype="step", lw=1.5, color=color,
                label=label)
    ax.set_xlabel("score")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def precision_by_bin_plot(path, bins, title,
                          xlabel="score bin of the selected images (equal counts, low to high)"):
    """Bar chart of pseudo-label precision per score bin (the detection Figure 2)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = [f"{b['score_min']:.3g}..{b['score_max']:.3g}" for b in bins]
    prec = [b["precision"] if b["precision"] is not None else 0.0 for b in bins]
    ax.bar(range(len(bins)), prec, color="#1f77b4")
    for i, b in enumerate(bins):
        ax.text(i, prec[i] + 0.01, f"{b['boxes']} boxes", ha="center", fontsize=7)
    ax.set_xticks(range(len(bins)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pseudo-box precision @ IoU 0.5")
    ax.set_title(title)
    return _save(fig, path)


def plot_round(out_dir, scores, chosen, manifest, groups=None):
    """Draw a round's plots into ``out_dir``; returns the file names written."""
    k, sel = manifest["round"], manifest["selector"]
    files = [score_histogram(os.path.join(out_dir, "score_histogram.png"), scores, chosen,
                             f"round {k}: {sel} scores of the unlabeled pool", groups)]
    if manifest.get("precision_by_score_bin"):
        files.append(precision_by_bin_plot(
            os.path.join(out_dir, "precision_by_score_bin.png"),
            manifest["precision_by_score_bin"], f"round {k}: pseudo-label precision by {sel} score"))
    if manifest.get("pool_precision_by_score_bin"):
        files.append(precision_by_bin_plot(
            os.path.join(out_dir, "pool_precision_by_score_bin.png"),
            manifest["pool_precision_by_score_bin"],
            f"round {k}: precision by {sel} score, whole pool (deciles)",
            xlabel="score bin over the whole pool (equal counts, low to high)"))
    return files

"""ImageScoreHook: select, pseudo-label and register unlabeled images during training."""
import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import random

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..data import dataset_domains
from ..data.pseudo import (load_pseudo_dataset, predictions_to_dicts, pseudo_dataset_name,
                           register_pseudo_dataset, save_pseudo_dataset)
from ..evaluation.pseudo_labels import precision_by_score_bin, pseudo_label_quality
from ..utils import atomic_write_json, atomic_write_text
from . import selection

logger = logging.getLogger(__name__)

MANIFEST = "selection.json"


def round_iterations(cfg):
    """Iterations at which a selection round runs: START_ITER, then every REFRESH_PERIOD."""
    s = cfg.IMAGE_SCORE
    if not s.ENABLED or s.SELECTOR == "none":
        return []
    if s.REFRESH_PERIOD <= 0:
        return [s.START_ITER]
    return list(range(s.START_ITER, cfg.SOLVER.MAX_ITER, s.REFRESH_PERIOD))


def config_fingerprint(cfg):
    """What a saved selection depends on (a resumed run reuses it only if this matches)."""
    keys = {"IMAGE_SCORE": cfg.IMAGE_SCORE, "TRAIN": cfg.DATASETS.TRAIN,
            "MODEL": cfg.MODEL.META_ARCHITECTURE, "BACKBONE": cfg.MODEL.BACKBONE.NAME,
            "INPUT_TEST": (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)}
    return hashlib.sha256(repr(keys).encode()).hexdigest()[:16]


class ImageScoreHook(HookBase):
    """At each round iteration: score the unlabeled pool, pseudo-label the top fraction,
    register it and switch the trainer's data loader to labeled + pseudo-labeled images.

    Everything a resumed or audited run needs is written under
    ``OUTPUT_DIR/image_score/round_<k>/`` (mask, scores.csv, pseudo_dataset.json, plots and
    the ``selection.json`` manifest, written last: a round without it is incomplete and is
    recomputed).
    """

    def __init__(self, cfg, build_train_loader, evaluate=None):
        """
        Args:
            build_train_loader: callable(cfg) -> data loader (the trainer's).
            evaluate: callable() -> results dict, run before the first round when
                IMAGE_SCORE.EVAL_BEFORE (the "before pseudo-labels" mAP).
        """
        self.cfg = cfg.clone()
        self.rounds = round_iterations(cfg)
        self._build_train_loader = build_train_loader
        self._evaluate = evaluate
        self.out_dir = os.path.join(cfg.OUTPUT_DIR, "image_score")
        self.history = []  # manifests of the rounds done or reloaded in this process
        self.eval_before = None
        self._pool = None

    # ----------------------------------------------------------------------- layout
    def round_dir(self, k):
        return os.path.join(self.out_dir, f"round_{k}")

    def _load_manifest(self, k):
        path = os.path.join(self.round_dir(k), MANIFEST)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    # ----------------------------------------------------------------------- hooks
    def _load_pool(self):
        """The unlabeled pool's dataset dicts, loaded once (an empty pool is an error)."""
        if self._pool is None:
            names = self.cfg.IMAGE_SCORE.UNLABELED_DATASETS
            pool = []
            for name in names:
                pool.extend(DatasetCatalog.get(name))
            if not pool:
                raise ValueError(f"The unlabeled pool IMAGE_SCORE.UNLABELED_DATASETS={tuple(names)} "
                                 "has no images: check the datasets' split files.")
            self._pool = pool
        return self._pool

    def before_train(self):
        start = self.trainer.start_iter
        if any(it >= start for it in self.rounds):
            self._load_pool()  # fail now, not after the warm-up
        done = [k for k, it in enumerate(self.rounds, 1) if it < start]
        if not done:
            return
        # Resumed after a switch: re-register the last round's dataset from disk.
        k = done[-1]
        manifest = self._load_manifest(k)
        if manifest is None:
            raise RuntimeError(
                f"Resuming at iteration {start}, after selection round {k} (iteration "
                f"{self.rounds[k - 1]}), but {self.round_dir(k)}/{MANIFEST} is missing. The "
                "output directory does not belong to this run: resume from the right "
                "OUTPUT_DIR, or start again without --resume.")
        for j in done:
            m = self._load_manifest(j)
            if m is not None:
                self.history.append(m)
        logger.info("Resumed after selection round %d: reloading %s from disk", k,
                    manifest["dataset_name"])
        self._activate(manifest)
        eb = os.path.join(self.out_dir, "eval_before.json")
        if os.path.isfile(eb):
            with open(eb) as f:
                self.eval_before = json.load(f)

    def before_step(self):
        it = self.trainer.iter
        # A round's loaders, evaluation and analysis draw from the global RNGs (e.g. worker
        # seeds); restoring them makes the rest of training see the same random stream
        # whatever the selector, so runs that differ only in SELECTOR stay comparable.
        if it in self.rounds:
            with _preserved_rng():
                self.run_round(self.rounds.index(it) + 1)
        elif (not self.rounds and it == self.cfg.IMAGE_SCORE.START_ITER
              and self.trainer.start_iter <= it):
            with _preserved_rng():
                self._eval_before()  # SELECTOR none: the same "before" point, no pseudo-labels

    # ----------------------------------------------------------------------- a round
    def run_round(self, k):
        cfg = self.cfg
        resumed = self.trainer.start_iter > 0
        manifest = self._load_manifest(k) if resumed else None
        dicts = None  # read from disk
        if manifest is not None and manifest.get("fingerprint") == config_fingerprint(cfg):
            logger.info("Selection round %d found complete on disk; reusing it", k)
        else:
            if k == 1:
                self._eval_before()
            # every rank holds the same pseudo dicts: no rank needs to read rank 0's files
            # (OUTPUT_DIR need not be shared across machines)
            manifest, dicts = self._compute_round(k)
        self.history.append(manifest)
        self._activate(manifest, dicts)
        self._put_scalars(manifest)

    def _eval_before(self):
        if self.cfg.IMAGE_SCORE.EVAL_BEFORE and self._evaluate is not None:
            self.eval_before = self._evaluate()
            if comm.is_main_process():
                atomic_write_json(os.path.join(self.out_dir, "eval_before.json"),
                                  self.eval_before)

    def _model(self):
        model = self.trainer.model
        return model.module if hasattr(model, "module") else model

    def _compute_round(self, k):
        cfg = self.cfg
        s = cfg.IMAGE_SCORE
        pool = self._load_pool()
        model = self._model()
        was_training = model.training
        model.eval()
        logger.info("Selection round %d at iteration %d: %s over %d unlabeled images",
                    k, self.trainer.iter, s.SELECTOR, len(pool))
        timing, scorer = {}, None
        predictions = None
        try:
            if s.SELECTOR == "image_score":
                labeled = []
                for name in (s.LABELED_DATASETS or cfg.DATASETS.TRAIN):
                    labeled.extend(DatasetCatalog.get(name))
                scores, scorer, timing["scoring_s"] = selection.image_scores(
                    cfg, model, labeled, pool)
            elif s.SELECTOR == "softmax":
                predictions, timing["inference_pool_s"] = selection.predict(
                    cfg, model, pool, "infer pool")
                scores = selection.softmax_confidence(predictions, s.BOX_SCORE_THRESH)
            else:  # random
                seed = s.SEED if s.SEED >= 0 else max(cfg.SEED, 0)
                scores = selection.random_scores(len(pool), seed * 1000 + k)
            chosen = selection.select_top(scores, s.TOP_FRACTION)
            logger.info("Rank %d selection digest %s", comm.get_rank(),
                        hashlib.sha256(np.asarray(chosen, dtype=np.int64).tobytes()).hexdigest()[:16])
            if predictions is None:
                chosen_preds, timing["pseudo_label_s"] = selection.predict(
                    cfg, model, [pool[i] for i in chosen])
            else:
                chosen_preds = [predictions[i] for i in chosen]
                timing["pseudo_label_s"] = 0.0
            timing["selection_total_s"] = sum(timing.values())
            if s.ANALYZE_POOL and _has_truth(pool) and predictions is None:
                # analysis only: what pseudo-labels would every pool image have had?
                predictions, timing["analysis_inference_pool_s"] = selection.predict(
                    cfg, model, pool, "analyze pool")
        finally:
            model.train(was_training)

        chosen_dicts = [pool[i] for i in chosen]
        pseudo, box_counts = predictions_to_dicts(chosen_dicts, chosen_preds,
                                                  s.BOX_SCORE_THRESH, s.MIN_BOXES_PER_IMAGE)
        name = pseudo_dataset_name(s.UNLABELED_DATASETS, k)
        domains = _pool_domains(s.UNLABELED_DATASETS, pool)  # synthetic pools only
        manifest = self._summarize(k, name, pool, scores, chosen, chosen_preds, box_counts,
                                   pseudo, timing, domains)
        if s.ANALYZE_POOL and predictions is not None and _has_truth(pool):
            manifest.update(_pool_analysis(scores, chosen, predictions, pool, s))
        if comm.is_main_process():
            self._write_round(k, manifest, pool, scores, chosen, box_counts, pseudo, scorer,
                              domains)
        comm.synchronize()
        return manifest, pseudo

    def _summarize(self, k, name, pool, scores, chosen, chosen_preds, box_counts, pseudo,
                   timing, domains):
        cfg, s = self.cfg, self.cfg.IMAGE_SCORE
        classes = list(MetadataCatalog.get(s.UNLABELED_DATASETS[0]).thing_classes)
        per_class = {c: 0 for c in classes}
        for d in pseudo:
            for a in d["annotations"]:
                per_class[classes[a["category_id"]]] += 1
        sel_scores = scores[chosen]
        m = {
            "round": k, "iteration": self.trainer.iter, "selector": s.SELECTOR,
            "dataset_name": name, "fingerprint": config_fingerprint(cfg),
            "unlabeled_datasets": list(s.UNLABELED_DATASETS), "thing_classes": classes,
            "pool_size": len(pool), "num_selected": int(len(chosen)),
            "num_pseudo_images": len(pseudo),
            "num_dropped_empty": int(sum(c < s.MIN_BOXES_PER_IMAGE for c in box_counts)),
            "num_pseudo_boxes": int(sum(len(d["annotations"]) for d in pseudo)),
            "boxes_per_image": (float(np.mean(box_counts)) if box_counts else 0.0),
            "selected_score_mean": float(np.mean(sel_scores)),
            "selected_score_min": float(np.min(sel_scores)),
            "pool_score_mean": float(np.mean(scores)),
            "per_class_boxes": per_class, "timing": timing,
            "pseudo_dataset": "pseudo_dataset.json",
        }
        if domains is not None:
            m["domains"] = _domain_stats(domains, scores, chosen)
        # Quality against the pool's true boxes, when it has them (never trained on).
        if s.EVAL_PSEUDO_LABELS and _has_truth([pool[i] for i in chosen]):
            rows = _quality(chosen_preds, [pool[i] for i in chosen], s)
            tp, fp, ng = (int(sum(r[j] for r in rows)) for j in range(3))
            m["pseudo_precision"] = tp / (tp + fp) if tp + fp else None
            m["pseudo_recall"] = tp / ng if ng else None
            m["precision_by_score_bin"] = precision_by_score_bin(
                sel_scores, [r[0] for r in rows], [r[1] for r in rows])
            m["_quality_rows"] = rows
        return m

    def _write_round(self, k, manifest, pool, scores, chosen, box_counts, pseudo, scorer,
                     domains):
        d = self.round_dir(k)
        os.makedirs(d, exist_ok=True)
        rows = manifest.pop("_quality_rows", None)
        selected = {int(i): j for j, i in enumerate(chosen)}
        buf = io.StringIO()
        w = csv.writer(buf)
        header = ["image_id", "file_name", "score", "rank", "selected", "pseudo_boxes"]
        if rows is not None:
            header += ["true_positives", "false_positives", "true_boxes"]
        w.writerow(header)
        ranks = np.empty(len(scores), dtype=np.int64)
        ranks[np.lexsort((np.arange(len(scores)), -scores))] = np.arange(1, len(scores) + 1)
        for i, dd in enumerate(pool):
            j = selected.get(i)
            row = [dd.get("image_id", i), dd["file_name"], repr(float(scores[i])), int(ranks[i]),
                   int(j is not None), box_counts[j] if j is not None else ""]
            if rows is not None:
                row += list(rows[j]) if j is not None else ["", "", ""]
            w.writerow(row)
        atomic_write_text(os.path.join(d, "scores.csv"), buf.getvalue())
        save_pseudo_dataset(os.path.join(d, "pseudo_dataset.json"), pseudo,
                            {"name": manifest["dataset_name"], "round": k})
        if scorer is not None:
            scorer.save(os.path.join(d, "mask.pt"))
            manifest["mask"] = "mask.pt"
        try:
            from ..evaluation.plots import plot_round

            groups = None if domains is None else {
                f"{g} domain": np.asarray([x == g for x in domains]) for g in sorted(set(domains))}
            manifest["plots"] = plot_round(d, scores, chosen, manifest, groups)
        except Exception as e:  # noqa: BLE001 - a plot must never lose a round
            logger.warning("Could not draw the round %d plots: %s", k, e)
        atomic_write_json(os.path.join(d, MANIFEST), manifest)  # last: marks the round done

    def _activate(self, manifest, dicts=None):
        """Register the round's pseudo dataset and train on labeled + pseudo from now on.

        ``dicts``: the round's pseudo dicts; None reads them from the round's folder.
        """
        if dicts is None:
            path = os.path.join(self.round_dir(manifest["round"]), manifest["pseudo_dataset"])
            dicts, _ = load_pseudo_dataset(path)
        name = register_pseudo_dataset(manifest["dataset_name"], dicts,
                                       self.cfg.IMAGE_SCORE.UNLABELED_DATASETS[0])
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TRAIN = tuple(cfg.DATASETS.TRAIN) + ((name,) if dicts else ())
        cfg.freeze()
        logger.info("Training from now on on %s (%d pseudo-labeled images)",
                    cfg.DATASETS.TRAIN, len(dicts))
        self.trainer._trainer.reset_data_loader(lambda: self._build_train_loader(cfg))

    def _put_scalars(self, m):
        storage = self.trainer.storage
        vals = {"num_selected": m["num_selected"], "num_pseudo_images": m["num_pseudo_images"],
                "num_pseudo_boxes": m["num_pseudo_boxes"],
                "boxes_per_image": m["boxes_per_image"],
                "selected_score_mean": m["selected_score_mean"],
                "selected_score_min": m["selected_score_min"]}
        if m.get("pseudo_precision") is not None:
            vals["pseudo_precision"] = m["pseudo_precision"]
        if m.get("pseudo_recall") is not None:
            vals["pseudo_recall"] = m["pseudo_recall"]
        for c, n in m["per_class_boxes"].items():
            vals[f"boxes/{c}"] = n
        for key, v in m["timing"].items():
            vals[f"time/{key}"] = v
        storage.put_scalars(**{f"image_score/{k}": v for k, v in vals.items()},
                            smoothing_hint=False)


def _anns(p):
    return [{"bbox": list(map(float, b)), "category_id": int(c), "score": float(s)}
            for b, c, s in zip(p["boxes"], p["classes"], p["scores"])]


def _pool_domains(dataset_names, pool):
    """Per pool image, its synthetic domain ("typical"/"shifted"), or None if unknown."""
    known = {}
    for name in dataset_names:
        try:
            d = dataset_domains(name)
        except Exception:  # noqa: BLE001 - not a synthetic dataset
            d = None
        if d is None:
            return None
        known.update(d)
    out = [known.get(str(x.get("image_id"))) for x in pool]
    return None if any(v is None for v in out) else out


def _domain_stats(domains, scores, chosen):
    """How the selection splits across the pool's domains (synthetic data only)."""
    sel = np.zeros(len(scores), dtype=bool)
    sel[np.asarray(chosen, dtype=np.int64)] = True
    doms = np.asarray(domains)
    out = {}
    for g in sorted(set(domains)):
        m = doms == g
        out[g] = {"pool": int(m.sum()), "selected": int((m & sel).sum()),
                  "mean_score": float(np.mean(scores[m]))}
    return out


@contextlib.contextmanager
def _preserved_rng():
    """Restore Python's, NumPy's and torch's (CPU and CUDA) global RNG states on exit."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _has_truth(dicts):
    return all("annotations" in d for d in dicts)


def _quality(predictions, dicts, s):
    """Per image (tp, fp, n_true) of the boxes kept as pseudo-labels, against the truth."""
    kept = [[a for a in _anns(p) if a["score"] >= s.BOX_SCORE_THRESH] for p in predictions]
    return pseudo_label_quality(kept, [d["annotations"] for d in dicts], s.PSEUDO_IOU_THRESH)


def _pool_analysis(scores, chosen, predictions, pool, s, num_bins=10):
    """Precision of the pseudo-labels every pool image would get, by its score (decile
    bins over the whole pool), and for the selected images against the rest."""
    rows = _quality(predictions, pool, s)
    tp, fp = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    sel = np.zeros(len(pool), dtype=bool)
    sel[np.asarray(chosen, dtype=np.int64)] = True

    def prec(mask):
        n = int(tp[mask].sum() + fp[mask].sum())
        return float(tp[mask].sum()) / n if n else None

    return {"pool_precision_by_score_bin": precision_by_score_bin(scores, tp, fp, num_bins),
            "pool_precision_selected": prec(sel), "pool_precision_rest": prec(~sel),
            "pool_precision_all": prec(np.ones(len(pool), dtype=bool))}

#!/usr/bin/env python
"""GPU check: train from scratch, one selection round, evaluate; one JSON of what it measured.

One prepared script for one GPU (budget: about 8 minutes on one H100, of which training is
about 5). Through the project's own Trainer, config and selection code (tools/train_net.py
style), on ``--root``, a VOC-layout root with the splits ``labeled``, ``unlabeled`` and
``test`` (default ``$IMAGESCORE_VOC07REAL`` if set, else ../shared/voc2007-real: 1,000 / 976
/ 500 real VOC2007 photos; its VOC2007 directory is accepted too):

1. trains the paper's VGG16 Faster R-CNN, with BatchNorm and from scratch (no ImageNet
   weights), on ``labeled`` for ``--warmup-iters`` iterations, under AMP
   (``SOLVER.AMP.ENABLED``, float16) -> train images/s;
2. at the round's iteration, times both selections on ``unlabeled`` with the same model:
   softmax (full inference on every pool image) and Image Score (fit the mask on the
   labeled images, IMAGE_SCORE.FIT_MAX_IMAGES of them; score the pool with the backbone;
   pseudo-label the top 30%), plus a plain backbone pass over the pool (the floor) ->
   scoring images/s, full-inference images/s, the ratio image_score / softmax beside its
   floor, at this data's proportions and at VOC's (see bench_selection.py), peak GPU
   memory per phase, host syncs per scored batch (CUDA sync debug mode);
3. the Image Score hook evaluates on ``test`` (AP50 before), runs the image_score round,
   trains ``--continue-iters`` more iterations on labeled + pseudo-labeled images and
   evaluates again (AP50 after). softmax's selection is timed, not trained on.

    python benchmarks/gpu_check.py                              # one GPU, ~8 min
    python benchmarks/gpu_check.py --device cpu --tiny          # toy size, CI (seconds)
    python benchmarks/gpu_check.py --root /data/voc --output /tmp/gpu_check.json
    python benchmarks/gpu_check.py --seeds 42 43                # two runs, ~16 min

The settings it ran with are at the top of the JSON ("settings"). ``--max-train-s`` stops
training early (status "over_budget", the model evaluated as it is) instead of overrunning.
``--seeds``: the run's SEED (training, the fit subsample, the pseudo-labelled round; default
42), one whole check per seed. Writes ``--output`` (default benchmarks/results/gpu_check.json)
atomically; with several seeds ``{"seeds": [...], "runs": [one check's JSON per seed]}``.
With ``--tiny`` and no data at the default root, a small synthetic set is generated (its
own fixed seed: it is the data, not a draw of the run).
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from _bench_cli import ENV, default_voc_root, per_seed, resolve_voc_root, root_help  # noqa: E402

# torch is imported where it is used: --help and a bad --root answer before its import
SPLITS = ("labeled", "unlabeled", "test")

# GPU settings (one H100): full-width VGG16-BN at 480 px, 16 images an iteration
GPU = dict(width=1.0, fc_dim=4096, min_size=480, max_size=800, ims_per_batch=16,
           base_lr=0.02, warmup_iters=400, continue_iters=100, selection_batch=8,
           num_workers=8, post_nms_test=300, max_train_s=330, tiny_images=None)
# toy size on a CPU (the test suite): seconds
TINY = dict(width=0.0625, fc_dim=32, min_size=80, max_size=128, ims_per_batch=2,
            base_lr=0.01, warmup_iters=3, continue_iters=2, selection_batch=2,
            num_workers=0, post_nms_test=32, max_train_s=120, tiny_images=(12, 12, 6))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="toy sizes (a few images, a tiny net)")
    p.add_argument("--root", default=None, help=root_help(SPLITS) + " (with --tiny and no "
                   "data there: a generated synthetic set)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42],
                   help="SEED of the run (training, fit subsample, round); one whole check per "
                   "seed (default 42)")
    p.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "gpu_check.json"),
                   help="JSON result path (default: %(default)s)")
    p.add_argument("--work-dir", default=None, help="OUTPUT_DIR of the run (default: a "
                   "temporary directory; with several seeds, seed_<s>/ under it)")
    p.add_argument("--warmup-iters", type=int, default=None)
    p.add_argument("--continue-iters", type=int, default=None)
    p.add_argument("--max-train-s", type=float, default=None)
    p.add_argument("--selection-batch", type=int, default=None, help="IMAGE_SCORE.BATCH_SIZE")
    p.add_argument("--no-amp", action="store_true", help="SOLVER.AMP.ENABLED False")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    args = p.parse_args(argv)
    preset = dict(TINY if args.tiny else GPU)
    for key in ("warmup_iters", "continue_iters", "max_train_s", "selection_batch"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    args.preset = preset
    # the data is checked here, before torch's import: a bad --root answers at once
    if args.root is None and args.tiny and not os.environ.get(ENV) and \
            not os.path.isdir(default_voc_root()):
        args.voc_dir = None  # main generates a small synthetic set
    else:
        args.voc_dir = resolve_voc_root(args.root, SPLITS)
    return args


# --------------------------------------------------------------------------- data
def class_names_of(dirname):
    """VOC's 20 classes when every object name is one of them, else the sorted names found."""
    from imagescore_det.data import VOC_CLASS_NAMES
    from imagescore_det.data.voc_xml import parse_voc_xml

    names = set()
    for split in SPLITS:
        with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")) as f:
            ids = [line.strip() for line in f if line.strip()]
        for image_id in ids:
            _, _, objects = parse_voc_xml(os.path.join(dirname, "Annotations", f"{image_id}.xml"))
            names.update(name for name, _ in objects)
    if names <= set(VOC_CLASS_NAMES):
        return list(VOC_CLASS_NAMES)
    return sorted(names)


def truncated_root(dirname, counts, work):
    """A VOC root listing only the first ``counts`` ids of each split (links to the images)."""
    out = os.path.join(work, "VOC2007")
    os.makedirs(os.path.join(out, "ImageSets", "Main"), exist_ok=True)
    for sub in ("Annotations", "JPEGImages"):
        if not os.path.exists(os.path.join(out, sub)):
            os.symlink(os.path.abspath(os.path.join(dirname, sub)), os.path.join(out, sub))
    for split, count in zip(SPLITS, counts):
        with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")) as f:
            ids = [line.strip() for line in f if line.strip()][:count]
        with open(os.path.join(out, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    return out


def data_root(args, work):
    root = args.voc_dir  # checked by parse_args; None: --tiny without data
    if root is None:
        from imagescore_det.data import generate_synthetic_voc

        meta = generate_synthetic_voc(os.path.join(work, "synthetic"), seed=3, num_labeled=10,
                                      num_unlabeled=12, num_test=6, min_size=72, max_size=96,
                                      min_obj_size=16, max_obj_size=36, max_objects=3)
        return meta["dirname"], "generated synthetic (no --root and no voc2007-real)"
    if args.preset["tiny_images"]:
        return truncated_root(root, args.preset["tiny_images"], work), \
            f"{root} (first {args.preset['tiny_images']} ids of {SPLITS})"
    return root, root


# --------------------------------------------------------------------------- measuring
class Clock:
    """Wall time of a block, synchronizing the GPU before and after (kernels are async)."""

    def __init__(self, device):
        self.cuda = device == "cuda"

    def sync(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn):
        import torch

        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if self.cuda else None
        return out, seconds, peak


class TrainBudgetExceeded(RuntimeError):
    pass


def make_train_timer(budget_s, skip_iters):
    """A hook: time of each training step (not the round, not evaluation); stops training
    (TrainBudgetExceeded) once the steps alone passed ``budget_s``."""
    from detectron2.engine import HookBase

    class TrainTimer(HookBase):
        def __init__(self):
            self.step_seconds = []
            self.peak_gib = 0.0
            self._t0 = None

        def before_step(self):
            self._t0 = time.perf_counter()

        def after_step(self):
            import torch

            # Detectron2's metrics writer reads the losses back every step, so the step's
            # kernels are done by now
            self.step_seconds.append(time.perf_counter() - self._t0)
            if torch.cuda.is_available():
                self.peak_gib = max(self.peak_gib, torch.cuda.max_memory_allocated() / 2 ** 30)
            if sum(self.step_seconds) > budget_s:
                raise TrainBudgetExceeded(f"training steps took over {budget_s:.0f} s")

        def images_per_second(self, ims_per_batch):
            steps = self.step_seconds[skip_iters:] or self.step_seconds
            return ims_per_batch * len(steps) / max(sum(steps), 1e-9)

    return TrainTimer()


def count_syncs(scorer, batches):
    """Host syncs of a scorer pass on batches already on the GPU (CUDA sync debug mode warns
    at each one). Only meaningful on CUDA."""
    import torch

    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            scorer.score(batches)
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def syncs_per_batch(scorer, batches):
    """(syncs per extra batch, syncs per pass at 0 batches): from passes of n/2 and n batches."""
    half = max(1, len(batches) // 2)
    few, many = count_syncs(scorer, batches[:half]), count_syncs(scorer, batches)
    per_batch = (many - few) / max(len(batches) - half, 1)
    return per_batch, few - per_batch * half


def time_selections(cfg, model, labeled, pool, seed, clock):
    """Both selections' phases on the same model (eval mode), as bench_selection.py does."""
    import torch
    from detectron2.data import DatasetMapper

    from bench_selection import voc_proportions
    from imagescore_det.engine import selection
    from imagescore_det.engine.amp import inference_autocast
    from imagescore_det.engine.batching import size_order
    from imagescore_det.scoring import ImageScorer

    settings = cfg.IMAGE_SCORE
    top = settings.TOP_FRACTION
    selection.predict(cfg, model, pool[:min(len(pool), 2 * settings.BATCH_SIZE)], "warm-up")
    predictions, t_full, peak_full = clock.time(
        lambda: selection.predict(cfg, model, pool, "softmax: infer pool")[0])
    confidence = selection.softmax_confidence(predictions, settings.BOX_SCORE_THRESH)
    softmax_top = selection.select_top(confidence, top)

    ordered = [pool[i] for i in size_order(cfg, pool)] if settings.BATCH_SIZE > 1 else pool

    def backbone_pass():
        with torch.no_grad(), inference_autocast(cfg, model):
            for batch in selection._backbone_batches(model, selection._loader(cfg, ordered),
                                                     [], "plain backbone"):
                model.backbone(batch.inputs)

    _, t_backbone, peak_backbone = clock.time(backbone_pass)
    (scores, scorer, _), t_fit_score, peak_scoring = clock.time(
        lambda: selection.image_scores(cfg, model, labeled, pool, seed=seed))
    fit_dicts = selection.fit_subsample(labeled, settings.FIT_MAX_IMAGES,
                                        selection.fit_seed(cfg, seed))
    if settings.BATCH_SIZE > 1:
        fit_dicts = [fit_dicts[i] for i in size_order(cfg, fit_dicts)]

    def fit_again():
        refit = ImageScorer(model.backbone, layers=scorer.layer_names, grid=scorer.grid,
                            similarity=scorer.similarity, threshold_ratio=scorer.threshold_ratio)
        with inference_autocast(cfg, model):
            refit.fit(selection._backbone_batches(model, selection._loader(cfg, fit_dicts), [],
                                                  "fit mask (timed alone)"))

    _, t_fit, _ = clock.time(fit_again)
    t_score = max(t_fit_score - t_fit, 1e-9)
    chosen = selection.select_top(scores, top)
    pseudo, t_pseudo, _ = clock.time(
        lambda: selection.predict(cfg, model, [pool[i] for i in chosen])[0])

    syncs = None
    if clock.cuda:
        mapper = DatasetMapper(cfg, is_train=False)
        from imagescore_det.scoring import ImageBatch

        device_batches = []
        for start in range(0, min(len(ordered), 8 * settings.BATCH_SIZE), settings.BATCH_SIZE):
            images = model.preprocess_image([mapper(d) for d in ordered[start:start +
                                                                         settings.BATCH_SIZE]])
            device_batches.append(ImageBatch(images.tensor, valid_sizes=[
                tuple(s) for s in images.image_sizes]))
        with inference_autocast(cfg, model):
            syncs = syncs_per_batch(scorer, device_batches)

    n_pool, k = len(pool), len(chosen)
    ratio = (t_score + t_pseudo) / t_full
    floor = t_backbone / t_full + k / n_pool
    precision = {}
    if all("annotations" in d for d in pool):
        from imagescore_det.engine.round import quality_rows
        from imagescore_det.evaluation.pseudo_labels import precision_of

        softmax_preds = [predictions[i] for i in softmax_top]
        for name, indices, preds in (("softmax", softmax_top, softmax_preds),
                                     ("image_score", chosen, pseudo)):
            precision[name] = precision_of(quality_rows(preds, [pool[i] for i in indices],
                                                        settings))["precision"]
    return {
        "pool_images": n_pool, "fit_images": len(fit_dicts), "selected": k,
        "layers": len(scorer.layer_names),
        "seconds": {"softmax_full_inference_pool": t_full, "backbone_only_pool": t_backbone,
                    "image_score_fit": t_fit, "image_score_score_pool": t_score,
                    "image_score_fit_plus_score": t_fit_score,
                    "image_score_pseudo_label_selected": t_pseudo},
        "images_per_s": {"full_inference": n_pool / t_full, "scoring": n_pool / t_score,
                         "backbone_only": n_pool / t_backbone, "fit": len(fit_dicts) / t_fit,
                         "pseudo_label": k / max(t_pseudo, 1e-9)},
        "peak_gpu_memory_gib": {"full_inference": peak_full, "backbone_only": peak_backbone,
                                "image_score_fit_plus_score": peak_scoring},
        "ratio_image_score_vs_softmax": ratio,
        "floor_backbone_share_plus_fraction": floor,
        "backbone_share": t_backbone / t_full,
        "scorer_overhead_vs_backbone": t_score / t_backbone,
        "ratio_including_fit_this_data": ratio + t_fit / t_full,
        "floor_including_fit_this_data": floor + (t_backbone / t_full) * len(fit_dicts) / n_pool,
        "at_voc_proportions": voc_proportions(
            t_full=t_full, t_backbone=t_backbone, t_fit=t_fit, ratio=ratio, floor=floor,
            labeled=len(fit_dicts), pool=n_pool, fit_max_images=settings.FIT_MAX_IMAGES),
        "host_syncs_per_scored_batch": syncs[0] if syncs else None,
        "host_syncs_per_score_pass_fixed": syncs[1] if syncs else None,
        "pseudo_precision_of_selection": precision or None,
    }


# --------------------------------------------------------------------------- main
def build_cfg(args, names, classes, work, seed=42):
    from imagescore_det.engine import load_config

    s = args.preset
    amp = args.device == "cuda" and not args.no_amp
    opts = [
        "MODEL.DEVICE", args.device, "MODEL.WEIGHTS", "", "MODEL.BACKBONE.FREEZE_AT", "0",
        "MODEL.VGG.NORM", "BN", "MODEL.VGG.WIDTH_MULT", str(s["width"]),
        "MODEL.ROI_BOX_HEAD.FC_DIM", str(s["fc_dim"]), "MODEL.ROI_BOX_HEAD.DROPOUT", "0.0",
        "MODEL.ROI_HEADS.NUM_CLASSES", str(len(classes)),
        "MODEL.RPN.POST_NMS_TOPK_TEST", str(s["post_nms_test"]),
        "DATASETS.TRAIN", f"('{names['labeled']}',)", "DATASETS.TEST", f"('{names['test']}',)",
        "INPUT.MIN_SIZE_TRAIN", f"({s['min_size']},)", "INPUT.MAX_SIZE_TRAIN", str(s["max_size"]),
        "INPUT.MIN_SIZE_TEST", str(s["min_size"]), "INPUT.MAX_SIZE_TEST", str(s["max_size"]),
        "SOLVER.IMS_PER_BATCH", str(s["ims_per_batch"]), "SOLVER.REFERENCE_WORLD_SIZE", "0",
        "SOLVER.BASE_LR", str(s["base_lr"]),
        "SOLVER.MAX_ITER", str(s["warmup_iters"] + s["continue_iters"]),
        "SOLVER.STEPS", f"({int(0.8 * s['warmup_iters'])},)",
        "SOLVER.WARMUP_ITERS", str(min(100, max(1, s["warmup_iters"] // 4))),
        "SOLVER.CHECKPOINT_PERIOD", "1000000", "SOLVER.AMP.ENABLED", str(amp),
        "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", str(s["num_workers"]),
        "IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.SELECTOR", "image_score",
        "IMAGE_SCORE.UNLABELED_DATASETS", f"('{names['unlabeled']}',)",
        "IMAGE_SCORE.START_ITER", str(s["warmup_iters"]),
        "IMAGE_SCORE.BATCH_SIZE", str(s["selection_batch"]),
        "IMAGE_SCORE.BACKFILL", "False",  # bounded time: the literal top fraction
        "OUTPUT_DIR", work, "SEED", str(seed), *args.opts]
    cfg = load_config(os.path.join(ROOT, "configs", "faster_rcnn_V16_voc07.yaml"), opts)
    cfg.freeze()
    return cfg


def settings_block(args, cfg, source):
    import torch

    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    return {
        "device": args.device, "gpu": gpu, "tiny": args.tiny,
        "torch": torch.__version__, "cuda": torch.version.cuda if args.device == "cuda" else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "amp": bool(cfg.SOLVER.AMP.ENABLED),
        "amp_dtype": "float16" if cfg.SOLVER.AMP.ENABLED else None,
        "model": f"VGG16-BN x{cfg.MODEL.VGG.WIDTH_MULT} Faster R-CNN from scratch, fc6/fc7 "
                 f"{cfg.MODEL.ROI_BOX_HEAD.FC_DIM}, {cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE} 7x7",
        "data": source, "train_size": [cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TRAIN],
        "test_size": [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST],
        "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH, "base_lr": cfg.SOLVER.BASE_LR,
        "lr_steps": list(cfg.SOLVER.STEPS), "warmup_iters": cfg.IMAGE_SCORE.START_ITER,
        "continue_iters": cfg.SOLVER.MAX_ITER - cfg.IMAGE_SCORE.START_ITER,
        "max_train_s": args.preset["max_train_s"],
        "selection_batch_size": cfg.IMAGE_SCORE.BATCH_SIZE,
        "fit_max_images": cfg.IMAGE_SCORE.FIT_MAX_IMAGES,
        "top_fraction": cfg.IMAGE_SCORE.TOP_FRACTION,
        "box_score_thresh": cfg.IMAGE_SCORE.BOX_SCORE_THRESH, "backfill": cfg.IMAGE_SCORE.BACKFILL,
        "post_nms_topk_test": cfg.MODEL.RPN.POST_NMS_TOPK_TEST,
        "grid": list(cfg.IMAGE_SCORE.GRID), "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "seed": cfg.SEED, "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
    }


def main(argv=None):
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device; use --device cpu --tiny")
    if args.device == "cpu":
        torch.set_num_threads(1)  # many small ops: faster on a shared CPU
    t_start = time.perf_counter()
    from detectron2.utils.logger import setup_logger

    from imagescore_det.utils import atomic_write_json

    setup_logger(name="imagescore_det")
    results = []
    for seed in args.seeds:
        # the first run's total_seconds counts the imports too, as it always did
        result = run_check(args, seed, t_start if not results else time.perf_counter())
        results.append(result)
        # written after every run: a long multi-seed check keeps what it finished
        atomic_write_json(args.output, _plain(per_seed(results, args.seeds[:len(results)])))
        print(json.dumps(result["summary"], indent=2))
        print(f"seed {seed}: status {result['status']}; {result['total_seconds']:.0f} s; "
              f"wrote {args.output}")
    return per_seed(results, args.seeds)


def run_check(args, seed, t_start):
    """One whole check (train, time both selections, the round, evaluate) with SEED
    ``seed``: the JSON of one run."""
    from detectron2.data import DatasetCatalog
    from detectron2.engine import HookBase

    import imagescore_det.engine  # noqa: F401  (registers the backbone and the datasets)
    from imagescore_det.data import register_voc
    from imagescore_det.engine import Trainer
    from imagescore_det.engine.hook import preserved_rng
    from imagescore_det.evaluation import ap50_of

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = os.path.join(tmp, "run")
        if args.work_dir:
            work = args.work_dir if len(args.seeds) == 1 else os.path.join(
                args.work_dir, f"seed_{seed}")
        dirname, source = data_root(args, tmp)
        classes = class_names_of(dirname)
        names = {split: f"gpu_check_{split}" for split in SPLITS}
        for split, name in names.items():
            register_voc(name, dirname, split, 2007, classes, replace=True)
        cfg = build_cfg(args, names, classes, work, seed)
        result = {"settings": settings_block(args, cfg, source), "status": "running"}
        clock = Clock(args.device)
        timer = make_train_timer(args.preset["max_train_s"], skip_iters=min(
            20, max(0, cfg.IMAGE_SCORE.START_ITER // 4)))

        class SelectionTiming(HookBase):
            """At the round's iteration, before the Image Score hook: time both selections."""

            def before_step(self):
                if self.trainer.iter != cfg.IMAGE_SCORE.START_ITER:
                    return
                model = self.trainer.model
                model = model.module if hasattr(model, "module") else model
                was_training = model.training
                model.eval()
                try:
                    with preserved_rng():
                        result["selection"] = time_selections(
                            cfg, model, DatasetCatalog.get(names["labeled"]),
                            DatasetCatalog.get(names["unlabeled"]), cfg.SEED, clock)
                finally:
                    model.train(was_training)

        trainer = Trainer(cfg)
        timing_hook = SelectionTiming()
        trainer.register_hooks([timing_hook, timer])  # the timer last: it times the step only
        trainer._hooks.remove(timing_hook)
        trainer._hooks.insert(0, timing_hook)  # before ImageScoreHook: same model, same step
        trainer.resume_or_load(resume=False)
        t_train = time.perf_counter()
        try:
            trainer.train()
            result["status"] = "ok"
        except TrainBudgetExceeded as e:
            result["status"] = f"over_budget: {e}"
            result["eval_at_stop"] = trainer.test(cfg, trainer.model)
        result["train"] = {
            "iterations_run": len(timer.step_seconds),
            "images_per_s": timer.images_per_second(cfg.SOLVER.IMS_PER_BATCH),
            "step_seconds_total": sum(timer.step_seconds),
            "peak_gpu_memory_gib": timer.peak_gib if args.device == "cuda" else None,
            "wall_seconds_incl_round_and_eval": time.perf_counter() - t_train}
        report_path = os.path.join(work, "report.json")
        report = json.load(open(report_path)) if os.path.isfile(report_path) else {}
        result["ap50_before"] = ap50_of(trainer.image_score_hook.eval_before)
        result["ap50_after"] = ap50_of(report.get("eval_after")) if report else (
            ap50_of(result.get("eval_at_stop")))
        rounds = report.get("rounds") or []
        if rounds:
            result["round"] = {key: rounds[0].get(key) for key in (
                "selector", "num_selected", "num_pseudo_images", "num_pseudo_boxes",
                "pseudo_precision", "timing")}
        sel = result.get("selection") or {}
        result["summary"] = {
            "train_images_per_s": result["train"]["images_per_s"],
            "scoring_images_per_s": (sel.get("images_per_s") or {}).get("scoring"),
            "full_inference_images_per_s": (sel.get("images_per_s") or {}).get("full_inference"),
            "selection_ratio_image_score_vs_softmax": sel.get("ratio_image_score_vs_softmax"),
            "selection_ratio_floor": sel.get("floor_backbone_share_plus_fraction"),
            "peak_gpu_memory_gib": max([v for v in [result["train"]["peak_gpu_memory_gib"]] + list(
                (sel.get("peak_gpu_memory_gib") or {}).values()) if v is not None], default=None),
            "ap50_before": result["ap50_before"], "ap50_after": result["ap50_after"],
        }
        result["total_seconds"] = time.perf_counter() - t_start
        result["machine"] = platform.machine()
    return result


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


if __name__ == "__main__":
    main()

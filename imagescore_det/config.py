"""Config keys added by imagescore-det (``add_imagescore_config``), with their defaults."""
from detectron2.config import CfgNode as CN


def add_imagescore_config(cfg):
    """Add the ``MODEL.VGG`` and ``IMAGE_SCORE`` namespaces to a Detectron2 config.

    Call it right after ``get_cfg()``, before merging a config file, as with other
    Detectron2 projects (e.g. ``add_pointrend_config``).
    """
    _C = cfg

    # ---------------------------------------------------------------------------------
    # Your own datasets, registered when the config is loaded (imagescore_det/data/coco.py;
    # README "Your own data"). Each entry is a list of strings; the names can then be used
    # in DATASETS.TRAIN, DATASETS.TEST, IMAGE_SCORE.UNLABELED_DATASETS / LABELED_DATASETS:
    #   (name, "coco", json_file, image_root)  a COCO instances json (labeling tools'
    #        export) via Detectron2's register_coco_instances; evaluated with COCOEvaluator
    #   (name, "folder", directory)  every image under directory (recursive; jpg, jpeg, png,
    #        webp, bmp, tif) as an unlabeled pool without annotations; its classes are
    #        those of DATASETS.TRAIN
    #   (name, "voc", directory, split[, "class1,class2,..."])  a Pascal VOC root and split
    #        (default classes: its synthetic_meta.json ones, else the 20 VOC classes)
    # Relative paths are relative to $DETECTRON2_DATASETS (default ./datasets). Every dataset
    # of a run must have the same class list (checked when the config is loaded). E.g.
    #   DATASETS.REGISTER "[('mine_train', 'coco', 'mine/train.json', 'mine/images'),
    #                       ('mine_photos', 'folder', 'mine/unlabeled')]"
    _C.DATASETS.REGISTER = []

    # ---------------------------------------------------------------------------------
    # VGG16 backbone (py-faster-rcnn layout: 13 convs, conv5_3 at stride 16, no pool5)
    # ---------------------------------------------------------------------------------
    _C.MODEL.VGG = CN()
    # Channel multiplier: 1.0 is the real VGG16 (64..512 channels); tests and the CPU
    # quickstart use a fraction of it.
    _C.MODEL.VGG.WIDTH_MULT = 1.0
    # Normalization after each conv: "" (none, as in the original VGG16 and its ImageNet
    # weights), "BN", "SyncBN", "GN", "FrozenBN". Training from scratch needs BN or GN.
    _C.MODEL.VGG.NORM = ""
    # Output feature names, any of "conv1_1" ... "conv5_3" (the last conv of each stage is
    # conv{s}_2 for s<=2 and conv{s}_3 for s>=3).
    _C.MODEL.VGG.OUT_FEATURES = ["conv5_3"]
    # (Frozen stages are set by MODEL.BACKBONE.FREEZE_AT, as for ResNets: py-faster-rcnn
    # freezes conv1 and conv2, i.e. 2, when fine-tuning ImageNet weights; 0 trains all.)

    # Dropout after fc6 and fc7 of the VGG16 box head (0.5 in py-faster-rcnn).
    _C.MODEL.ROI_BOX_HEAD.DROPOUT = 0.0

    # ---------------------------------------------------------------------------------
    # Image Score semi-supervised training (see README "Configuration")
    # ---------------------------------------------------------------------------------
    _C.IMAGE_SCORE = CN()
    # Turn pseudo-labeling on. Off, the trainer is Detectron2's DefaultTrainer plus the
    # per-class AP evaluator.
    _C.IMAGE_SCORE.ENABLED = False
    # How unlabeled images are chosen for pseudo-labeling (the registered selectors, see
    # imagescore_det/engine/selectors.py; a new one is added there with register_selector):
    #   "image_score" - rank by the Image Score of the backbone activations (the method)
    #   "softmax"     - rank by detection confidence (the paper's softmax baseline: the mean
    #                   of the kept boxes' scores, so it needs full inference on the pool)
    #   "random"      - a uniformly random subset (IMAGE_SCORE.SEED, else the run's seed)
    #   "hybrid"      - confidence filter, image-score rank: pool images whose softmax
    #                   confidence (as "softmax") is >= HYBRID_MIN_CONFIDENCE, by Image
    #                   Score, then every other image, by Image Score (one inference pass
    #                   and one backbone pass over the pool; the predictions are reused
    #                   for the pseudo-labels)
    #   "image_score_per_class" - Image Score against per-class dataset masks: a labeled
    #                   image is fitted into the mask of the class of its largest
    #                   ground-truth box; a pool image is scored against the mask of the
    #                   class of its most confident predicted box (score >=
    #                   BOX_SCORE_THRESH). Pool images without such a box, or whose class
    #                   has no mask, rank last (needs full inference on the pool too)
    #   "oracle"      - an upper bound, not a method: the images "random" chooses (same
    #                   seed, count and back-fill order) labeled with the pool's ground
    #                   truth instead of the detector's predictions; TOP_FRACTION 1.0 = the
    #                   whole pool labeled. Needs a pool with annotations (refused at trainer
    #                   start otherwise)
    #   "none"        - no pseudo-labels (supervised only; the hook still evaluates/reports)
    _C.IMAGE_SCORE.SELECTOR = "image_score"
    # Registered datasets whose images are the unlabeled pool. Their annotations, if any,
    # are never trained on; they are only used to measure pseudo-label precision.
    _C.IMAGE_SCORE.UNLABELED_DATASETS = ()
    # Datasets the dataset mask is fitted on; empty = DATASETS.TRAIN.
    _C.IMAGE_SCORE.LABELED_DATASETS = ()
    # Iteration at which the first selection happens (after the supervised warm-up).
    _C.IMAGE_SCORE.START_ITER = 1000
    # 0 = select once (the paper's detection experiment); N > 0 = select again every N
    # iterations after START_ITER with the current model (its classification experiment).
    _C.IMAGE_SCORE.REFRESH_PERIOD = 0
    # With REFRESH_PERIOD N > 0: the number of rounds; 0 = as many as start before MAX_ITER.
    # `--num-gpus` scaling (Trainer.auto_scale_workers) sets it to the count of the config as
    # written, so that rounding the scaled period cannot add a round at the end.
    _C.IMAGE_SCORE.NUM_ROUNDS = 0
    # Fraction of the unlabeled pool that gets pseudo-labels, in (0, 1].
    _C.IMAGE_SCORE.TOP_FRACTION = 0.3
    # Predicted boxes with a score below this are not kept as pseudo-labels.
    _C.IMAGE_SCORE.BOX_SCORE_THRESH = 0.5
    # SELECTOR "hybrid": the softmax confidence (mean score of the boxes kept at
    # BOX_SCORE_THRESH; an image without a kept box has one below 0) an image needs to be
    # ranked among the passing images, in [0, 1]. Every image below it ranks after every
    # image at or above it. A value <= BOX_SCORE_THRESH only asks for one kept box.
    _C.IMAGE_SCORE.HYBRID_MIN_CONFIDENCE = 0.7
    # Selected images with fewer kept boxes than this are dropped from the pseudo dataset
    # (an image with no box would train everything in it as background). 0 keeps them and
    # trains them as background; that needs DATALOADER.FILTER_EMPTY_ANNOTATIONS False
    # (Detectron2 drops images without annotations otherwise; the config check says so).
    _C.IMAGE_SCORE.MIN_BOXES_PER_IMAGE = 1
    # Detectron2's test-time NMS is per class, so one object can yield two pseudo boxes of
    # different classes. True also suppresses, across classes, a box that overlaps a
    # higher-scoring one by more than PSEUDO_NMS_THRESH (IoU) before thresholding.
    _C.IMAGE_SCORE.PSEUDO_CLASS_AGNOSTIC_NMS = False
    _C.IMAGE_SCORE.PSEUDO_NMS_THRESH = 0.7
    # Equal counts between selectors: a selected image dropped for having fewer than
    # MIN_BOXES_PER_IMAGE boxes is replaced by the next image by rank, until
    # ceil(TOP_FRACTION * N) images are pseudo-labeled or the pool runs out (only the
    # replacements are pseudo-labeled). False keeps the literal top fraction, minus drops.
    _C.IMAGE_SCORE.BACKFILL = True
    # Module names (regular expressions, full match) under model.backbone whose outputs are
    # recorded. Empty = every conv block output after its ReLU (backbone-specific default,
    # DEFAULT_LAYERS in imagescore_det/engine/selection.py).
    _C.IMAGE_SCORE.LAYERS = []
    # Overlap of an image mask A with the dataset mask B: "iou" |A&B|/|A|B| (default),
    # "recall" |A&B|/|B| or "precision" |A&B|/|A| (penalises activation outside B).
    _C.IMAGE_SCORE.SIMILARITY = "iou"
    # t_l = THRESHOLD_RATIO * max(mean activation of layer l).
    _C.IMAGE_SCORE.THRESHOLD_RATIO = 0.5
    # Every map is cropped to the image's valid (unpadded) region and average-pooled to this
    # grid so neurons line up across images of different sizes. () = no pooling: every map
    # must have one size, so every image one input size (checked at trainer start), e.g.
    # with SCORE_RESIZE.
    _C.IMAGE_SCORE.GRID = (16, 16)
    # The "fixed resize" variant of the image-score passes (fit and score, in every selector
    # that uses the dataset mask): (h, w) resizes every image to exactly h x w before the
    # backbone (Detectron2's T.Resize, PIL bilinear on the decoded image, aspect ratio not
    # kept) instead of the test-time resize, so the maps of all images line up without
    # cropping and pooling, and GRID may be (). () (default) = off: the test-time resize
    # (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST) and GRID pooling. Pseudo-labeling and the
    # softmax confidence always use the test-time resize. With GRID () the sizes must be
    # multiples of the backbone's size divisibility (none for VGG16; 32 for FPN).
    _C.IMAGE_SCORE.SCORE_RESIZE = ()
    # Images per forward pass while fitting, scoring and pseudo-labeling.
    # 1 (default) is exact: no image is padded to a batch-mate's size (the VGG16 backbone
    # has no size divisibility), so each image's score and pseudo-labels do not depend on
    # its batch-mates or on how the pool is sharded across GPUs.
    # > 1: the mask fit and the scoring batch images in order of their test-time size
    # (engine/batching.py), so a batch is of one size wherever the data allows, and a batch
    # of one size is exact too, for any backbone in eval mode (on the VOC pool at batch 4,
    # 16% of images are still padded, by 0.5% of the pixels; pseudo-labeling batches in
    # pool order, as Detectron2's inference does). A padded image differs:
    #   * any backbone: the scorer crops the padding away, but activations within a
    #     receptive field of the right/bottom border change (from the second conv on they
    #     see the previous layer's output over the padding, not the conv's zero padding).
    #     With BN / FrozenBN in eval mode (and plain convs) that is all: measured 4 vs 1 on
    #     real photos at 160 px, Spearman 0.988 (0.952 without the size grouping);
    #   * GroupNorm (and any norm with statistics over the spatial map) takes the padding
    #     into each image's statistics, so every activation changes (median score change
    #     ~20x BN's): keep 1 with MODEL.VGG.NORM "GN" (the synthetic configs);
    #   * BN / SyncBN in train mode would mix statistics across images; the selection passes
    #     run in eval mode, where BN, SyncBN and FrozenBN are a fixed per-channel affine.
    # On a GPU, 4-16 with a BN / FrozenBN / plain backbone is the fast setting.
    _C.IMAGE_SCORE.BATCH_SIZE = 1
    # Fit the dataset mask on at most this many labeled images: a seeded subsample (the
    # same on every rank), kept in dataset order; 0 = every labeled image. The fit is a
    # backbone pass over the labeled set, so at VOC's proportions (5,011 labeled : 11,540
    # pool) fitting on all of it costs 0.43 of the pool's backbone pass. The default is
    # chosen by benchmarks/bench_selection.py --fit-subsample (README "Results").
    _C.IMAGE_SCORE.FIT_MAX_IMAGES = 500
    # Seed of that subsample; -1 = the run's seed: SEED, or when SEED is -1 a seed drawn once
    # per run on rank 0, kept in the run's checkpoints (a resume reuses it) and recorded as
    # each round's manifest "seed". IMAGE_SCORE.SEED does not move it. Every round uses the
    # same subsample.
    _C.IMAGE_SCORE.FIT_SEED = -1
    # Seed of the random selector (SELECTOR "random") and nothing else; -1 = the run's seed
    # (as for FIT_SEED).
    _C.IMAGE_SCORE.SEED = -1
    # Measure pseudo-label precision/recall against the pool's annotations when it has them
    # (synthetic data, or a real labeled set used as an unlabeled pool).
    _C.IMAGE_SCORE.EVAL_PSEUDO_LABELS = True
    # IoU at which a pseudo box counts as correct (same class).
    _C.IMAGE_SCORE.PSEUDO_IOU_THRESH = 0.5
    # Analysis (costs full inference on the pool, not counted in the selection time): when
    # the pool's truth is known, also measure the precision of the pseudo-labels that every
    # pool image would get, by score decile over the whole pool (precision_by_score_bin
    # only covers the selected images) and selected vs the rest; scores.csv gets each
    # image's counts (pool_true_positives, pool_false_positives, pool_true_boxes), and the
    # round's pool_boxes.csv every would-be pseudo-box (class, confidence, correct).
    _C.IMAGE_SCORE.ANALYZE_POOL = False
    # Evaluate on DATASETS.TEST right before the first selection, so report.json has the
    # mAP before and after pseudo-labeling.
    _C.IMAGE_SCORE.EVAL_BEFORE = True
    # What an unusable image of the unlabeled pool does (missing, unreadable, empty, not an
    # image, truncated, not decoding, size differing from its XML, non-finite activations),
    # found by the data check at trainer start or while a round reads it:
    #   "skip"  - leave it out of scoring and pseudo-labeling; every round lists it in its
    #             skipped.csv with the reason, the manifest counts it (num_skipped)
    #   "error" - stop, naming the files (on every rank at once)
    # Labeled and test data are always checked strictly: any problem stops before training.
    # `python tools/check_dataset.py` runs the same checks by hand (--deep decodes images).
    _C.IMAGE_SCORE.ON_BAD_IMAGE = "skip"
    # Paired supervised-only baseline: do the pseudo-labels beat training longer on the
    # labeled set? At START_ITER the full training state (model, optimizer, LR scheduler,
    # iteration, every rank's RNG states) is saved as OUTPUT_DIR/model_round1.pth; after
    # training, a copy with SELECTOR none continues from it for the same iterations with the
    # same random stream into OUTPUT_DIR/paired_supervised/ and is evaluated. report.json
    # ("paired_baseline") and the summary give AP50 before, with pseudo-labels, supervised
    # only, and the difference with a 95% paired bootstrap interval over the test images.
    # Cost: everything after START_ITER runs twice (off by default; on in the quickstart).
    # A finished copy is not repeated on --resume. Needs ENABLED.
    _C.IMAGE_SCORE.PAIRED_BASELINE = False

    # Seeded labeled-fraction split of a registered dataset (the semi-supervised detection
    # protocols' 1% / 5% / 10% of COCO; Unbiased Teacher's SUP_PERCENT + RANDOM_DATA_SEED),
    # imagescore_det/data/split.py. DATASET's images are split by SEED into a labeled part
    # (PERCENT of them, or COUNT) and the rest, registered as
    #   <DATASET>_sup<PERCENT>_seed<SEED>_labeled / _unlabeled   (PERCENT, "%g": 10.0 -> sup10)
    #   <DATASET>_n<COUNT>_seed<SEED>_labeled / _unlabeled       (COUNT)
    # to name in DATASETS.TRAIN and IMAGE_SCORE.UNLABELED_DATASETS (the pool keeps its
    # annotations for measuring and for SELECTOR oracle, never for training). At trainer
    # start the split's image ids and the labeled part's class balance are written to
    # OUTPUT_DIR/data_split.json (and logged); a resumed run must have the same split.
    _C.IMAGE_SCORE.SPLIT = CN()
    # Registered dataset to split (any: VOC, COCO json, ...); "" = no split.
    _C.IMAGE_SCORE.SPLIT.DATASET = ""
    # Percentage of its images that is labeled, in (0, 100), e.g. 10.0; 0.0 = use COUNT.
    _C.IMAGE_SCORE.SPLIT.PERCENT = 0.0
    # Or the number of labeled images (>= 1, fewer than the dataset's); 0 = use PERCENT.
    _C.IMAGE_SCORE.SPLIT.COUNT = 0
    # Seed of the split (numpy default_rng(SEED).permutation): same seed, same split.
    _C.IMAGE_SCORE.SPLIT.SEED = 1

    # ---------------------------------------------------------------------------------
    # Online teacher-student training (issue 17; imagescore_det/teacher/)
    # ---------------------------------------------------------------------------------
    # A supervised burn-in, then every step: the teacher (an exponential moving average of
    # the student) predicts on the weak view of unlabeled images, its boxes above
    # SCORE_THRESH become the student's targets on the strong view (photometric changes
    # only) of the same images. The pool is IMAGE_SCORE.UNLABELED_DATASETS; the selector
    # settings (GRID, LAYERS, BOX_SCORE_THRESH, ...) are IMAGE_SCORE's. Exclusive with
    # IMAGE_SCORE.ENABLED (the offline round). One process only for now.
    _C.TEACHER = CN()
    _C.TEACHER.ENABLED = False
    # Supervised iterations before the teacher is created (a copy of the student at this
    # iteration); scaled like SOLVER.MAX_ITER by Trainer.auto_scale_workers.
    _C.TEACHER.BURN_IN_ITER = 1000
    # Per-step EMA keep rate k: teacher = k * teacher + (1 - k) * student, in (0, 1).
    # 0.9996: the value Unbiased Teacher is cited with (issue 17 quotes 0.999 for its VOC
    # setting at its own batch; neither was checked against its repository here). Scaled to
    # k ** (N / SOLVER.REFERENCE_WORLD_SIZE) with the batch, so the EMA's time constant in
    # images stays the same.
    _C.TEACHER.EMA_KEEP_RATE = 0.9996
    # The teacher's boxes (after Detectron2's per-class NMS) with a score >= this are the
    # student's targets, in [0, 1] (Unbiased Teacher: 0.7).
    _C.TEACHER.SCORE_THRESH = 0.7
    # Weight of the unsupervised loss against the supervised one (Unbiased Teacher's VOC
    # setting: 2.0).
    _C.TEACHER.UNSUP_LOSS_WEIGHT = 2.0
    # Unlabeled images per labeled image in a step (> 0): the unlabeled batch is
    # round(SOLVER.IMS_PER_BATCH * this) images, at least 1 (1.0 = 1:1).
    _C.TEACHER.UNLABELED_PER_LABELED = 1.0
    # The unsupervised losses: RPN objectness and ROI classification always; box regression
    # from the pseudo-boxes (RPN and ROI) only with this switch (Unbiased Teacher leaves it
    # off: the teacher's confidence says nothing about how well its box fits).
    _C.TEACHER.UNSUP_REGRESSION = False
    # Focal loss in the student's ROI classifier (supervised and unsupervised):
    # mean((1 - p_t) ** gamma * CE); 0.0 = off (Detectron2's cross entropy). Unbiased Teacher
    # uses 1.5.
    _C.TEACHER.FOCAL_GAMMA = 0.0
    # The teacher as a filter: every REFRESH iterations from BURN_IN_ITER on (0 = only at
    # BURN_IN_ITER) the teacher ranks the pool with this selector of the registry
    # (engine/selectors.py; "none" = the whole pool, plain Unbiased Teacher) and the
    # unlabeled batches come from the top TOP_FRACTION of it. Scaled like MAX_ITER.
    _C.TEACHER.SELECTOR = "none"
    _C.TEACHER.TOP_FRACTION = 1.0
    _C.TEACHER.REFRESH = 0
    # Rank weighting instead of a top fraction: the unlabeled batches come from the whole
    # pool, each image drawn in proportion to a weight from its rank in the teacher's latest
    # ranking, linear: w = 1 - r / N for the 0-based rank r of N images (best 1, worst 1/N),
    # i.e. an image trains w / mean(w) = 2 (N - r) / (N + 1) times as often as under uniform
    # sampling (Detectron2's RepeatFactorTrainingSampler with these repeat factors). Needs a
    # SELECTOR other than "none" (the ranking) and TOP_FRACTION 1.0 (every image trains).
    _C.TEACHER.RANK_WEIGHTING = False
    # With REFRESH N > 0: at most this many rankings, the one at BURN_IN_ITER included (0 =
    # every N iterations until MAX_ITER). `--num-gpus` scaling (Trainer.auto_scale_workers)
    # sets it to the count of the config as written, so that rounding the scaled period
    # cannot add a ranking at the end (as IMAGE_SCORE.NUM_ROUNDS does for the rounds).
    _C.TEACHER.NUM_REFRESHES = 0
    # The fair baseline (issue 17 item 7): after training, a supervised-only copy continued
    # from the checkpoint at BURN_IN_ITER (OUTPUT_DIR/model_round1.pth) for the same
    # iterations, with the same labeled batches and seeds, training on the labeled images'
    # strong views (the augmentation the student sees on unlabeled images) and keeping its
    # own EMA teacher (the copy's reported model, like the main run's). Written to
    # OUTPUT_DIR/paired_supervised/, compared image by image (95% paired bootstrap) in
    # report.json "paired_baseline" and the summary, as IMAGE_SCORE.PAIRED_BASELINE does.
    # Cost: everything after BURN_IN_ITER runs twice (the copy without unlabeled images).
    _C.TEACHER.PAIRED_BASELINE = False
    # The copy's mode (PAIRED_BASELINE sets it in paired_supervised/; usable alone as a
    # supervised run with strong augmentation and an EMA): after BURN_IN_ITER no unlabeled
    # images, the labeled batch trained on its strong views, the EMA teacher kept.
    _C.TEACHER.SUPERVISED_ONLY = False
    # The student's targets on the unlabeled images: "teacher" (the method: the teacher's
    # boxes above SCORE_THRESH) or "truth" (the pool's own annotations, in the weak view's
    # coordinates: the upper bound of any threshold or filter, bench_teacher.py's oracle
    # arm; needs a pool with truth, e.g. the synthetic one).
    _C.TEACHER.TARGETS = "teacher"

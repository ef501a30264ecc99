#!/usr/bin/env python
"""Mutation check: does the test suite catch known, deliberate bugs?

Each entry of ``CATALOGUE`` below is one bug: a file, an exact snippet of its current code
and the snippet that replaces it, plus the tests expected to catch it. For every entry the
checker copies the repository (``git ls-files``: tracked files plus untracked files git
does not ignore, so uncommitted tests count) to a temporary directory, applies the
substitution there, and runs pytest on the listed tests (``--full``: the whole suite but
tests/test_mutation_check.py, whose catalogue check fails in any mutated tree) with
``PYTHONPATH`` set to the copy. A mutation is *caught* when at least one test fails.

    python tools/mutation_check.py                      # every mutation, its listed tests
    python tools/mutation_check.py --only pseudo-thresh select-top-lowest
    python tools/mutation_check.py --full --exitfirst   # whole suite, stop at first failure
    python tools/mutation_check.py --check-catalogue    # only check the snippets (instant)
    python tools/mutation_check.py --list

Before the mutations, the listed tests run once on an unmutated copy (``--no-baseline``
skips it): a test that already fails would "catch" every mutation.

Prints a table, writes JSON (``--output``, default
``benchmarks/results/mutation_check.json``, atomically) and exits 1 when a mutation is not
caught (a snippet that no longer occurs exactly once, "target moved: update the catalogue",
counts as not caught), 2 when the baseline fails.

Maintaining the catalogue: the code under imagescore_det/engine, imagescore_det/scoring and
tools/ is being refactored; when a snippet moves, only its entry here changes (``file``,
``old``, ``new``). ``tests/test_mutation_check.py`` fails as soon as an ``old`` snippet no
longer occurs exactly once, or a listed test no longer exists. Standard library only.
"""
import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join("benchmarks", "results", "mutation_check.json")
KNOWN = "tests/test_known_answers.py"
VARIANTS = "tests/test_selector_variants.py"
AGREE = "tests/test_evaluator_agreement.py"
TEACHER = "tests/test_teacher.py"
CUSTOM = "tests/test_custom_data.py"


@dataclasses.dataclass(frozen=True)
class Mutation:
    id: str
    description: str
    file: str  # relative to the repository root
    old: str  # must occur exactly once in ``file``
    new: str
    tests: tuple  # pytest node ids expected to catch it (a parametrized test: all its cases)


# ------------------------------------------------------------------------------ catalogue
CATALOGUE = (
    Mutation(
        id="pseudo-thresh",
        description="(a) predictions_to_dicts keeps every box whatever BOX_SCORE_THRESH",
        file="imagescore_det/data/pseudo.py",
        old='zip(p["boxes"], p["scores"], p["classes"]) if s >= score_thresh',
        new='zip(p["boxes"], p["scores"], p["classes"]) if s >= -float("inf")',
        tests=(f"{KNOWN}::test_predictions_to_dicts_applies_box_score_thresh",),
    ),
    Mutation(
        id="pseudo-min-boxes",
        description="(b) predictions_to_dicts ignores MIN_BOXES_PER_IMAGE",
        file="imagescore_det/data/pseudo.py",
        old="if len(anns) < min_boxes:",
        new="if len(anns) < 0:",
        tests=(f"{KNOWN}::test_predictions_to_dicts_applies_min_boxes_per_image",),
    ),
    Mutation(
        id="voc-per-class-swap",
        description="(c) PerClassVOCEvaluator swaps the APs of classes 0 and 1 (key order kept)",
        file="imagescore_det/evaluation/voc.py",
        old="for i, name in enumerate(self._class_names):",
        new="for i, name in zip([1, 0] + list(range(2, len(self._class_names))), "
            "self._class_names):",
        tests=(f"{KNOWN}::test_per_class_ap_known_answers",),
    ),
    # issue 19 items 4, 5, 8: the test set read as Detectron2's VOC evaluator reads it
    Mutation(
        id="eval-check-skips-parse-rec",
        description="the check of evaluation data skips the evaluator's parser (parse_rec)",
        file="imagescore_det/data/checks.py",
        old="findings += _evaluator_findings(ann, objects, evaluator_parser, where)",
        new="findings += []",
        tests=(f"{AGREE}::test_evaluation_check_agrees_with_parse_rec",
               f"{AGREE}::test_evaluation_check_equals_parse_rec_by_fuzzing"),
    ),
    Mutation(
        id="test-set-checked-as-training-data",
        description="a DATASETS.TEST dataset is checked with the lenient loader only",
        file="imagescore_det/engine/data_checks.py",
        old="evaluation=evaluated(keys))",
        new="evaluation=False)",
        tests=(f"{AGREE}::test_test_set_check_runs_the_evaluators_parser",),
    ),
    Mutation(
        id="eval-check-strips-names",
        description="the check strips class names as the loader does, not as the evaluator reads",
        file="imagescore_det/data/checks.py",
        old='if record["name"] != name or read_box != box:',
        new='if record["name"].strip() != name or read_box != box:',
        tests=(f"{AGREE}::test_class_name_with_whitespace_stops_the_run_instead_of_scoring_zero",),
    ),
    Mutation(
        id="bootstrap-drops-class-without-truth",
        description="the bootstrap gives a class without ground truth no AP (left out of the "
                    "mean) where voc_eval scores it 0",
        file="imagescore_det/evaluation/bootstrap.py",
        old="out[c, t] = voc_ap(rec, prec, self.evaluation.use_07_metric) * 100",
        new="out[c, t] = voc_ap(rec, prec, self.evaluation.use_07_metric) * 100 if npos "
            "else np.nan",
        tests=(f"{AGREE}::test_a_class_without_ground_truth_counts_as_the_evaluator_counts_it",),
    ),
    Mutation(
        id="bootstrap-resample-drops-class-without-truth",
        description="a resample without ground truth of a class gives it no AP, not voc_eval's 0",
        file="imagescore_det/evaluation/bootstrap.py",
        old="(drawn[no_truth] > 0) & (not self.evaluation.use_07_metric), np.nan, 0.0)",
        new="True, np.nan, 0.0)",
        tests=(f"{AGREE}::test_a_class_without_ground_truth_counts_as_the_evaluator_counts_it",),
    ),
    Mutation(
        id="score-images-softmax-thresh",
        description="(d) tools/score_images.py --selector softmax ignores BOX_SCORE_THRESH",
        # the tool runs the registered "softmax" selector
        file="imagescore_det/engine/selectors.py",
        old="        ctx.cfg.IMAGE_SCORE.BOX_SCORE_THRESH)",
        new="        0.0)",
        tests=(f"{KNOWN}::test_score_images_softmax_uses_box_score_thresh",),
    ),
    Mutation(
        id="scoring-crop-floor",
        description="(e) the valid crop of a padded feature map is rounded down, not up",
        file="imagescore_det/scoring/batches.py",
        old="min(hf, max(1, -(-h * hf // H))), min(wf, max(1, -(-w * wf // W)))",
        new="min(hf, max(1, h * hf // H)), min(wf, max(1, w * wf // W))",
        tests=("tests/test_scoring.py::test_crop_rounds_up_per_feature_map",
               "tests/test_scoring.py", "tests/test_scoring_properties.py"),
    ),
    Mutation(
        id="select-top-lowest",
        description="(f) select_top takes the lowest scores",
        file="imagescore_det/engine/ranking.py",
        old="return np.lexsort((np.arange(len(scores)), -scores))",
        new="return np.lexsort((np.arange(len(scores)), scores))",
        tests=("tests/test_selection.py::test_select_top_known_answers",
               "tests/test_selection.py::test_selector_round[random]",
               "tests/test_rounds.py::test_ranking_known_answers"),
    ),
    Mutation(
        id="image-mask-strict",
        description="image mask X >= t becomes X > t (activations at the threshold dropped)",
        file="imagescore_det/scoring/scorer.py",
        old="image_masks = activations >= threshold  # M_{I,l}",
        new="image_masks = activations > threshold  # M_{I,l}",
        tests=(f"{KNOWN}::test_image_mask_includes_activations_at_the_threshold",
               "tests/test_scoring.py"),
    ),
    Mutation(
        id="iou-is-recall",
        description='similarity "iou" computes recall |A & B| / |B|',
        file="imagescore_det/scoring/scorer.py",
        old="denominator = image_mask_size + dataset_mask_size - intersection",
        new="denominator = dataset_mask_size",
        tests=("tests/test_scoring.py",),
    ),
    Mutation(
        id="backfill-ignored",
        description="IMAGE_SCORE.BACKFILL ignored: dropped images are never replaced",
        file="imagescore_det/engine/round.py",
        old="        if not backfill:\n            break",
        new="        if True:\n            break",
        tests=("tests/test_paper_path.py::test_backfill_known_answers",),
    ),
    Mutation(
        id="start-iter-unscaled",
        description="auto_scale_workers leaves IMAGE_SCORE.START_ITER as written",
        file="imagescore_det/engine/trainer.py",
        old="settings.START_ITER = int(round(cfg.IMAGE_SCORE.START_ITER / factor))",
        new="settings.START_ITER = cfg.IMAGE_SCORE.START_ITER",
        tests=("tests/test_paper_path.py::test_round_scales_with_the_schedule",),
    ),
    Mutation(
        id="fingerprint-ignored",
        description="a saved round is reused whatever settings it was made with",
        file="imagescore_det/engine/consistency.py",
        old="    if manifest.fingerprint == config_fingerprint(cfg):\n        return",
        new="    if True:\n        return",
        tests=("tests/test_paper_path.py::test_resume_with_changed_settings_stops_saying_what_changed",),
    ),
    Mutation(
        id="pseudo-class-swap",
        description="pseudo-labels get swapped classes (0<->1, 2<->3)",
        file="imagescore_det/data/pseudo.py",
        old='"category_id": int(c), "score": float(s)}',
        new='"category_id": int(c) ^ 1, "score": float(s)}',
        tests=(f"{KNOWN}::test_predictions_to_dicts_applies_box_score_thresh",),
    ),
    Mutation(
        id="hybrid-filter-ignored",
        description="selector hybrid ignores HYBRID_MIN_CONFIDENCE: plain image-score order",
        file="imagescore_det/engine/selection.py",
        old="passed = np.asarray(confidence, dtype=np.float64) >= min_confidence",
        new="passed = np.ones(np.shape(confidence), dtype=bool)",
        tests=(f"{VARIANTS}::test_hybrid_ordering_matches_brute_force",
               f"{VARIANTS}::test_hybrid_threshold_is_not_ignored"),
    ),
    Mutation(
        id="per-class-least-confident-box",
        description="image_score_per_class scores a pool image under its least confident kept box",
        file="imagescore_det/engine/selection.py",
        old='return int(np.asarray(prediction["classes"])[int(np.argmax(box_scores))])',
        new='return int(np.asarray(prediction["classes"])[int(np.argmin(box_scores))])',
        tests=(f"{VARIANTS}::test_top_box_class_known_answers",
               f"{VARIANTS}::test_per_class_scores_equal_a_brute_force_per_class_scorer"),
    ),
    Mutation(
        id="score-resize-ignored",
        description="IMAGE_SCORE.SCORE_RESIZE ignored: the image-score passes keep the test resize",
        file="imagescore_det/engine/selection.py",
        old="    if resize is None:\n        return _loader(cfg, dicts)\n",
        new="    if True:\n        return _loader(cfg, dicts)\n",
        tests=(f"{VARIANTS}::test_score_resize_equals_a_resize_by_hand_with_grid_none",
               f"{VARIANTS}::test_two_pool_images_of_different_sizes_score_with_resize_and_no_grid"),
    ),
    Mutation(
        id="pool-quality-rows-shifted",
        description="scores.csv's pool_* columns written one image off (another image's counts)",
        file="imagescore_det/engine/round_files.py",
        old="row += list(pool_quality[index])",
        new="row += list(pool_quality[index - 1])",
        tests=("tests/test_selection.py::test_selector_round[image_score]",),
    ),
    Mutation(
        id="pool-quality-without-nms",
        description="ANALYZE_POOL judges the raw detections, not the NMS'd pseudo-labels",
        file="imagescore_det/engine/round.py",
        old="result.pool_quality = quality_rows(judged, pool, settings)",
        new="result.pool_quality = quality_rows(list(pool_predictions), pool, settings)",
        tests=("tests/test_selection.py::test_selector_round[softmax]",),
    ),
    # issue 19 item 10: bugs the suite let through (each run against the tests of the time)
    Mutation(
        id="replay-seed-ignores-iteration",
        description="ReplayHook seeds every resume point alike (the iteration left out)",
        file="imagescore_det/engine/resume.py",
        old="seed = derived_seed(self.seed, iteration)",
        new="seed = derived_seed(self.seed, 0)",
        tests=("tests/test_reliability.py::"
               "test_replay_hook_seeds_each_resume_point_with_its_own_known_seed",),
    ),
    Mutation(
        id="last-checkpoint-escapes",
        description="last_checkpoint may name a file outside OUTPUT_DIR (../other/model.pth)",
        file="imagescore_det/engine/safe_load.py",
        old="if (not name or os.path.basename(name) != name or name in (\".\", \"..\")",
        new="if (not name or name in (\".\", \"..\")",
        tests=("tests/test_reliability.py::"
               "test_last_checkpoint_naming_an_existing_file_elsewhere_is_refused",),
    ),
    Mutation(
        id="truncated-jpeg-under-pillow-flag",
        description="a cut JPEG passes the data check when ImageFile.LOAD_TRUNCATED_IMAGES is on",
        file="imagescore_det/data/checks.py",
        old="if problem is not None or ImageFile.LOAD_TRUNCATED_IMAGES:",
        new="if problem is not None:",
        tests=("tests/test_reliability_data.py::"
               "test_cut_jpeg_is_truncated_even_when_pillow_loads_truncated_images",),
    ),
    Mutation(
        id="fingerprint-without-min-boxes",
        description="IMAGE_SCORE.MIN_BOXES_PER_IMAGE left out of the resume fingerprint",
        file="imagescore_det/engine/consistency.py",
        old='"IMAGE_SCORE.MIN_BOXES_PER_IMAGE", ',
        new="",
        tests=("tests/test_config.py::"
               "test_every_setting_a_round_depends_on_is_in_the_resume_fingerprint",),
    ),
    Mutation(
        id="pool-test-set-lenient",
        description="a pool dataset that is also DATASETS.TEST keeps the lenient unlabeled role",
        file="imagescore_det/engine/data_checks.py",
        old='if entry[0] == "unlabeled" and role != "unlabeled":',
        new='if entry[0] == "unlabeled" and role == "labeled":',
        tests=("tests/test_reliability_data.py::"
               "test_a_dataset_in_several_roles_gets_the_strictest_whatever_key_names_it",),
    ),
    # the same patterns elsewhere: a default no test named, a statistic checked only for
    # bracketing, guards reached only when flock cannot decide
    Mutation(
        id="pseudo-nms-thresh-default",
        description="the default IMAGE_SCORE.PSEUDO_NMS_THRESH differs from the documented 0.7",
        file="imagescore_det/config.py",
        old="_C.IMAGE_SCORE.PSEUDO_NMS_THRESH = 0.7",
        new="_C.IMAGE_SCORE.PSEUDO_NMS_THRESH = 0.5",
        tests=("tests/test_config.py::test_add_imagescore_config_defaults",
               "tests/test_config.py::test_readme_documents_every_added_key_with_its_default"),
    ),
    Mutation(
        id="bootstrap-interval-90",
        description="the paired bootstrap's 95% interval is a 90% one (percentiles 5 and 95)",
        file="imagescore_det/evaluation/bootstrap.py",
        old="[50 * (1 - confidence), 50 * (1 + confidence)]",
        new="[100 * (1 - confidence), 100 * confidence]",
        tests=("tests/test_evidence.py::test_interval_and_p_value_known_answers",),
    ),
    Mutation(
        id="lock-without-flock-ignores-live-holder",
        description="without flock, a lock whose pid still runs is taken over as stale",
        file="imagescore_det/engine/lock.py",
        old="if locked is None and _alive(holder):",
        new="if locked is None and False:",
        tests=("tests/test_reliability.py::"
               "test_without_flock_the_pid_and_its_start_time_decide",),
    ),
    Mutation(
        id="lock-pid-reuse-unseen",
        description="a lock whose pid was reused by another process (start time differs) "
                    "counts as held",
        file="imagescore_det/engine/lock.py",
        old="return recorded is None or now is None or recorded == now",
        new="return True",
        tests=("tests/test_reliability.py::"
               "test_without_flock_the_pid_and_its_start_time_decide",),
    ),
    Mutation(
        id="oracle-uses-predictions",
        description="the oracle labels its images with the detector's predictions, not the truth",
        file="imagescore_det/engine/selectors.py",
        old="    ranking.truth = [truth_as_prediction(d) for d in ctx.pool]\n",
        new="",
        tests=("tests/test_oracle.py::test_oracle_pseudo_boxes_are_the_truth",),
    ),
    Mutation(
        id="oracle-own-stream",
        description="the oracle draws its own random order, not random's (another choice)",
        file="imagescore_det/engine/selectors.py",
        old="    ranking = random_selection(ctx)\n",
        new="    ranking = Ranking(selection.random_scores(len(ctx.pool), ctx.seed + 1))\n",
        tests=("tests/test_oracle.py::test_oracle_chooses_exactly_what_random_chooses",),
    ),
    Mutation(
        id="oracle-truth-guard-off",
        description="an oracle on a pool without ground truth is not refused at trainer start",
        file="imagescore_det/engine/hook.py",
        old="            check_pool_truth(self.cfg, pool)\n",
        new="",
        tests=("tests/test_oracle.py::test_oracle_on_a_pool_without_truth_stops_before_training",),
    ),
    Mutation(
        id="split-seed-ignored",
        description="IMAGE_SCORE.SPLIT draws every split with seed 0, whatever SEED says",
        file="imagescore_det/data/split.py",
        old="np.random.default_rng(int(seed)).permutation(n)",
        new="np.random.default_rng(0).permutation(n)",
        tests=("tests/test_split.py::test_labeled_indices_known_answer",),
    ),
    Mutation(
        id="split-percent-100",
        description="IMAGE_SCORE.SPLIT.PERCENT 100 accepted by the config check",
        file="imagescore_det/engine/config_loading.py",
        old="if not split.COUNT and not 0.0 < split.PERCENT < 100.0:",
        new="if not split.COUNT and not 0.0 < split.PERCENT <= 100.0:",
        tests=("tests/test_split.py::test_bad_split_settings_are_config_errors",),
    ),
    Mutation(
        id="split-class-check-off",
        description="a split leaving a class with no labeled image is not refused",
        file="imagescore_det/data/split.py",
        old="        if empty:\n",
        new="        if False:\n",
        tests=("tests/test_split.py::test_class_without_labeled_image_is_refused",
               "tests/test_split.py::test_split_missing_a_class_stops_at_trainer_start"),
    ),
    Mutation(
        id="split-resume-unchecked",
        description="a resumed run with another split seed is not refused",
        file="imagescore_det/engine/split_record.py",
        old="        if why:\n",
        new="        if False:\n",
        tests=("tests/test_split.py::test_resume_with_another_split_seed_is_refused",),
    ),
    Mutation(
        id="pool-boxes-without-nms",
        description="pool_boxes.csv judges the raw detections, not the NMS'd pseudo-labels",
        file="imagescore_det/engine/round.py",
        old="result.pool_boxes = box_rows(judged, pool, settings)",
        new="result.pool_boxes = box_rows(pool_predictions, pool, settings)",
        tests=("tests/test_selection.py::test_selector_round[softmax]",),
    ),
    Mutation(
        id="stratified-auroc-across-strata",
        description="the stratified AUROC compares images of every box count (no strata)",
        file="imagescore_det/evaluation/auroc.py",
        old="        inside = strata == group\n",
        new="        inside = strata == strata\n",
        tests=("tests/test_per_box.py::test_stratified_auroc_counts_only_pairs_within_a_stratum",),
    ),
    Mutation(
        id="softmax-box-auroc-by-image",
        description="bench_quality's per-box AUROC of softmax uses the image's mean confidence",
        file="benchmarks/bench_quality.py",
        old="box_score = (confidence if own_confidence else score[index])[in_scope]",
        new="box_score = score[index][in_scope]",
        tests=("tests/test_per_box.py::test_bench_quality_correctness_aurocs_known_answers",),
    ),
    Mutation(
        id="seed-bootstrap-seeds-not-resampled",
        description="the two-level bootstrap keeps every seed once: no seed-to-seed spread",
        file="imagescore_det/evaluation/bootstrap.py",
        old="    return images, _draw_weights(rng, num_seeds, resamples)\n",
        new="    return images, np.ones((resamples, num_seeds))\n",
        tests=("tests/test_seed_bootstrap.py::test_brute_force_two_seeds_two_images",
               "tests/test_seed_bootstrap.py::test_the_interval_widens_when_seeds_disagree"),
    ),
    Mutation(
        id="share-of-oracle-defined-at-zero",
        description="a share of the oracle's gain is given when the oracle's gain may be 0",
        file="imagescore_det/evaluation/bootstrap.py",
        old="    if not ref[\"ci\"][0] > 0:\n",
        new="    if not ref[\"ci\"][1] > 0:\n",
        tests=("tests/test_seed_bootstrap.py::"
               "test_share_is_undefined_when_the_oracle_gain_is_not_above_zero",),
    ),
    Mutation(
        id="share-of-oracle-wrong-baseline",
        description="bench_quality's share of the oracle's gain is taken over image_score, "
                    "not over none",
        file="benchmarks/bench_quality.py",
        old="seed_share_of_gain(boot, NONE, name, ORACLE,",
        new="seed_share_of_gain(boot, BASE, name, ORACLE,",
        tests=("tests/test_benchmarks_cli.py::"
               "test_bench_quality_gain_and_share_of_the_oracle_known_answers",),
    ),
    Mutation(
        id="bench-quality-none-from-the-base-run",
        description="bench_quality's seeds x images gains take none from the image_score run "
                    "instead of its supervised-only copy",
        file="benchmarks/bench_quality.py",
        old="        dirs = {NONE: os.path.join(base_dir, PAIRED_DIR)}\n",
        new="        dirs = {NONE: base_dir}\n",
        tests=("tests/test_benchmarks_cli.py::"
               "test_bench_quality_seed_gains_reads_none_from_the_paired_copy",),
    ),
    Mutation(
        id="match-boxes-ignores-class",
        description="a pseudo-box matching a true box of another class counts as correct",
        file="imagescore_det/evaluation/pseudo_labels.py",
        old="if not used[j] and gt_classes[j] == pred_classes[i] and ious[i, j] >= best:",
        new="if not used[j] and ious[i, j] >= best:",
        tests=("tests/test_per_box.py::test_match_boxes_known_answer",
               "tests/test_per_box.py::test_round_writes_every_would_be_pseudo_box"),
    ),
    Mutation(
        id="scaled-rounds-recounted",
        description="(issue 19.1) GPU scaling keeps NUM_ROUNDS as written: the rounded "
                    "REFRESH_PERIOD alone decides the count (a round at 27999 of 28000)",
        file="imagescore_det/engine/trainer.py",
        old="settings.NUM_ROUNDS = len(refresh_rounds(cfg))",
        new="settings.NUM_ROUNDS = cfg.IMAGE_SCORE.NUM_ROUNDS",
        tests=("tests/test_paper_configs.py::test_refresh_rounds_stay_at_their_fractions_on_1_to_16_gpus",
               "tests/test_paper_configs.py::test_refresh_rounds_stay_at_their_fractions_synthetic"),
    ),
    Mutation(
        id="drawn-seed-not-recorded",
        description="(issue 19.2) under SEED -1 the drawn seed is not saved in the checkpoint: "
                    "a resumed run draws another (other fit subsample, other selection)",
        file="imagescore_det/engine/hook.py",
        old='return {"run_seed": self.seed} if self.cfg.SEED < 0 and self.seed is not None else {}',
        new="return {}",
        tests=("tests/test_paper_path.py::test_seed_drawn_under_seed_minus_1_is_checkpointed_and_reused",
               "tests/test_reliability.py::test_seed_minus_1_run_killed_while_fitting_resumes_with_its_seed"),
    ),
    Mutation(
        id="fit-seed-follows-selector-seed",
        description="(issue 19.3) FIT_SEED -1 takes IMAGE_SCORE.SEED (the random selector's), "
                    "so changing it moves image_score's fit subsample",
        file="imagescore_det/engine/selection.py",
        old="return int(cfg.IMAGE_SCORE.FIT_SEED) if cfg.IMAGE_SCORE.FIT_SEED >= 0 else int(seed)",
        new="return int(cfg.IMAGE_SCORE.FIT_SEED) if cfg.IMAGE_SCORE.FIT_SEED >= 0 else "
            "random_selector_seed(cfg, seed)",
        tests=("tests/test_gpu_path.py::test_image_score_seed_moves_the_random_selector_only",),
    ),
    Mutation(
        id="eval-only-lenient",
        description="(issue 19.6) --eval-only loads MODEL.WEIGHTS non-strictly: a checkpoint "
                    "without roi_heads evaluates a random box predictor",
        file="tools/train_net.py",
        old="checkpointer_cls(model, save_dir=cfg.OUTPUT_DIR, strict=True,",
        new="checkpointer_cls(model, save_dir=cfg.OUTPUT_DIR, strict=False,",
        tests=("tests/test_train_net.py::test_eval_only_refuses_weights_that_do_not_cover_the_model",),
    ),
    # issue 17: the online teacher-student mode (imagescore_det/teacher)
    Mutation(
        id="teacher-ignores-threshold",
        description="the teacher's boxes become targets whatever TEACHER.SCORE_THRESH",
        file="imagescore_det/teacher/targets.py",
        old="return pred.scores >= score_thresh",
        new='keep = pred.scores >= -float("inf")',
        tests=(f"{TEACHER}::test_threshold_drops_boxes_below_it",
               f"{TEACHER}::test_no_box_above_threshold_gives_exactly_zero_loss"),
    ),
    Mutation(
        id="teacher-not-updated",
        description="the teacher-student step skips the EMA update: the teacher stays the "
                    "burn-in's copy",
        file="imagescore_det/teacher/trainer.py",
        old="ema_update(owner.teacher, unwrap_model(self.model), settings.EMA_KEEP_RATE)",
        new="None  # no EMA update",
        tests=(f"{TEACHER}::test_teacher_follows_student_by_ema_and_checkpoints_round_trip",),
    ),
    Mutation(
        id="teacher-regression-on",
        description="the unsupervised loss includes the box regressions with "
                    "TEACHER.UNSUP_REGRESSION False",
        file="imagescore_det/teacher/trainer.py",
        old="unsup_loss_names(settings.UNSUP_REGRESSION)",
        new="unsup_loss_names(True)",
        tests=(f"{TEACHER}::test_teacher_follows_student_by_ema_and_checkpoints_round_trip",),
    ),
    Mutation(
        id="teacher-keep-rate-unscaled",
        description="auto_scale_workers leaves TEACHER.EMA_KEEP_RATE as it is at another batch, "
                    "so the EMA's time constant in images changes with the GPU count",
        file="imagescore_det/engine/trainer.py",
        old="teacher.EMA_KEEP_RATE = scaled_keep_rate(cfg.TEACHER.EMA_KEEP_RATE, factor)",
        new="teacher.EMA_KEEP_RATE = cfg.TEACHER.EMA_KEEP_RATE",
        tests=(f"{TEACHER}::test_keep_rate_scaling_keeps_the_time_constant_in_images",),
    ),
    Mutation(
        id="teacher-trains-boxless-images",
        description="unlabeled images without a teacher box stay in the unsupervised loss "
                    "(trained as all background; a batch without boxes gives a loss > 0)",
        file="imagescore_det/teacher/targets.py",
        old="              if len(target) > 0]",
        new="              ]",
        tests=(f"{TEACHER}::test_no_box_above_threshold_gives_exactly_zero_loss",
               f"{TEACHER}::test_images_without_a_box_are_left_out_of_the_loss"),
    ),
    Mutation(
        id="teacher-pseudo-precision-any-iou",
        description="the online pseudo-box precision counts a teacher box of the right class "
                    "as correct at any IoU with a true box (the IoU threshold ignored)",
        file="imagescore_det/teacher/targets.py",
        old="truth.gt_classes.cpu().numpy(), iou_thresh))",
        new="truth.gt_classes.cpu().numpy(), 0.0))",
        tests=(f"{TEACHER}::test_pseudo_box_precision_and_recall_known_answer",),
    ),
    Mutation(
        id="teacher-sees-pool-truth",
        description="the pool's truth (the weak views' instances, kept to measure the "
                    "pseudo-box precision) is not stripped before the teacher and the student",
        file="imagescore_det/teacher/trainer.py",
        old='weak = [{k: v for k, v in d.items() if k != "instances"} for d in weak]',
        new="weak = list(weak)",
        tests=(f"{TEACHER}::test_online_steps_log_pseudo_box_precision_only_with_truth",),
    ),
    Mutation(
        id="teacher-refreshes-count-unscaled",
        description="GPU scaling leaves TEACHER.NUM_REFRESHES as written (0): the rounded "
                    "scaled REFRESH fits an extra ranking at the end (3 GPUs from 8: 27999 of "
                    "28000)",
        file="imagescore_det/engine/trainer.py",
        old="teacher.NUM_REFRESHES = len(teacher_refreshes(cfg))",
        new="teacher.NUM_REFRESHES = cfg.TEACHER.NUM_REFRESHES",
        tests=("tests/test_paper_configs.py::test_teacher_refreshes_stay_at_their_fractions_on_"
               "1_to_16_gpus",),
    ),
    Mutation(
        id="teacher-ddp-wrapped",
        description="the teacher is a copy of the DistributedDataParallel-wrapped student, not "
                    "of the bare model",
        file="imagescore_det/teacher/trainer.py",
        old="self.teacher = make_teacher(unwrap_model(model))",
        new="self.teacher = make_teacher(model)",
        tests=(f"{TEACHER}::test_two_processes_share_one_teacher_and_shard_the_unlabeled_batches",),
    ),
    Mutation(
        id="teacher-unlabeled-per-rank-order",
        description="each rank shuffles the unlabeled selection with its own seed, so the "
                    "ranks' parts are not one permutation's shards (images repeat across ranks)",
        file="imagescore_det/teacher/trainer.py",
        old="sampler=unlabeled_sampler(selection, derived_seed(self.data_seed, iteration)),",
        new="sampler=unlabeled_sampler(selection, derived_seed(self.data_seed, iteration) "
            "+ comm.get_rank()),",
        tests=(f"{TEACHER}::test_two_processes_share_one_teacher_and_shard_the_unlabeled_batches",),
    ),
    Mutation(
        id="teacher-rank-weights-reversed",
        description="TEACHER.RANK_WEIGHTING weights the ranking backwards: the worst-ranked "
                    "pool image is drawn most often, the best least",
        file="imagescore_det/engine/ranking.py",
        old="factors[order] = 2.0 * (n - np.arange(n)) / (n + 1)",
        new="factors[order[::-1]] = 2.0 * (n - np.arange(n)) / (n + 1)",
        tests=(f"{TEACHER}::test_rank_repeat_factors_known_answer",
               f"{TEACHER}::test_rank_weighted_sampler_draws_in_proportion_to_the_weights"),
    ),
    Mutation(
        id="teacher-rank-weighting-uniform",
        description="under TEACHER.RANK_WEIGHTING the unlabeled loader samples the pool "
                    "uniformly: the ranking's weights are kept but not used",
        file="imagescore_det/teacher/trainer.py",
        old="    if order is None:\n        return TrainingSampler(",
        new="    if True:\n        return TrainingSampler(",
        tests=(f"{TEACHER}::test_rank_weighted_run_draws_the_known_images_and_resumes_them",),
    ),
    Mutation(
        id="teacher-unlabeled-not-reseeded",
        description="the unlabeled loader is rebuilt only where a run starts, not at every "
                    "checkpoint: a resumed run draws other unlabeled batches than the "
                    "uninterrupted one",
        file="imagescore_det/teacher/trainer.py",
        old="elif it == self.trainer.start_iter or self._replay.is_resume_point(it):",
        new="elif it == self.trainer.start_iter:",
        tests=(f"{TEACHER}::test_resume_after_the_burn_in_and_at_a_refresh_replays_bit_for_bit",),
    ),
    Mutation(
        id="teacher-selection-not-restored",
        description="a resumed run forgets the checkpoint's selection and ranks the pool "
                    "again where it restarts",
        file="imagescore_det/teacher/trainer.py",
        old='self.selection = state["selection"]',
        new="self.selection = None",
        tests=(f"{TEACHER}::test_resume_after_the_burn_in_and_at_a_refresh_replays_bit_for_bit",),
    ),
    Mutation(
        id="teacher-paired-weak-labeled",
        description="the paired supervised-only copy trains on the labeled images as loaded, "
                    "not on their strong views: a gain could be the augmentation alone",
        file="imagescore_det/teacher/trainer.py",
        old="return self.strong_views(batch, iteration) if self.cfg.TEACHER.SUPERVISED_ONLY",
        new="return self.strong_views(batch, iteration) if False",
        tests=(f"{TEACHER}::test_paired_baseline_continues_supervised_with_strong_views_from_the_"
               "burn_in",),
    ),
    Mutation(
        id="teacher-unlabeled-shares-rng",
        description="the unlabeled half of a step draws from the global generators, so the "
                    "labeled stream (flips, sampling) is not the paired copy's",
        file="imagescore_det/teacher/trainer.py",
        old="            with preserved_rng():\n                seed_all_rng(derived_seed(",
        new="            if True:\n                seed_all_rng(derived_seed(",
        tests=(f"{TEACHER}::test_paired_baseline_continues_supervised_with_strong_views_from_the_"
               "burn_in",),
    ),
    Mutation(
        id="teacher-truth-targets-ignored",
        description="TEACHER.TARGETS truth (the oracle arm) still trains on the teacher's boxes",
        file="imagescore_det/teacher/trainer.py",
        old='if settings.TARGETS == "truth":',
        new='if False:',
        tests=(f"{TEACHER}::test_truth_targets_are_the_pool_annotations_in_the_weak_view",),
    ),
    Mutation(
        id="bench-teacher-gain-base",
        description="bench_teacher measures every arm's gain over online none instead of the "
                    "paired supervised copy",
        file="benchmarks/bench_teacher.py",
        old="row = {key: seed_gain(boot, SUPERVISED, name, key, confidence) for key in (\"AP50\", \"AP\")}",
        new="row = {key: seed_gain(boot, NONE, name, key, confidence) for key in (\"AP50\", \"AP\")}",
        tests=("tests/test_benchmarks_cli.py::test_bench_teacher_gains_on_known_input",),
    ),
    Mutation(
        id="bench-teacher-burn-in-times",
        description="bench_teacher's seconds per iteration include the burn-in's supervised steps",
        file="benchmarks/bench_teacher.py",
        old='if "time" in r and r.get("iteration", -1) >= first_iteration]',
        new='if "time" in r]',
        tests=("tests/test_benchmarks_cli.py::"
               "test_bench_teacher_step_seconds_and_cost_on_known_input",),
    ),
    Mutation(
        id="teacher-unshareable-batch-allowed",
        description="an unlabeled batch that the processes cannot share equally is not refused",
        file="imagescore_det/teacher/trainer.py",
        old="        if batch % world:",
        new="        if False:",
        tests=(f"{TEACHER}::test_an_unlabeled_batch_the_processes_cannot_share_is_refused",),
    ),
    # your own data (issue 18): COCO json / folder datasets, COCO AP, checks, export
    Mutation(
        id="coco-boxes-xywh",
        description="a COCO dataset's boxes are handed on in XYWH, not converted to XYXY_ABS",
        file="imagescore_det/data/coco.py",
        old="DatasetCatalog.register(name, lambda: _xyxy(load_coco_json(json_file, image_root, name)))",
        new="DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))",
        tests=(f"{CUSTOM}::test_coco_and_folder_datasets_from_the_config",
               f"{CUSTOM}::test_a_coco_json_pool_has_truth_and_precision"),
    ),
    Mutation(
        id="folder-not-recursive",
        description="a folder dataset reads only the top folder, not its sub-folders",
        file="imagescore_det/data/coco_format.py",
        old="dirs.sort()",
        new="dirs.clear()",
        tests=(f"{CUSTOM}::test_coco_and_folder_datasets_from_the_config",),
    ),
    Mutation(
        id="class-lists-unchecked",
        description="datasets whose class lists differ are accepted together",
        file="imagescore_det/data/coco.py",
        old="if len({tuple(v) for v in lists.values()}) <= 1:",
        new="if True:",
        tests=(f"{CUSTOM}::test_class_lists_must_agree",),
    ),
    Mutation(
        id="coco-ap-crowd-counted",
        description="COCO AP counts a detection matched to a crowd box as a true positive",
        file="imagescore_det/evaluation/coco_ap.py",
        old="ignored[t, d] = crowd[m]",
        new="ignored[t, d] = False",
        tests=(f"{CUSTOM}::test_coco_ap_from_the_detections_file_equals_cocoeval",),
    ),
    Mutation(
        id="coco-ap-no-detection-cap",
        description="COCO AP keeps 150 detections per image and class, not COCOeval's 100",
        file="imagescore_det/evaluation/coco_ap.py",
        old='kind="mergesort")[:MAX_DETS]',
        new='kind="mergesort")[:MAX_DETS + 50]',
        tests=(f"{CUSTOM}::test_coco_ap_from_the_detections_file_equals_cocoeval",),
    ),
    Mutation(
        id="coco-check-box-right-edge",
        description="the COCO check tests a box's left edge against the image width",
        file="imagescore_det/data/coco_checks.py",
        old="or x + w > width + BOX_TOLERANCE",
        new="or x > width + BOX_TOLERANCE",
        tests=(f"{CUSTOM}::test_check_dataset_finds_each_planted_coco_defect",),
    ),
    Mutation(
        id="crowd-note-stops-run",
        description="an iscrowd note stops a run like a defect",
        file="imagescore_det/engine/data_checks.py",
        old="if finding.kind in NOTE_KINDS:",
        new="if False:",
        tests=(f"{CUSTOM}::test_trainer_start_checks_coco_and_folder_datasets",),
    ),
    Mutation(
        id="export-category-ids",
        description="the pseudo-label export numbers categories 1..K, not the labeled set's ids",
        file="tools/export_pseudo_labels.py",
        old="image_root, id_map=id_map, keep_scores=True)",
        new="image_root, id_map=None, keep_scores=True)",
        tests=(f"{CUSTOM}::test_export_pseudo_labels_to_coco_and_back",),
    ),
    Mutation(
        id="headroom-bar-ignores-intervals",
        description="bench_headroom's bar is met on the mean gain alone, an interval reaching 0 "
                    "or not",
        file="benchmarks/bench_headroom.py",
        old="and whole[\"seeds_ci_above_0\"] == whole[\"seeds\"])",
        new=")",
        tests=("tests/test_benchmarks_cli.py::test_bench_headroom_aggregates_a_known_input",),
    ),
    Mutation(
        id="headroom-gain-check-off",
        description="bench_headroom accepts a bootstrap gain that disagrees with the evaluated "
                    "AP50s (a swapped pair: supervised minus arm)",
        file="benchmarks/bench_headroom.py",
        old="    if abs(evaluated - bootstrapped) > tolerance:",
        new="    if False:",
        tests=("tests/test_benchmarks_cli.py::test_bench_headroom_refuses_a_gain_of_the_wrong_sign",),
    ),
    Mutation(
        id="headroom-x2-continuation-doubled",
        description="the arms from the warm-up x2 continue twice as long as the others",
        file="benchmarks/bench_headroom.py",
        old='"SOLVER.MAX_ITER", str(2 * warmup + int(cfg.SOLVER.MAX_ITER) - warmup),',
        new='"SOLVER.MAX_ITER", str(2 * int(cfg.SOLVER.MAX_ITER)),',
        tests=("tests/test_benchmarks_cli.py::test_bench_headroom_x2_arms_double_the_warmup_only",),
    ),
    Mutation(
        id="eval-only-test-set-unchecked",
        description="(issue 19.4) --eval-only evaluates without the test-set check: an "
                    "annotation the VOC evaluator cannot read crashes the evaluation",
        file="tools/train_net.py",
        old='        trainer_cls.check_data(cfg, ("test",))',
        new="        pass",
        tests=("tests/test_train_net.py::"
               "test_eval_only_checks_the_test_set_as_the_evaluator_reads_it",),
    ),
)


def find(mutation_id, catalogue=CATALOGUE):
    for m in catalogue:
        if m.id == mutation_id:
            return m
    raise KeyError(f"no mutation {mutation_id!r}; known: {[m.id for m in catalogue]}")


# ------------------------------------------------------------------------------ snippets
def snippet_problem(m, root=REPO):
    """None when ``m`` applies to the tree at ``root``, else what is wrong (one line)."""
    path = os.path.join(root, m.file)
    if m.old == m.new:
        return f"{m.id}: old and new snippets are identical"
    if not os.path.isfile(path):
        return f"target moved: update the catalogue ({m.id}: {m.file} does not exist)"
    with open(path, encoding="utf-8") as f:
        count = f.read().count(m.old)
    if count != 1:
        return (f"target moved: update the catalogue ({m.id}: the old snippet occurs {count} "
                f"times in {m.file}, must be exactly once: {m.old!r})")
    return None


def apply(m, root):
    """Apply ``m`` to the tree at ``root`` (in place); raises ValueError if it cannot."""
    problem = snippet_problem(m, root)
    if problem:
        raise ValueError(problem)
    path = os.path.join(root, m.file)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(m.old, m.new, 1))


def test_ids_problem(m, root=REPO):
    """None when every listed test file exists and defines the named test, else why not."""
    for node in m.tests:
        path, _, rest = node.partition("::")
        full = os.path.join(root, path)
        if os.path.isdir(full) and not rest:
            continue
        if not os.path.isfile(full):
            return f"{m.id}: listed test file {path} does not exist"
        if rest:
            name = rest.split("::")[-1].split("[")[0]
            with open(full, encoding="utf-8") as f:
                if f"def {name}(" not in f.read():
                    return f"{m.id}: {path} has no test {name} (listed as {node})"
    return None


# ------------------------------------------------------------------------------ running
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".venv", "output"}


def repo_files(root=REPO):
    """``git ls-files`` (tracked + untracked-not-ignored); every file outside caches and
    outputs when ``root`` is not a git checkout (e.g. a copy made by this tool)."""
    p = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       cwd=root, capture_output=True)
    if p.returncode == 0:
        return sorted({f for f in p.stdout.decode().split("\0") if f})
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames
                if not f.startswith(".mutation_check_")]
    return sorted(out)


def copy_tree(dst, root=REPO, files=None):
    for rel in files if files is not None else repo_files(root):
        src = os.path.join(root, rel)
        if not os.path.lexists(src):  # deleted in the working tree, not yet in git
            continue
        target = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), target)
        elif os.path.isfile(src):
            shutil.copy2(src, target)


def _node_id(classname, name, root):
    """junit (classname, name) -> pytest node id, e.g. tests/test_x.py::TestA::test_b[1]."""
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        path = "/".join(parts[:i]) + ".py"
        if os.path.isfile(os.path.join(root, path)):
            return "::".join([path] + parts[i:] + [name])
    return f"{classname}::{name}"


def _outcomes(junit_path, root):
    """{node id: "passed" | "failed" | "error" | "skipped"} from a junit XML report."""
    out = {}
    if not os.path.isfile(junit_path):
        return out
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        node = _node_id(case.get("classname", ""), case.get("name", ""), root)
        tags = {child.tag for child in case}
        outcome = ("failed" if "failure" in tags else "error" if "error" in tags
                   else "skipped" if "skipped" in tags else "passed")
        if out.get(node) in ("failed", "error"):
            continue  # a teardown error after a failure: keep the failure
        out[node] = outcome
    return out


def run_pytest(root, tests, python, timeout, extra=()):
    """Run pytest in the tree ``root``; returns a dict (returncode, outcomes, tail, ...)."""
    junit = os.path.join(root, ".mutation_check_junit.xml")
    env = dict(os.environ, PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           f"--junitxml={junit}", *extra, *tests]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                           timeout=timeout)
        rc, tail = p.returncode, (p.stdout + p.stderr)[-3000:]
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        rc, tail = None, out.decode(errors="replace")[-3000:] if isinstance(out, bytes) else out
    return {"returncode": rc, "outcomes": _outcomes(junit, root), "tail": tail,
            "seconds": round(time.perf_counter() - t0, 2), "command": cmd}


def _imported_from(root, python):
    """Where ``import imagescore_det`` resolves with PYTHONPATH=root (must be inside root)."""
    env = dict(os.environ, PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run([python, "-c", "import imagescore_det; print(imagescore_det.__file__)"],
                       cwd=root, env=env, capture_output=True, text=True)
    return p.stdout.strip() or p.stderr.strip()[-500:]


def check_mutation(m, args, files):
    """Copy, mutate, run the tests; returns the result dict of one mutation."""
    tests = list(args.full_tests) if args.full else list(m.tests)
    res = {"id": m.id, "description": m.description, "file": m.file, "old": m.old,
           "new": m.new, "tests_run": tests, "listed_tests": list(m.tests)}
    try:
        return _check_mutation(m, args, files, tests, res)
    except Exception as e:  # noqa: BLE001 - one broken run must not hide the others
        return dict(res, status="error", caught=False, failed_tests=[], seconds=0.0,
                    message=f"{type(e).__name__}: {e}")


def _check_mutation(m, args, files, tests, res):
    problem = snippet_problem(m) or test_ids_problem(m)
    if problem:
        return dict(res, status="target moved" if problem.startswith("target moved")
                    else "error", caught=False, message=problem, failed_tests=[], seconds=0.0)
    tmp = tempfile.mkdtemp(prefix=f"mutation_check_{m.id}_")
    try:
        copy_tree(tmp, files=files)
        apply(m, tmp)
        where = _imported_from(tmp, args.python)
        if not os.path.realpath(where).startswith(os.path.realpath(tmp) + os.sep):
            return dict(res, status="error", caught=False, failed_tests=[], seconds=0.0,
                        message=f"imagescore_det is imported from {where}, not from the "
                                f"mutated copy {tmp} (an installed copy shadows PYTHONPATH?)")
        run = run_pytest(tmp, tests, args.python, args.timeout,
                         ["-x"] if args.exitfirst else [])
    finally:
        if args.keep:
            print(f"[{m.id}] kept mutated copy: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = sorted(n for n, o in run["outcomes"].items() if o in ("failed", "error"))
    passed = sorted(n for n, o in run["outcomes"].items() if o == "passed")
    rc = run["returncode"]
    res.update(seconds=run["seconds"], returncode=rc, failed_tests=failed, passed_tests=passed)
    if rc is None:
        return dict(res, status="error", caught=False,
                    message=f"pytest ran past --timeout {args.timeout} s", tail=run["tail"])
    if failed:  # includes a collection error the mutation caused (the baseline collected)
        return dict(res, status="caught", caught=True, message="")
    if rc == 0:
        return dict(res, status="NOT CAUGHT", caught=False,
                    message=f"all {len(passed)} tests passed with the mutation applied")
    # 4: usage error (e.g. a test id not found), 5: nothing collected, 3: internal error
    return dict(res, status="error", caught=False, tail=run["tail"],
                message=f"pytest exited {rc} without a failing test (wrong test id?)")


def run_baseline(tests, args, files):
    tmp = tempfile.mkdtemp(prefix="mutation_check_baseline_")
    try:
        copy_tree(tmp, files=files)
        run = run_pytest(tmp, tests, args.python, args.timeout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bad = sorted(n for n, o in run["outcomes"].items() if o in ("failed", "error"))
    ok = run["returncode"] == 0 and not bad
    return {"ok": ok, "returncode": run["returncode"], "failed_tests": bad,
            "seconds": run["seconds"], "tests": tests, "tail": "" if ok else run["tail"]}


# ------------------------------------------------------------------------------ output
def _short(node):
    return node.replace("tests/", "").replace("test_known_answers.py::", "known::")


def caught_by(failed, limit=3):
    """Failing tests, parametrized cases folded: ``test_x (3 cases), test_y``."""
    groups = {}
    for node in failed:
        groups.setdefault(_short(node).split("[")[0], []).append(node)
    parts = [name + (f" ({len(v)} cases)" if len(v) > 1 else "") for name, v in groups.items()]
    return ", ".join(parts[:limit]) + (f" (+{len(parts) - limit} tests)" if len(parts) > limit
                                       else "")


def table(results):
    rows = [("id", "status", "caught by (failing tests)", "s")]
    for r in results:
        rows.append((r["id"], r["status"], caught_by(r.get("failed_tests", []))
                     or r.get("message", ""), f"{r['seconds']:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ---")
    return "\n".join(lines)


def atomic_write_json(path, obj):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _git(*cmd):
    p = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
    return p.stdout.strip()


# ------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="ID", help="run only these mutations")
    p.add_argument("--full", action="store_true",
                   help="run the whole suite (tests/) for each mutation, not its listed tests")
    p.add_argument("--exitfirst", action="store_true", help="pytest -x: stop at the first failure")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip running the tests once on the unmutated copy")
    p.add_argument("--jobs", type=int, default=1, help="mutations run in parallel (default 1)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per pytest run")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs pytest")
    p.add_argument("--output", default=os.path.join(REPO, DEFAULT_OUTPUT), metavar="JSON")
    p.add_argument("--keep", action="store_true", help="keep the mutated copies (debugging)")
    p.add_argument("--list", action="store_true", help="print the catalogue and exit")
    p.add_argument("--check-catalogue", action="store_true",
                   help="only check that every snippet and listed test exists; run nothing")
    args = p.parse_args(argv)
    # the whole suite, less this tool's own tests: the catalogue test fails by design in a
    # mutated tree (its snippet is gone), which would "catch" every mutation
    args.full_tests = ["tests", "--ignore=tests/test_mutation_check.py"]
    return args


def main(argv=None):
    args = parse_args(argv)
    mutations = [find(i) for i in args.only] if args.only else list(CATALOGUE)
    if args.list:
        for m in mutations:
            print(f"{m.id}: {m.description}\n    {m.file}\n    - {m.old!r}\n    + {m.new!r}\n"
                  f"    tests: {', '.join(m.tests)}")
        return 0
    if args.check_catalogue:
        problems = [x for m in mutations for x in (snippet_problem(m), test_ids_problem(m)) if x]
        print("\n".join(problems) or f"catalogue OK: {len(mutations)} mutations apply")
        return 1 if problems else 0

    t0 = time.perf_counter()
    files = repo_files()
    report = {
        "generated": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain")),
        "mode": "full" if args.full else "listed", "exitfirst": args.exitfirst,
        # as given, or relative to the repository: the file reads the same on any machine
        "python": os.path.relpath(args.python, REPO) if os.path.isabs(args.python)
        else args.python,
    }
    if args.baseline:
        tests = args.full_tests if args.full else sorted(
            {t for m in mutations for t in m.tests
             if not (snippet_problem(m) or test_ids_problem(m))})
        print(f"baseline: {len(tests)} test id(s) on the unmutated tree ...", flush=True)
        base = run_baseline(tests, args, files) if tests else {"ok": True, "seconds": 0.0}
        report["baseline"] = base
        if not base["ok"]:
            print(f"baseline FAILED (exit {base['returncode']}): {base['failed_tests']}\n"
                  f"{base['tail']}\nFix these tests first: a failing test catches every "
                  "mutation.", file=sys.stderr)
            report["total_seconds"] = round(time.perf_counter() - t0, 1)
            atomic_write_json(args.output, report)
            return 2
        print(f"baseline OK ({base['seconds']:.0f} s)", flush=True)

    results = [None] * len(mutations)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(check_mutation, m, args, files): i for i, m in enumerate(mutations)}
        for fut in concurrent.futures.as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            r = results[i]
            print(f"[{r['id']}] {r['status']} ({r['seconds']:.0f} s)"
                  + (f": {r['message']}" if r.get("message") else ""), flush=True)
    caught = sum(r["caught"] for r in results)
    report.update(mutations=results, summary={
        "total": len(results), "caught": caught, "not_caught": len(results) - caught,
        "not_caught_ids": [r["id"] for r in results if not r["caught"]]},
        total_seconds=round(time.perf_counter() - t0, 1))
    atomic_write_json(args.output, report)
    print()
    print(table(results))
    print(f"\n{caught}/{len(results)} mutations caught in {report['total_seconds']:.0f} s; "
          f"wrote {args.output}")
    for r in results:
        if not r["caught"]:
            print(f"NOT CAUGHT {r['id']}: {r['message']}" + (
                f"\n{r['tail']}" if r.get("tail") and r["status"] == "error" else ""))
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

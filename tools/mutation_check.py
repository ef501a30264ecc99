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
        old="[pseudo_label_nms(p, settings) for p in pool_predictions], pool, settings)",
        new="list(pool_predictions), pool, settings)",
        tests=("tests/test_selection.py::test_selector_round[softmax]",),
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
        id="match-boxes-ignores-class",
        description="a pseudo-box matching a true box of another class counts as correct",
        file="imagescore_det/evaluation/pseudo_labels.py",
        old="if not used[j] and gt_classes[j] == pred_classes[i] and ious[i, j] >= best:",
        new="if not used[j] and ious[i, j] >= best:",
        tests=("tests/test_per_box.py::test_match_boxes_known_answer",
               "tests/test_per_box.py::test_round_writes_every_would_be_pseudo_box"),
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
        "python": args.python,
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

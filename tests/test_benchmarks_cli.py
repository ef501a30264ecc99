"""Every benchmark takes ``--root``, ``--seeds`` and ``--output`` (one command-line shape for
all of them), and a benchmark that reads photos refuses a missing root at once: a non-zero
exit, a message naming the path and the fix, no traceback.

The benchmarks are found by glob (``benchmarks/*.py``; ``_*.py`` are helpers, not
benchmarks), so a new one is held to the same flags without editing this file. Each case
is a subprocess (``OMP_NUM_THREADS=1``) that exits before any measuring: the benchmarks
import torch and Detectron2 only after their arguments and root are checked.
"""
import glob
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = sorted(path for path in glob.glob(os.path.join(REPO, "benchmarks", "*.py"))
                    if not os.path.basename(path).startswith("_"))
FLAGS = ("--root", "--seeds", "--output")

# benchmarks that read photos from --root (a real-data default, or an optional root), with
# the smallest settings, in case the root check ever came after the work
READS_ROOT = {
    "bench_bootstrap.py": ["--images", "2", "--resamples", "1"],
    "bench_data_checks.py": ["--copies", "1", "--workers", "1"],
    "bench_scoring.py": ["--images", "1", "--batch", "1", "--size", "32", "--repeats", "1",
                         "--skip-memory"],
    "bench_selection.py": ["--pool", "1", "--labeled", "1", "--size", "32"],
    "gpu_check.py": ["--device", "cpu", "--tiny"],
}


def run(args, timeout=60):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)
    return proc, time.perf_counter() - started


def has_option(help_text, flag):
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def test_the_glob_finds_the_benchmarks():
    names = {os.path.basename(path) for path in BENCHMARKS}
    assert set(READS_ROOT) <= names, set(READS_ROOT) - names
    assert "_bench_cli.py" not in names


@pytest.mark.parametrize("script", BENCHMARKS, ids=os.path.basename)
def test_every_benchmark_takes_root_seeds_output(script):
    proc, _ = run([script, "--help"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    missing = [flag for flag in FLAGS if not has_option(proc.stdout, flag)]
    assert not missing, f"{os.path.basename(script)} --help lacks {missing}:\n{proc.stdout}"
    # --seeds takes a list (nargs="+")
    assert re.search(r"--seeds (\w+) \[\1 \.\.\.\]", proc.stdout), proc.stdout


@pytest.mark.parametrize("script", sorted(READS_ROOT))
def test_a_missing_root_is_refused_at_once_with_the_path_and_the_fix(script, tmp_path):
    missing = str(tmp_path / "no_such_root")
    proc, seconds = run([os.path.join(REPO, "benchmarks", script), "--root", missing,
                         "--output", str(tmp_path / "out.json"), *READS_ROOT[script]])
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert missing in proc.stderr and "Pass --root DIR" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out.json").exists()
    assert seconds < 30, seconds  # before torch's import, let alone any measuring


@pytest.mark.parametrize("script, new, old, args", [
    ("bench_selection.py", "--root", "--real-dir", ["--real-dir", "MISSING"]),
    ("bench_scoring.py", "--output", "--out", ["--root", "MISSING", "--out", "OUT"])])
def test_old_flag_names_still_work(script, new, old, args, tmp_path):
    """The renamed flags keep their old names: argparse accepts them (an unknown flag would
    exit 2) and the run stops at the missing root as with the new names."""
    missing = str(tmp_path / "no_such_root")
    args = [{"MISSING": missing, "OUT": str(tmp_path / "out.json")}.get(a, a) for a in args]
    proc, _ = run([os.path.join(REPO, "benchmarks", script), *args, *READS_ROOT[script]])
    assert proc.returncode == 1 and missing in proc.stderr, proc.stderr
    help_text = run([os.path.join(REPO, "benchmarks", script), "--help"])[0].stdout
    assert re.search(rf"{new} \w+, {old} \w+", help_text), help_text  # one option, two names


# --------------------------------------------------------------------------- the shared --root
def _voc(root, splits=("labeled", "unlabeled", "test")):
    voc = root / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    for split in splits:
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("000001\n")
    return voc


def _import(name):
    """A module of benchmarks/ (sys.path as it was afterwards: they add to it)."""
    saved = list(sys.path)
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path[:] = saved


def _cli():
    return _import("_bench_cli")


def test_root_is_the_dir_holding_voc2007_or_voc2007_itself(tmp_path):
    cli = _cli()
    voc = _voc(tmp_path)
    assert cli.voc_dir(str(tmp_path), ["labeled", "test"]) == str(voc)
    assert cli.voc_dir(str(voc), ["labeled", "test"]) == str(voc)


def test_root_missing_a_split_names_the_file(tmp_path):
    cli = _cli()
    voc = _voc(tmp_path, splits=("labeled",))
    with pytest.raises(SystemExit) as e:
        cli.voc_dir(str(tmp_path), ["labeled", "unlabeled"])
    message = str(e.value.code)
    assert str(voc / "ImageSets" / "Main" / "unlabeled.txt") in message
    assert str(voc / "ImageSets" / "Main" / "labeled.txt") not in message
    assert "Pass --root DIR" in message


def test_default_root_from_the_environment_says_so(tmp_path, monkeypatch):
    cli = _cli()
    monkeypatch.setenv(cli.ENV, str(tmp_path / "gone"))
    with pytest.raises(SystemExit) as e:
        cli.resolve_voc_root(None, ["labeled"])
    message = str(e.value.code)
    assert str(tmp_path / "gone") in message and f"${cli.ENV}" in message
    monkeypatch.delenv(cli.ENV)
    assert cli.default_voc_root() == cli.DEFAULT_VOC_ROOT


def test_per_seed_keeps_the_one_seed_layout():
    cli = _cli()
    assert cli.per_seed([{"a": 1}], [0]) == {"a": 1}
    assert cli.per_seed([{"a": 1}, {"a": 2}], [0, 1]) == {"seeds": [0, 1],
                                                          "runs": [{"a": 1}, {"a": 2}]}


# --------------------------------------------------------------------------- --seeds' draws
def test_bench_data_checks_seeds_draw_where_the_faults_go(tmp_path):
    """Without a seed the faults are every fault_every-th id (the old pool); a seed draws as
    many ids at random, the same ones again for the same seed."""
    bench_data_checks = _import("bench_data_checks")
    src = tmp_path / "src"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (src / sub).mkdir(parents=True)
    ids = [f"{i:06d}" for i in range(10)]
    (src / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    for image_id in ids:
        (src / "Annotations" / f"{image_id}.xml").write_text("<annotation/>")
        (src / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"\xff\xd8" + bytes(100))

    def planted(seed, name):
        pool, faults = bench_data_checks.build(str(src), str(tmp_path / name), 2, 5, seed=seed)
        return pool, {os.path.basename(path)[:-4]: kind for path, kind in faults.items()}

    pool, fixed = planted(None, "fixed")
    assert sorted(fixed) == pool[::5]
    _, first = planted(3, "seed3")
    _, again = planted(3, "seed3_again")
    _, other = planted(4, "seed4")
    assert first == again and len(first) == len(fixed) == len(other) == 4
    assert sorted(first.values()) == sorted(fixed.values())  # the kinds still cycle
    assert set(first) != set(fixed) or set(other) != set(fixed)


@pytest.mark.parametrize("scale", [1, 2])
def test_bench_plateau_runs_a_valid_supervised_config(scale, tmp_path):
    """bench_plateau's runs are the quickstart config turned supervised-only and stretched:
    the overrides must load (a ConfigError would surface only after the benchmark started)
    and keep the warm-up's LR step at the same fraction of the schedule."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import bench_plateau

    from imagescore_det.engine import load_config

    warmup, steps, _ = bench_plateau.warmup_schedule()
    cfg = load_config(os.path.join(REPO, bench_plateau.CONFIG),
                      bench_plateau.overrides(str(tmp_path / "out"), scale, 3))
    assert not cfg.IMAGE_SCORE.ENABLED and not cfg.IMAGE_SCORE.PAIRED_BASELINE
    assert cfg.SOLVER.MAX_ITER == warmup * scale and cfg.SEED == 3
    assert list(cfg.SOLVER.STEPS) == [s * scale for s in steps] and steps
    # --opts: another setting measured the same way, the schedule read with it
    extra = ["MODEL.VGG.NORM", "BN", "SOLVER.STEPS", f"({warmup - 100},)"]
    cfg = load_config(os.path.join(REPO, bench_plateau.CONFIG),
                      bench_plateau.overrides(str(tmp_path / "out"), scale, 3, extra))
    assert cfg.MODEL.VGG.NORM == "BN" and list(cfg.SOLVER.STEPS) == [(warmup - 100) * scale]


def test_bench_plateau_reads_curves_and_step_times(tmp_path):
    """The learning curve and the step time come from metrics.json; a single schedule gets
    no plateau verdict (there is nothing to compare it with)."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import bench_plateau

    metrics = tmp_path / "metrics.json"
    rows = [{"iteration": 19, "time": 0.3}, {"iteration": 39, "time": 0.1},
            {"iteration": 249, "bbox/AP50": 40.0}, {"iteration": 59, "time": 0.2},
            {"iteration": 499, "bbox/AP50": 60.0}, {"iteration": 499, "bbox/AP50": 61.0}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench_plateau.curve(str(metrics), 499) == [(250, 40.0), (499, 61.0)]
    assert bench_plateau.seconds_per_iteration(str(metrics)) == pytest.approx(0.2)
    only_eval = tmp_path / "only_eval.json"
    only_eval.write_text(json.dumps(rows[2]) + "\n")
    assert bench_plateau.seconds_per_iteration(str(only_eval)) is None
    summary = {"iterations": 500, "ap50_end_mean": 61.0, "ap50_end_std": 0.0, "gain_mean": 0.0,
               "gain_min": 0.0, "gain_max": 0.0, "seconds_per_iteration_median": 0.2}
    result = {"warmup_iterations": 500, "lr_steps": [400], "command": "x", "machine": "m",
              "wall_seconds": 60, "scales": [1], "summary": {"x1": summary},
              "overrides": ["MODEL.VGG.NORM", "BN"],
              "per_seed": [{"seed": 0, "x1": {"ap50_end": 61.0}}]}
    text = bench_plateau.markdown(result)
    assert "| x1 | 500 | 61.0 ± 0.0 | +0.0 (+0.0 to +0.0) | 0.200 |" in text
    assert "MODEL.VGG.NORM BN" in text and "Verdict" not in text
    result["scales"] = [1, 2]
    result["summary"]["x2"] = dict(summary, gain_mean=5.0, gain_min=4.0, gain_max=6.0)
    result["per_seed"][0]["x2"] = {"ap50_end": 66.0}
    assert "is *not* at its plateau" in bench_plateau.markdown(result)


# ------------------------------------------------- what the results files record (issue 19.9)
def test_recorded_path_is_relative_to_the_repository_or_as_given():
    cli = _cli()
    assert cli.recorded_path(os.path.join(REPO, "datasets")) == "datasets"
    assert cli.recorded_path(os.path.join(os.path.dirname(REPO), "shared", "voc2007-real")) \
        == os.path.join("..", "shared", "voc2007-real")
    assert cli.recorded_path(os.path.join("datasets", "x")) == os.path.join("datasets", "x")
    assert cli.recorded_path(None) is None


def _strings(node, where=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def test_committed_results_record_no_absolute_path():
    """A results file reads the same on any machine: no path of the machine that made it."""
    files = sorted(glob.glob(os.path.join(REPO, "benchmarks", "results", "**", "*.json"),
                             recursive=True))
    assert files
    absolute = [(os.path.relpath(path, REPO), where, value) for path in files
                for where, value in _strings(json.load(open(path)))
                if os.path.isabs(value.split()[0] if value.split() else value)]
    assert not absolute


def test_bench_plateau_gain_key_names_the_smallest_scale():
    plateau = _import("bench_plateau")
    done = {(0, 1): ([(10, 50.0), (20, 55.0)], 0.5), (0, 2): ([(20, 55.0), (40, 60.0)], 0.6),
            (1, 1): ([(20, 40.0)], 0.4), (1, 2): ([(40, 43.0)], 0.8)}
    per_seed, summary = plateau.aggregate(done, 20, [1, 2], [0, 1])
    assert [row["x2"]["gain_over_x1"] for row in per_seed] == [5.0, 3.0]
    assert [row["x1"]["gain_over_x1"] for row in per_seed] == [0.0, 0.0]
    assert not any("{" in key for row in per_seed for m in ("x1", "x2") for key in row[m])
    assert summary["x2"] == {"iterations": 40, "ap50_end_mean": 51.5,
                             "ap50_end_std": pytest.approx(12.020815, abs=1e-6),
                             "gain_mean": 4.0, "gain_min": 3.0, "gain_max": 5.0,
                             "seconds_per_iteration_median": pytest.approx(0.7)}
    per_seed, _ = plateau.aggregate({(0, 2): ([(40, 9.0)], 1.0), (0, 3): ([(60, 10.0)], 1.0)},
                                    20, [2, 3], [0])
    assert per_seed[0]["x3"]["gain_over_x2"] == 1.0


def test_bench_quality_shifted_share_divides_by_the_images_trained_on():
    """Back-fill off: 5 selected, one without pseudo-boxes dropped, so 4 trained on, 1 of
    them shifted: 1/4, not 1/num_selected = 1/5."""
    quality = _import("bench_quality")
    entry = {"num_selected": 5, "pool_size": 12,
             "domains": {"typical": {"pool": 8, "selected": 3, "mean_score": 0.5},
                         "shifted": {"pool": 4, "selected": 1, "mean_score": 0.2}}}
    assert quality.shifted_shares(entry) == {"shifted_share_of_selection": 0.25,
                                             "shifted_share_of_pool": 4 / 12}
    assert quality.shifted_shares({"num_selected": 5}) == {}
    # a pool of one domain (the headroom protocol's same-distribution pool): no shifted image
    typical_only = {"num_selected": 3, "domains": {"typical": {"pool": 9, "selected": 3}}}
    assert quality.shifted_shares(typical_only) == {"shifted_share_of_selection": 0.0,
                                                    "shifted_share_of_pool": 0.0}


# --------------------------------------------------------------------------- bench_quality
def _bench_quality():
    from conftest import load_tool

    return load_tool("bench_quality", "benchmarks")


def _boot(boot, full, resamples=4):
    """A seed_image_bootstrap-shaped result from synthetic AP50 numbers."""
    return {"resamples": resamples, "seed": 0,
            "boot": {k: {"AP50": np.asarray(v, float)} for k, v in boot.items()},
            "full": {k: {"AP50": np.asarray(v, float)} for k, v in full.items()}}


def test_bench_quality_gain_and_share_of_the_oracle_known_answers():
    """Gains over none (means over seeds), the share of the oracle's gain against none:
    supervised 50, oracle 60, image_score 54 -> +4, share 0.4; random 48 -> -2, share -0.2."""
    bq = _bench_quality()
    full = {"none": [49, 51], "oracle": [59, 61], "image_score": [53, 55],
            "random": [47, 49]}
    boot = {"none": [50, 50, 50, 50], "oracle": [55, 60, 65, 70],
            "image_score": [51, 52, 55, 57], "random": [49, 48, 47, 46]}
    gains = bq.gain_summary(_boot(boot, full), ["image_score", "random", "oracle"])
    rows = gains["variants"]
    assert rows["image_score"]["difference"] == 4 and rows["random"]["difference"] == -2
    assert rows["image_score"]["per_seed"] == [4.0, 4.0]
    assert rows["image_score"]["ci"] == pytest.approx(list(np.percentile([1, 2, 5, 7],
                                                                         [2.5, 97.5])))
    assert rows["random"]["p_value"] == 1.0 and rows["image_score"]["p_value"] == 0.0
    assert rows["image_score"]["share_of_oracle"]["share"] == pytest.approx(0.4)
    assert rows["random"]["share_of_oracle"]["share"] == pytest.approx(-0.2)
    assert rows["image_score"]["share_of_oracle"]["ci"] == pytest.approx(
        list(np.percentile([1 / 5, 2 / 10, 5 / 15, 7 / 20], [2.5, 97.5])))
    assert "share_of_oracle" not in rows["oracle"] and gains["oracle_share_undefined"] is None
    text = "\n".join(bq.gains_markdown(gains))
    assert "| image_score | +4.00 | [+1.08, +6.85] | 0.000 | +4.00, +4.00 | 0.40 [0.20, 0.35] |" \
        in text
    assert "| oracle | +10.00 |" in text and "| 1 (reference) |" in text
    assert "Share undefined" not in text


def test_bench_quality_share_undefined_when_the_oracle_gain_is_not_above_zero():
    bq = _bench_quality()
    full = {"none": [50, 50], "oracle": [50.5, 50.5], "image_score": [53, 53]}
    boot = {"none": [50] * 4, "oracle": [49, 50, 51, 52], "image_score": [53] * 4}
    gains = bq.gain_summary(_boot(boot, full), ["image_score", "oracle"])
    share = gains["variants"]["image_score"]["share_of_oracle"]
    assert share["share"] is None and "not distinguishable from 0" in share["undefined"]
    assert gains["oracle_share_undefined"] == share["undefined"]
    text = "\n".join(bq.gains_markdown(gains))
    assert "**Share undefined:** oracle's gain over none (+0.50 AP50" in text
    assert "| image_score | +3.00 |" in text and "undefined (oracle gain not above 0) |" in text
    # without an oracle run there is no share column value, and it says so
    gains = bq.gain_summary(_boot(boot, full), ["image_score"])
    assert "share_of_oracle" not in gains["variants"]["image_score"]
    assert "No `oracle` run" in "\n".join(bq.gains_markdown(gains))


def _write_detections(path, found):
    """A detections file of one class "a" on two images (see evaluation.detections)."""
    truth = {"x": [["a", 0, 10, 10, 50, 50]], "y": [["a", 0, 60, 60, 90, 90]]}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"format_version": 1, "dataset": "hand", "classes": ["a"],
                   "use_07_metric": True, "image_ids": ["x", "y"], "ground_truth": truth,
                   "detections": {"a": {"image_ids": [d[0] for d in found],
                                        "scores": [d[1] for d in found],
                                        "boxes": [d[2] for d in found]}}}, f)


def test_bench_quality_seed_gains_reads_none_from_the_paired_copy(tmp_path):
    """seed_gains takes none from the base run's supervised-only copy (PAIRED_DIR) and each
    variant from its branch: none finds nothing (AP50 0), image_score one of the two objects
    (the 11-point AP: 6/11), oracle both (100), on both seeds -> gains +600/11 / +100, share
    6/11."""
    from imagescore_det.engine.paired import PAIRED_DIR

    bq = _bench_quality()
    hit_x, hit_y = ("x", 0.9, [10, 10, 50, 50]), ("y", 0.8, [60, 60, 90, 90])
    miss = ("x", 0.7, [100, 100, 120, 120])
    for seed in (0, 1):
        run = tmp_path / f"seed{seed}"
        _write_detections(str(run / "image_score" / PAIRED_DIR / "inference" /
                              "detections_hand.json"), [miss])
        _write_detections(str(run / "image_score" / "inference" / "detections_hand.json"),
                          [hit_x, miss])
        _write_detections(str(run / "oracle" / "inference" / "detections_hand.json"),
                          [hit_x, hit_y])
    gains = bq.seed_gains(str(tmp_path), [0, 1], ["image_score", "oracle"], resamples=50)
    rows = gains["variants"]
    assert rows["oracle"]["difference"] == pytest.approx(100)
    assert rows["image_score"]["per_seed"] == pytest.approx([600 / 11, 600 / 11])
    assert rows["image_score"]["share_of_oracle"]["share"] == pytest.approx(6 / 11)
    assert gains["bootstrap"]["resamples"] == 50


def _quality_result(gains=None):
    runs = {"none": [{"ap50_before": 60.0, "ap50_after": 61.0, "pseudo_images": 0}],
            "image_score": [{"ap50_before": 60.0, "ap50_after": 62.0, "pseudo_images": 9,
                             "vs_none": {"AP50_difference": 1.0, "AP50_ci95": [-1.0, 3.0],
                                         "p_value": 0.2}}]}
    result = {"seeds": [0], "command": "benchmarks/bench_quality.py", "config": "c.yaml",
              "overrides": [], "machine": "m", "wall_seconds": 60, "skipped_variants": {},
              "runs": runs, "mean_over_seeds": {
                  "none": {"ap50_after": {"mean": 61.0, "std": 0.0}},
                  "image_score": {"ap50_after": {"mean": 62.0, "std": 0.0},
                                  "AP50_difference": {"mean": 1.0, "std": 0.0}}}}
    if gains is not None:
        result["gains"] = gains
    return result


def test_bench_quality_report_of_an_older_result_has_no_gain_table(tmp_path):
    """A result without gains (written before them) renders as before; with gains, the
    Markdown has the table and the PNG its share panel."""
    bq = _bench_quality()
    old = bq.markdown(_quality_result())
    assert "Gain over `none`" not in old and "| image_score | 1 |" not in old
    boot = _boot({"none": [50] * 4, "image_score": [51, 52, 53, 54]},
                 {"none": [50], "image_score": [52.5]})
    new = bq.markdown(_quality_result(bq.gain_summary(boot, ["image_score"])))
    assert "Gain over `none`" in new and "| image_score | +2.50 |" in new
    assert new.replace("\n".join(bq.gains_markdown(bq.gain_summary(
        boot, ["image_score"]))) + "\n", "") == old
    bq.plot(str(tmp_path / "q.png"), _quality_result(bq.gain_summary(boot, ["image_score"])))
    assert (tmp_path / "q.png").stat().st_size > 0


def test_bench_quality_measures_the_config_it_is_given(tmp_path, monkeypatch):
    """--config reaches every run's train_net.py command; a config without a round, or an
    unknown key in --opts, stops the benchmark before any run, naming it."""
    bq = _bench_quality()
    seen = []

    class Done:
        returncode = 0

    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: seen.append(cmd) or Done())
    other = os.path.join("configs", "synthetic", "other.yaml")
    bq.train(str(tmp_path / "run"), ["K", "V"], 3, False, 1, ["X", "Y"], other)
    cmd = seen[0]
    assert cmd[cmd.index("--config-file") + 1] == os.path.join(REPO, other)
    assert cmd[-4:] == ["K", "V", "X", "Y"]  # --opts after the variant's keys
    assert bq.check_protocol(bq.CONFIG, []).IMAGE_SCORE.ENABLED
    base = os.path.join("configs", "synthetic", "Base-V16tiny-synthetic.yaml")  # no round
    with pytest.raises(SystemExit, match=rf"--config {base} does not load for bench_quality: "
                                          r".*IMAGE_SCORE.ENABLED True.*Pass a config that"):
        bq.check_protocol(base, [])
    with pytest.raises(SystemExit, match=r"--opts IMAGE_SCORE.NO_SUCH 1 does not load.*NO_SUCH"):
        bq.check_protocol(bq.CONFIG, ["IMAGE_SCORE.NO_SUCH", "1"])


# --------------------------------------------------------------------------- bench_teacher
def test_bench_teacher_arguments_and_overrides(tmp_path):
    teacher = _import("bench_teacher")
    args = teacher.parse_args(["--seeds", "3", "4", "--arms", "random", "oracle",
                               "--opts", "SOLVER.MAX_ITER", "10"])
    assert args.seeds == [3, 4] and args.opts == ["SOLVER.MAX_ITER", "10"]
    assert args.arms == ["supervised", "none", "random", "oracle"]  # the base run's arms first
    assert teacher.parse_args([]).arms == list(teacher.ARMS) and teacher.parse_args(
        []).config == os.path.join("configs", "synthetic", "teacher_V16tiny_quick.yaml")
    assert teacher.arm_overrides("image_score", 0.25) == [
        "TEACHER.SELECTOR", "image_score", "TEACHER.TOP_FRACTION", "0.25",
        "TEACHER.PAIRED_BASELINE", "False"]
    assert teacher.arm_overrides("oracle", 0.25) == [
        "TEACHER.TARGETS", "truth", "TEACHER.PAIRED_BASELINE", "False"]
    assert teacher.arm_dir("w", 1, "supervised") == os.path.join("w", "seed1", "none",
                                                                 "paired_supervised")
    assert teacher.arm_dir("w", 1, "none") == os.path.join("w", "seed1", "none")
    assert teacher.arm_dir("w", 1, "random") == os.path.join("w", "seed1", "random")
    for bad in (["--top-fraction", "0"], ["--opts", "SOLVER.MAX_ITER"]):
        with pytest.raises(SystemExit):
            teacher.parse_args(bad)


def test_bench_teacher_step_seconds_and_cost_on_known_input(tmp_path):
    teacher = _import("bench_teacher")
    metrics = tmp_path / "metrics.json"
    rows = [{"iteration": 19, "time": 9.0}, {"iteration": 39, "time": 0.5},
            {"iteration": 59, "time": 0.7}, {"iteration": 79, "time": 0.6},
            {"iteration": 80, "bbox/AP50": 1.0}]
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert teacher.step_seconds(str(metrics), 20) == pytest.approx(0.6)  # burn-in row left out
    assert teacher.step_seconds(str(metrics), 100) is None
    per_arm = {"supervised": [{"seconds_per_iteration": 0.2}, {"seconds_per_iteration": 0.25}],
               "none": [{"seconds_per_iteration": 0.5}, {"seconds_per_iteration": 0.5}],
               "image_score": [{"seconds_per_iteration": 0.55}, {"seconds_per_iteration": 0.5}]}
    c = teacher.cost(per_arm)
    assert c["online_over_supervised"]["per_seed"] == pytest.approx([2.5, 2.0])
    assert c["online_over_supervised"]["mean"] == pytest.approx(2.25)
    assert c["image_score_over_none"]["mean"] == pytest.approx(1.05)
    assert teacher.cost({"none": per_arm["none"]})["online_over_supervised"] is None


def test_bench_teacher_pseudo_precision_over_training_on_known_input(tmp_path):
    """measure() from a hand-written report.json and metrics.json: 80 online steps after a
    burn-in of 100, running sums logged every 20 steps (one row replayed by a resume): the
    pooled precision and recall and each quarter's from the differences of the sums."""
    teacher = _import("bench_teacher")
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({
        "config": {"max_iter": 180}, "eval_after": {"bbox": {"AP50": 60.0, "AP": 30.0}},
        "teacher": {"burn_in_iter": 100, "refreshes": []}}))
    totals = {119: (2, 8, 20), 139: (6, 12, 40), 159: (15, 15, 60), 179: (24, 16, 80)}
    rows = [{"iteration": 99, "time": 0.1}]
    for it, (tp, fp, gt) in totals.items():
        rows.append({"iteration": it, "time": 0.2, "teacher/pseudo_tp": 1,
                     "teacher/pseudo_tp_total": tp, "teacher/pseudo_fp_total": fp,
                     "teacher/pseudo_gt_total": gt})
    rows.insert(3, dict(rows[2]))  # iteration 139 again (a resume replays it)
    rows.append({"iteration": 179, "bbox/AP50": 60.0})
    (run / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    m = teacher.measure(str(run))
    assert m["pseudo_precision"] == pytest.approx(24 / 40)
    assert m["pseudo_recall"] == pytest.approx(24 / 80)
    assert m["pseudo_counts"] == {"tp": 24, "fp": 16, "gt": 80}
    quarters = m["pseudo_precision_by_quarter"]
    assert [q["precision"] for q in quarters] == pytest.approx([0.2, 0.5, 0.75, 0.9])
    assert [q["recall"] for q in quarters] == pytest.approx([0.1, 0.2, 0.45, 0.45])
    assert [(q["first_iteration"], q["last_iteration"]) for q in quarters] == [
        (100, 119), (120, 139), (140, 159), (160, 179)]
    assert teacher._quarters([m, m]) == "0.200 / 0.500 / 0.750 / 0.900"

    # no row in the first quarter: it is empty (None), the second counts from the burn-in on
    del rows[1]
    (run / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    quarters = teacher.measure(str(run))["pseudo_precision_by_quarter"]
    assert quarters[0] == {"first_iteration": None, "last_iteration": None, "tp": 0, "fp": 0,
                           "gt": 0, "precision": None, "recall": None}
    assert (quarters[1]["first_iteration"], quarters[1]["precision"]) == (100, 6 / 18)
    # nothing logged (the supervised copy, the oracle): every field None
    (run / "metrics.json").write_text(json.dumps({"iteration": 179, "time": 0.2}) + "\n")
    m = teacher.measure(str(run))
    assert m["pseudo_precision"] is None and m["pseudo_precision_by_quarter"] is None
    assert teacher._quarters([m]) == "-"
    # the offline arm (no teacher): its round's iteration ends the burn-in, its precision is
    # the round's
    (run / "report.json").write_text(json.dumps({
        "config": {"max_iter": 180}, "eval_after": {"bbox": {"AP50": 61.0, "AP": 31.0}},
        "rounds": [{"iteration": 130, "pseudo_precision": 0.45, "num_pseudo_images": 7}]}))
    (run / "metrics.json").write_text("\n".join(json.dumps(r) for r in [
        {"iteration": 119, "time": 9.0}, {"iteration": 139, "time": 0.3},
        {"iteration": 159, "time": 0.5}]) + "\n")
    m = teacher.measure(str(run))
    assert (m["online_iterations"], m["seconds_per_iteration"]) == (50, 0.4)
    assert (m["offline_pseudo_precision"], m["offline_pseudo_images"]) == (0.45, 7)


def test_bench_teacher_gains_on_known_input():
    """Hand-made bootstrap result: every resample equals the full-set mean, so the gains
    and shares are exact and their intervals collapse onto them."""
    teacher = _import("bench_teacher")
    full = {"supervised": [50.0, 52.0], "none": [54.0, 56.0], "image_score": [55.0, 57.0],
            "image_score_weighted": [53.0, 55.0], "oracle": [58.0, 60.0]}
    boot = {"resamples": 4, "seed": 0,
            "full": {a: {"AP50": np.array(v), "AP": np.array(v) / 2} for a, v in full.items()},
            "boot": {a: {"AP50": np.full(4, np.mean(v)), "AP": np.full(4, np.mean(v) / 2)}
                     for a, v in full.items()}}
    gains = teacher.summarize(boot, list(full))
    none = gains["over_supervised"]["none"]
    assert none["AP50"]["difference"] == pytest.approx(4.0)
    assert none["AP50"]["ci"] == pytest.approx([4.0, 4.0])
    assert none["AP"]["difference"] == pytest.approx(2.0)
    assert none["share_of_oracle"]["share"] == pytest.approx(0.5)  # 4 of the oracle's 8
    assert gains["over_supervised"]["image_score"]["share_of_oracle"]["share"] == \
        pytest.approx(5 / 8)
    assert "share_of_oracle" not in gains["over_supervised"]["oracle"]
    assert "supervised" not in gains["over_supervised"]
    assert gains["over_none"]["image_score"]["difference"] == pytest.approx(1.0)
    assert gains["over_none"]["image_score_weighted"]["difference"] == pytest.approx(-1.0)
    assert set(gains["over_none"]) == {"image_score", "image_score_weighted"}
    offline = teacher.arm_overrides("offline", 0.5, 1000)
    assert offline[offline.index("IMAGE_SCORE.START_ITER") + 1] == "1000"
    assert offline[offline.index("TEACHER.ENABLED") + 1] == "False"
    assert offline[offline.index("IMAGE_SCORE.ENABLED") + 1] == "True"
    assert "TEACHER.TOP_FRACTION" not in offline
    assert teacher.arm_overrides("image_score_weighted", 0.5) == [
        "TEACHER.SELECTOR", "image_score", "TEACHER.RANK_WEIGHTING", "True",
        "TEACHER.TOP_FRACTION", "1.0", "TEACHER.PAIRED_BASELINE", "False"]


def test_bench_teacher_smoke_at_toy_size(tiny_voc, tmp_path, monkeypatch):
    """The whole benchmark on the tiny dataset, one seed, 2 burn-in + 2 online iterations:
    every arm's files, the gains over the paired supervised copy and the cost written."""
    from conftest import tiny_cfg_opts

    teacher = _import("bench_teacher")
    root = tmp_path / "datasets"
    root.mkdir()
    # main() points DETECTRON2_DATASETS at --root, as a script run does; restored after the
    # test so that later tests see the session's datasets root
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    os.symlink(tiny_voc["root"], root / "synthetic_voc")
    opts = [o.replace("tiny_voc_", "synthetic_voc_") for o in tiny_cfg_opts(tmp_path, 4)]
    for key in ("OUTPUT_DIR", "SEED"):  # the benchmark sets them per run
        i = opts.index(key)
        del opts[i:i + 2]
    opts += ["TEACHER.BURN_IN_ITER", "2", "TEACHER.SCORE_THRESH", "0.0"]
    output = tmp_path / "teacher.json"
    result = teacher.main(["--root", str(root), "--seeds", "0", "--arms", "random", "oracle",
                           "--work-dir", str(tmp_path / "work"), "--output", str(output),
                           "--resamples", "20", "--opts", *opts])
    assert result["arms"] == ["supervised", "none", "random", "oracle"]
    assert result["online_iterations"] == 2
    for name in result["arms"]:
        [row] = result["runs"][name]
        assert row["ap50"] is not None and row["online_iterations"] == 2, name
    assert set(result["gains"]["over_supervised"]) == {"none", "random", "oracle"}
    assert result["runs"]["random"][0]["ranking_seconds"] > 0
    assert result["runs"]["oracle"][0]["pseudo_boxes_per_image"] > 0
    assert json.loads(output.read_text())["benchmark"] == "teacher"
    assert (tmp_path / "teacher.md").is_file() and (tmp_path / "teacher.png").is_file()


def test_bench_teacher_cost_phases_on_known_input():
    teacher = _import("bench_teacher")
    times = [(0, 9.0), (1, 1.0), (2, 2.0), (3, 7.0), (4, 3.0), (5, 5.0)]
    assert teacher.phase_seconds(times, 3) == {
        "supervised": 1.5, "online": 4.0, "iterations": {"supervised": 2, "online": 2}}
    assert teacher.parse_args(["--cost", "30"]).output.endswith(
        os.path.join("benchmarks", "results", "teacher_cost.json"))
    with pytest.raises(SystemExit):
        teacher.parse_args(["--cost", "1"])
    # unfiltered steps of 0.38 s, a 4.2 s ranking: a filtered step of 0.4 s is over
    # 1.05 x 0.38 = 0.399 already (no period reaches the target); at 0.39 s, P >= 4.2 / 0.009
    assert teacher.refresh_period_for(1.05, 0.38, 0.4, 4.2) is None
    period = teacher.refresh_period_for(1.05, 0.38, 0.39, 4.2)
    assert period == pytest.approx(4.2 / (1.05 * 0.38 - 0.39))
    assert (0.39 + 4.2 / period) / 0.38 == pytest.approx(1.05)
    assert (0.39 + 4.2 / (0.9 * period)) / 0.38 > 1.05


def _bench_headroom():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import bench_headroom

    return bench_headroom


def test_bench_headroom_arguments():
    bh = _bench_headroom()
    args = bh.parse_args([])
    assert args.seeds == [0, 1, 2] and args.pools == ["same", "shifted"] and args.jobs == 2
    assert args.plateau_seeds == [0, 1, 2]  # every seed's warm-up is checked by default
    args = bh.parse_args(["--seeds", "4", "--pools", "shifted", "--opts", "SOLVER.BASE_LR", "0.1"])
    assert args.seeds == [4] and args.pools == ["shifted"] and args.opts == ["SOLVER.BASE_LR", "0.1"]
    assert bh.parse_args(["--seeds", "1", "2", "--plateau-seeds"]).plateau_seeds == []
    assert bh.parse_args(["--seeds", "1", "2", "--plateau-seeds", "2"]).plateau_seeds == [2]
    for bad in (["--pools", "other"], ["--opts", "SOLVER.BASE_LR"],
                ["--seeds", "1", "--plateau-seeds", "0"]):
        with pytest.raises(SystemExit) as e:
            bh.parse_args(bad)
        assert e.value.code == 2


def test_bench_headroom_runs_load_and_branch_from_one_warmup(tmp_path):
    """Every arm's overrides load on the headroom config; only the base run (same pool,
    whole pool) keeps the paired supervised copy; the shifted arms change the pool only, so
    they can branch from the same warm-up; the plateau run is that warm-up x2, supervised."""
    bh = _bench_headroom()
    import bench_plateau

    from imagescore_det.engine import load_config

    cfgs = {(pool, arm): load_config(os.path.join(REPO, bh.CONFIG), bh.arm_overrides(
        7, pool, arm, str(tmp_path / pool / arm))) for pool in bh.POOLS for arm in bh.ARMS}
    base = cfgs[("same", "oracle_all")]
    assert base.IMAGE_SCORE.PAIRED_BASELINE and base.SEED == 7
    assert base.IMAGE_SCORE.SELECTOR == "oracle" and base.IMAGE_SCORE.TOP_FRACTION == 1.0
    assert list(base.IMAGE_SCORE.UNLABELED_DATASETS) == ["synthetic_headroom_unlabeled"]
    assert cfgs[("same", "oracle_30")].IMAGE_SCORE.TOP_FRACTION == 0.3
    for (pool, arm), cfg in cfgs.items():
        assert cfg.IMAGE_SCORE.PAIRED_BASELINE == ((pool, arm) == ("same", "oracle_all"))
        assert cfg.OUTPUT_DIR == str(tmp_path / pool / arm) and cfg.SEED == 7
        assert cfg.DATASETS.TRAIN == base.DATASETS.TRAIN == ("synthetic_headroom_labeled",)
        assert cfg.DATASETS.TEST == base.DATASETS.TEST
        assert cfg.IMAGE_SCORE.START_ITER == base.IMAGE_SCORE.START_ITER
        assert cfg.SOLVER.MAX_ITER == base.SOLVER.MAX_ITER
        assert list(cfg.IMAGE_SCORE.UNLABELED_DATASETS) == [
            f"synthetic_headroom{'_shifted' if pool == 'shifted' else ''}_unlabeled"]
    warmup, steps, _ = bench_plateau.warmup_schedule([], bh.PLATEAU_CONFIG)
    assert warmup == base.IMAGE_SCORE.START_ITER and steps == [s for s in base.SOLVER.STEPS
                                                               if s < warmup]
    x2 = load_config(os.path.join(REPO, bh.PLATEAU_CONFIG), bench_plateau.overrides(
        str(tmp_path / "x2"), 2, 7, [], bh.PLATEAU_CONFIG))
    assert not x2.IMAGE_SCORE.ENABLED and x2.SOLVER.MAX_ITER == 2 * warmup
    assert list(x2.SOLVER.STEPS) == [2 * s for s in steps]
    assert x2.DATASETS.TRAIN == base.DATASETS.TRAIN and x2.DATASETS.TEST == base.DATASETS.TEST


def test_headroom_variants_share_labeled_and_test_images(tmp_path):
    """The shifted arms reuse the same-pool warm-up: that holds only if the two variants'
    labeled and test images (and boxes) are the same files, the pool alone differing."""
    from imagescore_det.data import HEADROOM_DATASETS, generate_synthetic_voc

    same, shifted = (dict(HEADROOM_DATASETS[n], num_labeled=3, num_unlabeled=5, num_test=2)
                     for n in ("synthetic_headroom", "synthetic_headroom_shifted"))
    assert same["shifted_fraction"] == 0.0 and shifted["shifted_fraction"] > 0
    a = generate_synthetic_voc(tmp_path / "a", **same)["dirname"]
    b = generate_synthetic_voc(tmp_path / "b", **shifted)["dirname"]

    def files(root, split):
        ids = open(os.path.join(root, "ImageSets", "Main", split + ".txt")).read().split()
        return [(open(os.path.join(root, "Annotations", i + ".xml"), "rb").read(),
                 open(os.path.join(root, "JPEGImages", i + ".jpg"), "rb").read()) for i in ids]

    for split in ("labeled", "test"):
        assert files(a, split) == files(b, split)
    assert files(a, "unlabeled") != files(b, "unlabeled")


def _headroom_seed(seed, warm, x2, sup, gains):
    """A per-seed row: gains = {(pool, arm): (gain, lo, hi)}."""
    row = {"seed": seed, "warmup_ap50": warm, "warmup_x2_ap50": x2, "supervised_ap50": sup}
    for (pool, arm), (g, lo, hi) in gains.items():
        row.setdefault(pool, {})[arm] = {"ap50": sup + g, "gain": g, "gain_ci95": [lo, hi],
                                         "pseudo_images": 460 if arm == "oracle_all" else 138,
                                         "p_value": 0.0}
    return row


def test_bench_headroom_aggregates_a_known_input():
    bh = _bench_headroom()
    rows = [_headroom_seed(0, 60.0, 61.0, 62.0, {("same", "oracle_all"): (12.0, 8.0, 16.0),
                                                 ("same", "oracle_30"): (6.0, 2.0, 10.0)}),
            _headroom_seed(1, 64.0, 67.0, 63.0, {("same", "oracle_all"): (9.0, 5.0, 13.0),
                                                 ("same", "oracle_30"): (3.0, -1.0, 7.0)}),
            _headroom_seed(2, 62.0, 62.0, 64.0, {("same", "oracle_all"): (15.0, 11.0, 19.0),
                                                 ("same", "oracle_30"): (6.0, 1.0, 11.0)})]
    agg = bh.aggregate(rows, ["same"])
    whole, part = agg["same"]["oracle_all"], agg["same"]["oracle_30"]
    assert whole["gain"] == {"mean": 12.0, "std": 3.0, "min": 9.0, "max": 15.0, "n": 3}
    assert whole["ap50"]["mean"] == pytest.approx(63.0 + 12.0)
    assert whole["seeds_ci_above_0"] == 3 and part["seeds_ci_above_0"] == 2
    assert part["gain"]["mean"] == 5.0
    assert agg["warmup_x2_gain"]["mean"] == pytest.approx(4.0 / 3) and \
        agg["warmup_x2_gain"]["max"] == 3.0
    assert agg["supervised_gain_over_warmup"]["mean"] == pytest.approx(1.0)
    assert agg["same"]["bar_met"]  # mean 12 >= 10, every interval above 0
    # one seed's interval reaching 0 fails the bar, whatever the mean
    rows[1]["same"]["oracle_all"]["gain_ci95"] = [-0.5, 13.0]
    assert not bh.aggregate(rows, ["same"])["same"]["bar_met"]
    # a mean below 10 fails it too
    rows[1]["same"]["oracle_all"].update(gain=1.0, gain_ci95=[0.5, 1.5])
    assert not bh.aggregate(rows, ["same"])["same"]["bar_met"]
    result = {"seeds": [0, 1, 2], "pools": ["same"], "command": "c", "commit": "abc",
              "config": bh.CONFIG, "warmup_iterations": 600, "continuation_iterations": 300,
              "overrides": [], "machine": "m", "wall_seconds": 60,
              "mean_over_seeds": agg, "per_seed": rows}
    text = bh.markdown(result)
    assert "x2_same" not in text  # no seed has the arms from the warm-up x2
    assert "| same | oracle_all | 460 | 75.0 ± 3.6 (72.0 to 79.0) | +12.0 ± 3.0 (+9.0 to " \
           "+15.0) | 3/3 |" in text
    assert "same pool met" in text and "at commit abc" in text
    # arms from the warm-up x2 on one seed only: aggregated over that seed, "-" elsewhere
    rows[0]["x2_same"] = {arm: dict(rows[0]["same"][arm], gain=2.0, gain_ci95=[-1.0, 5.0])
                          for arm in bh.ARMS}
    rows[0]["x2_supervised_ap50"] = 70.0
    agg = bh.aggregate(rows, ["same"])
    assert agg["x2_same"]["oracle_all"]["gain"]["n"] == 1 and not agg["x2_same"]["bar_met"]
    assert agg["x2_supervised_ap50"]["mean"] == 70.0
    text = bh.markdown(dict(result, mean_over_seeds=agg, per_seed=rows))
    assert "x2_same pool NOT met" in text and "| x2_same | oracle_all | 460 |" in text
    assert text.count("| - | - |") == 2  # seeds 1 and 2 have no x2 arms


def test_bench_headroom_x2_arms_double_the_warmup_only(tmp_path):
    """The arms continued from the warm-up x2 start where the plateau check's run ends
    (START_ITER = its MAX_ITER, the same LR steps) and continue as long as the others."""
    bh = _bench_headroom()
    import bench_plateau

    from imagescore_det.engine import load_config

    base = load_config(os.path.join(REPO, bh.CONFIG), [])
    x2_run = load_config(os.path.join(REPO, bh.PLATEAU_CONFIG), bench_plateau.overrides(
        str(tmp_path / "x2"), 2, 0, [], bh.PLATEAU_CONFIG))
    cfg = load_config(os.path.join(REPO, bh.CONFIG), bh.arm_overrides(
        0, "same", "oracle_all", str(tmp_path / "a"), bh.x2_overrides()))
    assert cfg.IMAGE_SCORE.START_ITER == x2_run.SOLVER.MAX_ITER == 2 * base.IMAGE_SCORE.START_ITER
    assert list(cfg.SOLVER.STEPS) == list(x2_run.SOLVER.STEPS)
    assert cfg.SOLVER.MAX_ITER - cfg.IMAGE_SCORE.START_ITER == \
        base.SOLVER.MAX_ITER - base.IMAGE_SCORE.START_ITER
    assert cfg.IMAGE_SCORE.PAIRED_BASELINE and cfg.IMAGE_SCORE.TOP_FRACTION == 1.0


def test_bench_headroom_refuses_a_gain_of_the_wrong_sign():
    """The gain is the arm minus its paired supervised copy: a bootstrap of the swapped pair
    (supervised minus arm) or of another baseline is refused, an agreeing one passes."""
    bh = _bench_headroom()
    bh.check_gain(73.57 - 56.85, 16.73, "run")
    bh.check_gain(0.2, -0.3, "run")
    with pytest.raises(RuntimeError, match="disagrees"):
        bh.check_gain(73.57 - 56.85, -16.73, "run")


def test_bench_quality_other_pool_branches_every_variant_with_its_overrides(tmp_path,
                                                                             monkeypatch):
    """--pool NAME KEY VALUE: the base run trains as without it; every variant, the base's own
    selector too, branches from its round checkpoint into seed<s>/pool_NAME/<variant> and
    trains with the pool's overrides after the variant's; without --pool the base's selector
    is not branched and no pool overrides appear."""
    import concurrent.futures

    import imagescore_det.engine.paired as paired

    bq = _bench_quality()
    trained, branched = [], []
    monkeypatch.setattr(bq, "train", lambda out, opts, *a, **k: trained.append((out, opts)))
    monkeypatch.setattr(paired, "branch_from_round", lambda src, dst: branched.append((src, dst)))
    pool_opts = ["IMAGE_SCORE.UNLABELED_DATASETS", '("other_pool",)']
    work = str(tmp_path)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        for f in bq.run_seed(3, ["image_score", "random"], work, 1, [], ex,
                             other_pool=("shifted", pool_opts)):
            f.result()
    base = os.path.join(work, "seed3", "image_score")
    assert trained[0] == (base, ["IMAGE_SCORE.PAIRED_BASELINE", "True"])
    assert branched == [(base, os.path.join(work, "seed3", "pool_shifted", v))
                        for v in ("image_score", "random")]
    assert trained[1:] == [
        (os.path.join(work, "seed3", "pool_shifted", "image_score"),
         pool_opts + ["IMAGE_SCORE.PAIRED_BASELINE", "False"]),
        (os.path.join(work, "seed3", "pool_shifted", "random"),
         ["IMAGE_SCORE.SELECTOR", "random"] + pool_opts + ["IMAGE_SCORE.PAIRED_BASELINE",
                                                            "False"])]
    trained.clear(), branched.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        for f in bq.run_seed(3, ["image_score", "random"], work, 1, [], ex):
            f.result()
    assert branched == [(base, os.path.join(work, "seed3", "random"))]
    assert trained[1] == (os.path.join(work, "seed3", "random"),
                          ["IMAGE_SCORE.SELECTOR", "random", "IMAGE_SCORE.PAIRED_BASELINE",
                           "False"])
    assert bq.variant_dir(work, 3, "oracle", "shifted") == os.path.join(
        work, "seed3", "pool_shifted", "oracle")


def test_bench_quality_pool_argument_needs_a_name_and_pairs():
    bq = _bench_quality()
    for bad in (["shifted", "KEY"], ["no-name", "K", "V"]):
        with pytest.raises(SystemExit):
            bq.main(["--pool", *bad, "--seeds", "0"])


def test_bench_quality_round_from_branches_the_base_run_of_each_seed(tmp_path, monkeypatch):
    """--round-from DIR: each seed's base run is a branch of DIR's round checkpoint ({seed}
    filled in) and resumes from it (no warm-up trained); a source without a round checkpoint
    or with its round at another START_ITER stops before any training, naming the fix."""
    import concurrent.futures

    import imagescore_det.engine.paired as paired
    from imagescore_det.engine import load_config

    bq = _bench_quality()
    from _bench_cli import round_sources

    config = os.path.join("configs", "synthetic", "imagescore_V16tiny_headroom.yaml")
    cfg = load_config(os.path.join(REPO, config), [])
    pattern = str(tmp_path / "src" / "seed{seed}" / "run")
    with pytest.raises(SystemExit, match=r"model_round1.pth or .*config.yaml is missing"):
        round_sources(pattern, [4], cfg)
    source = tmp_path / "src" / "seed4" / "run"
    source.mkdir(parents=True)
    (source / "model_round1.pth").write_bytes(b"weights")
    other = ["IMAGE_SCORE.START_ITER", "2000", "SOLVER.STEPS", "(1500,)",
             "SOLVER.MAX_ITER", "2250"]
    assert cfg.IMAGE_SCORE.START_ITER != 2000
    (source / "config.yaml").write_text(load_config(os.path.join(REPO, config), other).dump())
    with pytest.raises(SystemExit, match=r"round at iteration 2000, this benchmark's config "
                                         rf"starts from iteration {cfg.IMAGE_SCORE.START_ITER}"):
        round_sources(pattern, [4], cfg)
    longer = load_config(os.path.join(REPO, config), other)
    assert round_sources(pattern, [4], longer) == {4: str(source)}
    assert round_sources(None, [4, 5], cfg) == {4: None, 5: None}
    # the teacher-student mode starts where its burn-in ends: the same source serves it
    teacher = load_config(os.path.join(REPO, "configs", "synthetic",
                                       "teacher_V16tiny_headroom.yaml"), [
        "TEACHER.BURN_IN_ITER", "2000", "SOLVER.STEPS", "(1500,)", "SOLVER.MAX_ITER", "2500"])
    assert round_sources(pattern, [4], teacher) == {4: str(source)}

    trained, branched = [], []
    monkeypatch.setattr(bq, "train", lambda out, opts, seed, resume, *a, **k:
                        trained.append((out, resume)))
    monkeypatch.setattr(paired, "branch_from_round", lambda src, dst: branched.append((src, dst)))
    work = str(tmp_path / "work")
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        for f in bq.run_seed(4, ["image_score", "random"], work, 1, [], ex,
                             round_from=str(source)):
            f.result()
    base = os.path.join(work, "seed4", "image_score")
    assert branched == [(str(source), base), (base, os.path.join(work, "seed4", "random"))]
    assert trained == [(base, True), (os.path.join(work, "seed4", "random"), True)]
    trained.clear(), branched.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:  # without it: the warm-up trains
        for f in bq.run_seed(5, ["image_score"], work, 1, [], ex):
            f.result()
    assert branched == [] and trained == [(os.path.join(work, "seed5", "image_score"), False)]


def test_bench_headroom_warmup_x2_starts_from_the_base_runs_checkpoint_before_the_step(
        tmp_path):
    """The plateau check's warm-up x2 shares the base run's iterations before the first LR
    step (the schedules agree there and only there): it gets that checkpoint, named as the
    periodic checkpointer names it, and resumes from it; never twice, never without one."""
    bh = _bench_headroom()
    import bench_plateau

    from imagescore_det.engine import load_config

    work = str(tmp_path)
    own = min(load_config(os.path.join(REPO, bh.PLATEAU_CONFIG)).SOLVER.STEPS)
    assert own != 1500
    for extra, step in (([], own), (["IMAGE_SCORE.START_ITER", "2000", "SOLVER.STEPS",
                                     "(1500,)", "SOLVER.MAX_ITER", "2250"], 1500)):
        seed = step
        warmup, steps, _ = bench_plateau.warmup_schedule(extra, bh.PLATEAU_CONFIG)
        x1 = load_config(os.path.join(REPO, bh.PLATEAU_CONFIG), bench_plateau.overrides(
            work, 1, seed, extra, bh.PLATEAU_CONFIG))
        x2 = load_config(os.path.join(REPO, bh.PLATEAU_CONFIG), bench_plateau.overrides(
            work, 2, seed, extra, bh.PLATEAU_CONFIG))
        assert steps == [step] and min(x1.SOLVER.STEPS) == step < min(x2.SOLVER.STEPS)
        out = os.path.join(work, f"seed{seed}", "warmup_x2")
        assert bh.share_warmup_prefix(seed, work, extra) is None  # no base run yet
        assert not os.path.exists(out)
        base = bh.run_dir(work, seed, "same", "oracle_all")
        os.makedirs(base)
        for it in (step - 251, step - 1, step + 249):
            with open(os.path.join(base, f"model_{it:07d}.pth"), "w") as f:
                f.write(str(it))
        assert bh.share_warmup_prefix(seed, work, extra) == step
        with open(os.path.join(out, "last_checkpoint")) as f:
            name = f.read().strip()
        with open(os.path.join(out, name)) as f:
            assert f.read() == str(step - 1)
        with open(os.path.join(out, bh.SHARED_PREFIX)) as f:
            assert json.load(f)["iterations"] == step
        assert bh.share_warmup_prefix(seed, work, extra) is None  # started: left alone


def test_bench_teacher_other_pool_branches_none_too(tmp_path, monkeypatch):
    """bench_teacher --pool: the base run trains as without it; online none and the other arms
    branch from its burn-in checkpoint into seed<s>/pool_NAME/ with the pool's overrides last;
    supervised stays the base run's paired copy. Without --pool, none is the base run."""
    import concurrent.futures

    import imagescore_det.engine.paired as paired
    from imagescore_det.engine.paired import PAIRED_DIR

    bt = _import("bench_teacher")
    trained, branched = [], []
    monkeypatch.setattr(bt, "train", lambda out, opts, *a, **k: trained.append((out, opts)))
    monkeypatch.setattr(paired, "branch_from_round", lambda src, dst: branched.append((src, dst)))
    pool_opts = ["IMAGE_SCORE.UNLABELED_DATASETS", '("other_pool",)']
    work = str(tmp_path)
    arms = ["supervised", "none", "random"]
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        for f in bt.run_seed(1, arms, work, 1, [], ex, "c.yaml", 0.5, ("shifted", pool_opts)):
            f.result()
    base = os.path.join(work, "seed1", "none")
    other = os.path.join(work, "seed1", "pool_shifted")
    assert trained[0] == (base, bt.BASE_OVERRIDES)
    assert branched == [(base, os.path.join(other, "none")), (base, os.path.join(other, "random"))]
    assert trained[1] == (os.path.join(other, "none"), ["TEACHER.SELECTOR", "none",
                                                        "TEACHER.PAIRED_BASELINE", "False"]
                          + pool_opts)
    assert trained[2] == (os.path.join(other, "random"), [
        "TEACHER.SELECTOR", "random", "TEACHER.TOP_FRACTION", "0.5", "TEACHER.PAIRED_BASELINE",
        "False"] + pool_opts)
    assert bt.arm_dir(work, 1, "supervised", "shifted") == os.path.join(base, PAIRED_DIR)
    assert bt.arm_dir(work, 1, "none", "shifted") == os.path.join(other, "none")
    assert bt.arm_dir(work, 1, "none") == base
    trained.clear(), branched.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        for f in bt.run_seed(1, arms, work, 1, [], ex, "c.yaml", 0.5):
            f.result()
    assert branched == [(base, os.path.join(work, "seed1", "random"))]
    # --round-from: the base run (burn-in) is itself a branch of that run, and resumes
    resumed = []
    monkeypatch.setattr(bt, "train", lambda out, opts, seed, resume, *a, **k:
                        resumed.append((out, resume)))
    branched.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        for f in bt.run_seed(2, arms, work, 1, [], ex, "c.yaml", 0.5, round_from="/src/seed2"):
            f.result()
    base2 = os.path.join(work, "seed2", "none")
    assert branched == [("/src/seed2", base2), (base2, os.path.join(work, "seed2", "random"))]
    assert resumed == [(base2, True), (os.path.join(work, "seed2", "random"), True)]


def test_results_record_the_commit_that_made_them(tmp_path, monkeypatch):
    """git_commit is the checkout's short HEAD, and "unknown" outside a git checkout; the
    bench_quality and bench_teacher Markdown name it beside the command."""
    cli = _import("_bench_cli")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                          capture_output=True).stdout.strip()
    if head:
        assert cli.git_commit() == head
    monkeypatch.setattr(cli, "REPO", str(tmp_path))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert cli.git_commit() == "unknown"
    result = dict(_quality_result(), commit="abc1234")
    assert "Command: `benchmarks/bench_quality.py` at commit abc1234" in \
        _bench_quality().markdown(result)


def test_bench_quality_generates_only_the_synthetic_data_its_config_uses(tmp_path,
                                                                         monkeypatch):
    """The quickstart's config: synthetic_voc; the headroom config: the headroom datasets;
    the real-photo config: nothing (its root holds real photos, only read)."""
    import imagescore_det.data as data

    bq = _bench_quality()
    made = []
    monkeypatch.setattr(data, "generate_synthetic_voc", lambda d, **k: made.append(d))
    monkeypatch.setattr(data, "generate_headroom_datasets", lambda r: made.append(r))
    root = str(tmp_path)
    headroom = os.path.join("configs", "synthetic", "imagescore_V16tiny_headroom.yaml")
    real = os.path.join("configs", "voc07real", "imagescore_V16tiny_real.yaml")
    for config, expected, calls in (
            (bq.CONFIG, ["synthetic_voc"], [os.path.join(root, "synthetic_voc")]),
            (headroom, ["synthetic_headroom"], [root]),
            (real, [], [])):
        made.clear()
        assert bq.generate_datasets_of(bq.check_protocol(config, []), root) == expected
        assert made == calls
    # keep_existing (bench_teacher's: a test's small copy stays): an existing synthetic_voc/ is
    # not regenerated, an absent one is
    made.clear()
    cfg = bq.check_protocol(bq.CONFIG, [])
    assert bq.generate_datasets_of(cfg, root, keep_existing=True) == ["synthetic_voc"]
    assert made == [os.path.join(root, "synthetic_voc")]
    os.makedirs(os.path.join(root, "synthetic_voc"))
    made.clear()
    assert bq.generate_datasets_of(cfg, root, keep_existing=True) == []
    assert made == []


def test_training_benchmarks_take_threads_per_run(monkeypatch):
    """--threads N is every training benchmark's flag and wins; without it the CPU cores are
    shared among --jobs (a run with --jobs 1 on this 2-core machine got 2 OpenMP threads,
    which under load ran 5-10x slower than 1); a count below 1 is refused."""
    import argparse
    import subprocess

    _bench_cli = _import("_bench_cli")

    monkeypatch.setattr(_bench_cli.os, "cpu_count", lambda: 8)
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=2)
    _bench_cli.add_threads_argument(p)
    assert _bench_cli.threads_per_run(p.parse_args(["--jobs", "1", "--threads", "1"])) == 1
    assert _bench_cli.threads_per_run(p.parse_args(["--jobs", "1"])) == 8
    assert _bench_cli.threads_per_run(p.parse_args(["--jobs", "3"])) == 2
    assert _bench_cli.threads_per_run(p.parse_args(["--jobs", "16"])) == 1
    with pytest.raises(SystemExit, match="--threads 0"):
        _bench_cli.threads_per_run(p.parse_args(["--threads", "0"]))
    for name in ("bench_quality", "bench_teacher", "bench_plateau", "bench_headroom"):
        out = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", name + ".py"),
                              "--help"], capture_output=True, text=True, check=True).stdout
        assert "--threads THREADS" in out, name
        with open(os.path.join(REPO, "benchmarks", name + ".py")) as f:
            assert "threads = threads_per_run(args)" in f.read(), name

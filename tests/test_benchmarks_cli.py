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

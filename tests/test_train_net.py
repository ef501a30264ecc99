"""End-to-end: tools/train_net.py as a user runs it (subprocess), on a tiny synthetic dataset
found through $DETECTRON2_DATASETS the way the real synthetic_voc_* datasets are."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_CONFIG, tiny_cfg_opts

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")


def run_train_net(datasets_root, opts, flags=(), cwd=None, timeout=300, config=TINY_CONFIG):
    env = dict(os.environ, DETECTRON2_DATASETS=str(datasets_root),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("IMAGESCORE_VOC07REAL", None)
    # flags go before the KEY VALUE overrides (argparse.REMAINDER takes the rest)
    cmd = [sys.executable, TRAIN_NET, "--config-file", config, *flags, *opts]
    return subprocess.run(cmd, cwd=cwd or str(datasets_root), env=env, capture_output=True,
                          text=True, timeout=timeout)


def opts_for(output_dir, *extra):
    # tiny model and schedule; the synthetic_voc_* names resolve under $DETECTRON2_DATASETS.
    # SCORE_THRESH_TEST 0 keeps every detection, so 4 iterations give a non-zero AP50 to
    # compare between runs.
    return tiny_cfg_opts(output_dir) + [
        "DATASETS.TRAIN", "('synthetic_voc_labeled',)",
        "DATASETS.TEST", "('synthetic_voc_test',)",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", *extra]


def copypaste_ap(output):
    """(AP, AP50, AP75) from Detectron2's 'copypaste:' lines."""
    m = re.search(r"copypaste: AP,AP50,AP75\n.*copypaste: ([\d.]+),([\d.]+),([\d.]+)", output)
    assert m, output[-3000:]
    return tuple(float(x) for x in m.groups())


def training_iterations(metrics_path):
    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["iteration"] for r in rows if "total_loss" in r]


def check(r):
    assert r.returncode == 0, f"exit {r.returncode}\nSTDOUT:\n{r.stdout[-4000:]}\n" \
                              f"STDERR:\n{r.stderr[-4000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny synthetic_voc under <tmp>/synthetic_voc/VOC2007, and one 4-iteration run."""
    from imagescore_det.data import generate_synthetic_voc

    root = tmp_path_factory.mktemp("d2_datasets")
    generate_synthetic_voc(root / "synthetic_voc", seed=5, num_labeled=8, num_unlabeled=2,
                           num_test=6, min_size=80, max_size=96, min_obj_size=30,
                           max_obj_size=48, max_objects=2)
    out = root / "train_out"
    r = run_train_net(root, opts_for(out))
    return {"root": root, "out": out, "log": check(r)}


def test_train_and_evaluate(trained):
    out, log = trained["out"], trained["log"]
    assert re.search(r"VOC AP50 at the end:\s+[\d.]+", log)
    ap, ap50, ap75 = copypaste_ap(log)
    assert 0 <= ap75 <= ap50 <= 100 and 0 <= ap <= 100
    assert ap50 > 0, "the comparisons below need a non-zero AP50 (see opts_for)"
    for f in ("model_final.pth", "metrics.json", "last_checkpoint", "config.yaml",
              "report.json", os.path.join("inference", "voc_per_class_synthetic_voc_test.json")):
        assert (out / f).is_file(), f
    per_class = json.loads((out / "inference" / "voc_per_class_synthetic_voc_test.json").read_text())
    assert per_class["mean"]["AP50"] == pytest.approx(ap50, abs=1e-4)
    assert set(per_class["per_class"]) == {"disc", "square", "triangle", "cross"}
    assert training_iterations(out / "metrics.json")[-1] == 3
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 3
    assert "backbone.conv5_3.weight" in ckpt["model"]
    assert ckpt["model"]["backbone.conv5_3.weight"].shape[0] == 32  # WIDTH_MULT 0.0625
    report = json.loads((out / "report.json").read_text())
    assert report["eval_after"]["bbox"]["AP50"] == pytest.approx(ap50, abs=1e-4)


def test_eval_only_reproduces_ap(trained):
    out2 = trained["root"] / "eval_out"
    weights = str(trained["out"] / "model_final.pth")
    log = check(run_train_net(trained["root"], opts_for(out2, "MODEL.WEIGHTS", weights),
                              flags=["--eval-only"]))
    assert f"Loading from {weights}" in log
    assert copypaste_ap(log) == copypaste_ap(trained["log"])
    a = json.loads((trained["out"] / "inference" / "voc_per_class_synthetic_voc_test.json")
                   .read_text())
    b = json.loads((out2 / "inference" / "voc_per_class_synthetic_voc_test.json").read_text())
    assert a == b  # every class, every threshold
    assert not (out2 / "model_final.pth").exists()  # evaluation only: no training


def test_eval_only_refuses_weights_that_do_not_cover_the_model(trained):
    """Issue 19.6: --eval-only loads strictly. A checkpoint without roi_heads (the box head
    and predictor) used to load with Detectron2's warning and evaluate a random predictor;
    it stops naming the missing keys and the fix, before any evaluation."""
    ckpt = torch.load(trained["out"] / "model_final.pth", map_location="cpu", weights_only=True)
    dropped = sorted(k for k in ckpt["model"] if k.startswith("roi_heads."))
    assert dropped
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if k not in dropped}
    weights = trained["root"] / "no_roi_heads.pth"
    torch.save(ckpt, weights)
    r = run_train_net(trained["root"], opts_for(trained["root"] / "eval_no_roi",
                                                "MODEL.WEIGHTS", str(weights)),
                      flags=["--eval-only"])
    output = r.stdout + r.stderr
    assert r.returncode == 1, output[-3000:]
    assert f"error: Checkpoint {weights} does not fit the model" in output
    missing = re.search(r"missing from the checkpoint: (.*?)(?: \.\.\. \((\d+) in all\))?\n",
                        output)
    assert missing, output[-3000:]
    named = missing.group(1).split(", ")
    assert named and set(named) <= set(dropped)  # the keys it lacks, by name
    assert int(missing.group(2) or len(named)) == len(dropped)
    assert "--config-file" in output  # the fix
    assert "copypaste:" not in output  # nothing was evaluated


def test_eval_only_checks_the_test_set_as_the_evaluator_reads_it(trained, tmp_path):
    """Issue 19.4 for --eval-only: a test annotation Detectron2's VOC evaluator cannot read
    (no <pose>) stops before the model is built, naming the file and the fix; without the
    check the evaluation itself would crash on it (parse_rec's KeyError-style failure)."""
    root = tmp_path / "datasets"
    shutil.copytree(trained["root"] / "synthetic_voc", root / "synthetic_voc")
    voc = root / "synthetic_voc" / "VOC2007"
    first = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    xml = voc / "Annotations" / f"{first}.xml"
    text = xml.read_text()
    assert "<pose>" in text
    xml.write_text(re.sub(r"\s*<pose>[^<]*</pose>", "", text, count=1))
    r = run_train_net(root, opts_for(tmp_path / "eval_out", "MODEL.WEIGHTS",
                                     str(trained["out"] / "model_final.pth")),
                      flags=["--eval-only"])
    output = r.stdout + r.stderr
    assert r.returncode == 1, output[-3000:]
    assert f"{first}.xml" in output and "evaluator_cannot_read" in output, output[-3000:]
    assert "<pose>" in output
    assert "copypaste:" not in output  # nothing was evaluated


def test_resume_continues(trained):
    out3 = trained["root"] / "resume_out"
    shutil.copytree(trained["out"], out3)
    before = training_iterations(out3 / "metrics.json")
    log = check(run_train_net(trained["root"], opts_for(out3, "SOLVER.MAX_ITER", "6"),
                              flags=["--resume"]))
    assert f"Loading from {out3 / 'model_final.pth'}" in log
    assert "Starting training from iteration 4" in log
    after = training_iterations(out3 / "metrics.json")
    assert after[:len(before)] == before and after[-1] == 5
    assert all(b > a for a, b in zip(after, after[1:]))
    ckpt = torch.load(out3 / "model_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 5
    copypaste_ap(log)  # evaluated again at the end


def test_missing_dataset_root(tmp_path):
    nowhere = tmp_path / "no_datasets_here"
    r = run_train_net(nowhere, opts_for(tmp_path / "out"), cwd=str(tmp_path))
    assert r.returncode != 0
    expected_dir = os.path.join(str(nowhere), "synthetic_voc", "VOC2007")
    # the data check before training names the directory, the problem and the fix
    assert f"{expected_dir}: missing_directory: the dataset directory does not exist" in r.stderr
    assert "datasets/prepare_synthetic_voc.py" in r.stderr
    assert "DETECTRON2_DATASETS" in r.stderr
    assert not (tmp_path / "out" / "model_final.pth").exists()

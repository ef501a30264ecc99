"""Process reliability (docs/reliability.md): kills at every phase, one run per OUTPUT_DIR,
foreign and tampered files, training that goes non-finite.

The kill test SIGKILLs a real ``tools/train_net.py`` (``IMAGESCORE_FAULT``, see
``imagescore_det/faults.py``) at each phase in turn, resuming in between, and checks that the
run ends with the selection digest, the round files and the final weights of a run that was
never stopped.
"""
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_CONFIG, tiny_cfg_opts

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
LOCK_PY = os.path.join(REPO, "imagescore_det", "engine", "lock.py")

# the round at iteration 4; checkpoints after iterations 1, 3, 5 and 7 (final)
KILL_OPTS = ["IMAGE_SCORE.ENABLED", "True", "IMAGE_SCORE.UNLABELED_DATASETS",
             "('synthetic_voc_unlabeled',)", "IMAGE_SCORE.START_ITER", "4",
             "IMAGE_SCORE.GRID", "(4, 4)", "IMAGE_SCORE.BOX_SCORE_THRESH", "0.0",
             "IMAGE_SCORE.EVAL_BEFORE", "False", "SOLVER.CHECKPOINT_PERIOD", "2",
             "TEST.EVAL_PERIOD", "0"]


def _opts(out):
    opts = tiny_cfg_opts(out, max_iter=8)
    opts[1], opts[3] = "('synthetic_voc_labeled',)", "()"  # DATASETS.TRAIN, DATASETS.TEST
    return opts + KILL_OPTS


def _command(root, out, flags, fault, opts=()):
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("IMAGESCORE_FAULT", None)
    if fault:
        env["IMAGESCORE_FAULT"] = fault
    return ([sys.executable, TRAIN_NET, "--config-file", TINY_CONFIG, *flags, *_opts(out),
             *opts], env)


def train_net(root, out, *flags, fault=None, timeout=300, opts=()):
    cmd, env = _command(root, out, flags, fault, opts)
    return subprocess.run(cmd, cwd=str(root), env=env, capture_output=True, text=True,
                          timeout=timeout)


def _tail(p):
    return f"exit {p.returncode}\nOUTPUT:\n{(p.stdout + p.stderr)[-4000:]}"


def digests(out):
    with open(os.path.join(out, "log.txt")) as f:
        return re.findall(r"Rank 0 selection digest (\w+)", f.read())


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from imagescore_det.data import generate_synthetic_voc

    root = tmp_path_factory.mktemp("reliability")
    generate_synthetic_voc(str(root / "synthetic_voc"), seed=3, num_labeled=10,
                           num_unlabeled=12, num_test=6, min_size=72, max_size=96,
                           min_obj_size=16, max_obj_size=36, max_objects=3)
    return root


@pytest.fixture(scope="module")
def baseline_run(root):
    """One uninterrupted run: what every interrupted run must end with. It runs in the
    background while the kill test runs (call :func:`finished` for its folder)."""
    out = root / "uninterrupted"
    cmd, env = _command(root, out, (), None)
    log = open(root / "uninterrupted.log", "w+")
    process = subprocess.Popen(cmd, cwd=str(root), env=env, stdout=log, stderr=subprocess.STDOUT)
    yield {"out": out, "process": process, "log": log}
    if process.poll() is None:
        process.kill()
    process.wait()
    log.close()


def finished(run):
    """Wait for the background run; its OUTPUT_DIR once it has ended well."""
    process = run["process"]
    process.wait(timeout=300)
    run["log"].seek(0)
    assert process.returncode == 0, run["log"].read()[-4000:]
    assert not (run["out"] / "imagescore_run.lock").exists()  # released at exit
    return run["out"]


@pytest.fixture(scope="module")
def baseline(baseline_run):
    return finished(baseline_run)


# --------------------------------------------------------------------------- kills
# (fault, what the killed process leaves behind); each step resumes the previous one
KILL_STEPS = [
    ("iter@3", "warm-up: killed after the checkpoint of iteration 1"),
    ("fit_mask@2", "round 1: killed while fitting the mask"),
    ("score@2", "round 1: killed while scoring the pool"),
    ("pseudo_label@1", "round 1: killed while pseudo-labeling"),
    ("replace:pseudo_dataset.json", "round files: scores.csv written, pseudo_dataset.json not"),
    ("replace:selection.json", "round files: all written but the manifest"),
    ("iter@5", "continued training: round files written, next checkpoint not"),
    ("replace:model_0000005.pth", "killed while saving the first checkpoint after the round"),
    ("iter@7", "continued training after that checkpoint"),
]


def _round(out):
    return out / "image_score" / "round_1"


def _last_checkpoint(out):
    return (out / "last_checkpoint").read_text().strip()


def test_killed_at_every_phase_resumes_to_the_same_run(root, baseline_run):
    out = root / "killed"
    manifest_mtime = None
    for step, (fault, what) in enumerate(KILL_STEPS):
        flags = ["--resume"] if step else []
        p = train_net(root, out, *flags, fault=fault)
        assert p.returncode == -signal.SIGKILL, f"step {step} ({what}): {_tail(p)}"
        log = p.stdout + p.stderr
        assert f"IMAGESCORE_FAULT: SIGKILL at {fault.split('@')[0]}" in log
        lock = json.loads((out / "imagescore_run.lock").read_text())
        assert lock["host"] == socket.gethostname()  # the dead run's record stays...
        if step:  # ...and the next run takes it over
            assert "Taking over the stale lock" in log, f"step {step}"
        rd = _round(out)
        files = set(os.listdir(rd)) if rd.is_dir() else set()
        if fault == "iter@3":
            assert _last_checkpoint(out) == "model_0000001.pth" and not files
        if fault in ("fit_mask@2", "score@2", "pseudo_label@1"):
            assert "Starting training from iteration" in log
            assert "selection.json" not in files, f"step {step}: {files}"
        if fault == "score@2":
            assert "Starting training from iteration 4" in log
        if fault == "replace:pseudo_dataset.json":
            assert "scores.csv" in files and "pseudo_dataset.json" not in files
            assert any(re.fullmatch(r"pseudo_dataset\.json\.\w+\.tmp", f) for f in files)
            assert "selection.json" not in files
        if fault == "replace:selection.json":
            assert {"scores.csv", "pseudo_dataset.json", "mask.pt"} <= files
            assert "selection.json" not in files
            # the previous kill's temporary file was removed by this run, unread
            assert not any(f.startswith("pseudo_dataset.json.") for f in files)
        if fault == "iter@5":
            assert "selection.json" in files and _last_checkpoint(out) == "model_0000003.pth"
            manifest_mtime = (rd / "selection.json").stat().st_mtime_ns
        if fault == "replace:model_0000005.pth":
            assert "Selection round 1 found complete on disk; reusing it" in log
            assert _last_checkpoint(out) == "model_0000003.pth"  # not the half-saved one
            assert not (out / "model_0000005.pth").exists()
            assert any(n.startswith("model_0000005.pth.") for n in os.listdir(out))
        if fault == "iter@7":
            assert "Loading from" in log and f"{out}/model_0000003.pth" in log
            assert _last_checkpoint(out) == "model_0000005.pth"
    p = train_net(root, out, "--resume")
    assert p.returncode == 0, _tail(p)
    log = p.stdout + p.stderr
    assert "Starting training from iteration 6" in log
    assert "Resumed after selection round 1: reloading" in log
    assert not (out / "imagescore_run.lock").exists()
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]

    # the same selection as the run that was never stopped, computed or reused
    baseline = finished(baseline_run)
    expected = digests(baseline)
    assert len(expected) == 1
    assert digests(out) and set(digests(out)) == set(expected)
    for name in ("pseudo_dataset.json", "scores.csv"):
        assert read_bytes(_round(out) / name) == read_bytes(_round(baseline) / name), name
    assert (_round(out) / "selection.json").stat().st_mtime_ns == manifest_mtime  # reused
    saved = {k: v for k, v in json.loads((_round(out) / "selection.json").read_text()).items()
             if k != "timing"}
    assert saved == {k: v for k, v in json.loads(
        (_round(baseline) / "selection.json").read_text()).items() if k != "timing"}
    # and, as every resume point replays the same data and random draws, the same weights
    a = torch.load(out / "model_final.pth", weights_only=True)["model"]
    b = torch.load(baseline / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_replay_hook_seeds_each_resume_point_with_its_own_known_seed():
    """The kill test compares two runs that would share a bug in the replay seed; here the
    seed itself: at each resume point the hook seeds every generator with sha256("imagescore-
    replay/<data seed>/<iteration>") (its first 8 bytes, big-endian, mod 2**31 - 2**16) plus
    the rank, computed independently below, and rebuilds the loader; elsewhere nothing."""
    import hashlib
    import random
    from types import SimpleNamespace

    from detectron2.utils.env import seed_all_rng

    from imagescore_det.engine.resume import ReplayHook, derived_seed

    def known(seed, iteration):
        digest = hashlib.sha256(f"imagescore-replay/{seed}/{iteration}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % (2 ** 31 - 2 ** 16)

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    rebuilt = []

    class Inner:
        def reset_data_loader(self, builder):
            rebuilt.append(builder())

    class FakeTrainer:
        _trainer = Inner()

        @classmethod
        def build_train_loader(cls, cfg):
            return "labeled loader"

    cfg = SimpleNamespace(SEED=123, SOLVER=SimpleNamespace(CHECKPOINT_PERIOD=4))
    hook = ReplayHook(FakeTrainer(), cfg, round_iterations=(6,))
    hook.trainer = SimpleNamespace(iter=0, start_iter=1)
    hook.before_train()
    assert hook.state_dict() == {"data_seed": 123}
    seen = {}
    for iteration in range(1, 10):
        hook.trainer.iter = iteration
        seed_all_rng(999)  # whatever state the process is in
        rebuilt.clear()
        hook.before_step()
        got = draws()
        seed_all_rng(999)
        untouched = draws()
        if iteration in (1, 4, 6, 8):  # start, checkpoint period, round
            assert rebuilt == ["labeled loader"], iteration
            assert derived_seed(123, iteration) == known(123, iteration)
            seed_all_rng(known(123, iteration))
            assert got == draws() != untouched, iteration
            seen[iteration] = got
        else:
            assert rebuilt == [] and got == untouched, iteration
    assert len(set(seen.values())) == 4  # every resume point its own stream
    assert known(123, 4) != known(123, 8) and known(123, 4) != known(124, 4)


# --------------------------------------------------------------------------- the lock
def _standalone_lock_holder(directory):
    """A process holding the lock of ``directory`` (lock.py alone: no torch import)."""
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('lock', {LOCK_PY!r})\n"
            "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)\n"
            f"lock.acquire_output_dir({str(directory)!r})\n"
            "print('held', flush=True); sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_second_run_refuses_while_the_first_holds_the_output_dir(tmp_path, caplog):
    from imagescore_det.engine.lock import (LOCK_FILE, OutputDirLockedError, acquire_output_dir,
                                            release_output_dir)

    out = tmp_path / "out"
    holder = _standalone_lock_holder(out)
    path = out / LOCK_FILE
    try:
        with pytest.raises(OutputDirLockedError) as e:
            acquire_output_dir(out)
        message = str(e.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert str(path) in message and "another OUTPUT_DIR" in message
        assert json.loads(path.read_text())["pid"] == holder.pid  # untouched
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the kernel drops the flock
        holder.wait()
    # a stale lock (same host, process gone) is taken over with a warning
    assert json.loads(path.read_text())["pid"] == holder.pid
    with caplog.at_level("WARNING", logger="imagescore_det.engine.lock"):
        acquire_output_dir(out)
    assert f"Taking over the stale lock {path} of pid {holder.pid}" in caplog.text
    assert json.loads(path.read_text())["pid"] == os.getpid()
    acquire_output_dir(out)  # re-entrant within one process
    release_output_dir(out)
    assert path.exists()
    release_output_dir(out)
    assert not path.exists()  # the last release removes it


def test_train_net_refuses_an_output_dir_in_use(root, tmp_path):
    from imagescore_det.engine.lock import LOCK_FILE

    out = tmp_path / "busy"
    holder = _standalone_lock_holder(out)
    try:
        p = train_net(root, out)
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode == 1, _tail(p)
    assert (f"error: OUTPUT_DIR {out} is in use by pid {holder.pid} on host "
            f"{socket.gethostname()}") in p.stderr
    assert str(out / LOCK_FILE) in p.stderr
    assert not (out / "config.yaml").exists()  # refused before default_setup wrote anything


def test_lock_records_that_cannot_be_checked_are_refused(tmp_path, caplog):
    from imagescore_det.engine.lock import (LOCK_FILE, OutputDirLockedError, acquire_output_dir,
                                            release_output_dir)

    out = tmp_path / "other_host"
    out.mkdir()
    path = out / LOCK_FILE
    path.write_text(json.dumps({"pid": 4242, "host": "gpu-node-17", "started": "yesterday"}))
    with pytest.raises(OutputDirLockedError, match=r"pid 4242 on host gpu-node-17.*another host"
                                                   r".*delete .*imagescore_run\.lock"):
        acquire_output_dir(out)
    # a pid that exists but is another process now (its start time differs): stale
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                "start_time": 1}))
    with caplog.at_level("WARNING", logger="imagescore_det.engine.lock"):
        acquire_output_dir(out)
    assert "Taking over the stale lock" in caplog.text
    release_output_dir(out)
    path.write_text("garbage")  # not a lock record, and nobody holds it
    acquire_output_dir(out)
    release_output_dir(out)


def test_without_flock_the_pid_and_its_start_time_decide(tmp_path, caplog, monkeypatch):
    """On a filesystem without flock (some network mounts) only the recorded pid and its
    start time can tell a live holder from a stale lock; with flock the kernel decides
    first, so the tests above never reach this check."""
    from imagescore_det.engine import lock
    from imagescore_det.engine.lock import LOCK_FILE, OutputDirLockedError, acquire_output_dir

    monkeypatch.setattr(lock, "_try_flock", lambda fd: None)
    out = tmp_path / "no_flock"
    out.mkdir()
    path = out / LOCK_FILE
    here, parent = socket.gethostname(), os.getppid()
    started = lock._start_time(parent)
    assert started is not None  # Linux /proc

    def take(record):
        path.write_text(json.dumps(record))
        caplog.clear()
        with caplog.at_level("WARNING", logger="imagescore_det.engine.lock"):
            acquire_output_dir(out)
        lock.release_output_dir(out)
        return caplog.text

    # the holder runs (a live pid with its own start time): refused, the file untouched
    live = {"pid": parent, "host": here, "start_time": started}
    path.write_text(json.dumps(live))
    with pytest.raises(OutputDirLockedError, match=rf"is in use by pid {parent} on host .*If "
                                                   r"that process is not a training run"):
        acquire_output_dir(out)
    assert json.loads(path.read_text()) == live
    # the pid was reused by another process (another start time): stale, taken over
    assert "Taking over the stale lock" in take(dict(live, start_time=started + 1))
    # the pid is gone: stale
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert "Taking over the stale lock" in take({"pid": gone.pid, "host": here})
    # not a lock record, and nothing can tell whether a run holds it: refused
    path.write_text("garbage")
    with pytest.raises(OutputDirLockedError, match="cannot tell whether a run holds it"):
        acquire_output_dir(out)


# --------------------------------------------------------------------------- round files
@pytest.fixture
def round_copy(baseline, tmp_path):
    """A copy of the uninterrupted run's round 1 folder to tamper with."""
    rd = tmp_path / "image_score" / "round_1"
    shutil.copytree(_round(baseline), rd)
    return rd


def _read_round(rd):
    """What the hook does on resume (rank 0): the manifest, then the pseudo dataset."""
    from imagescore_det.engine import round_files

    manifest = round_files.read_manifest(str(rd))
    return round_files.read_pseudo_dicts(str(rd), manifest)


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


PSEUDO_EDITS = [
    ("a box with 3 numbers", lambda d: d[0]["annotations"][0]["bbox"].pop(),
     r"dataset_dicts\[0\] \(.*\.jpg\) annotation 0: bbox \[.*\] has 3 numbers, expected 4"),
    ("a category id out of range", lambda d: d[0]["annotations"][0].update(category_id=4),
     r"annotation 0: category_id 4 is not a class index \[0, 4\)"),
    ("a missing file_name", lambda d: d[1].pop("file_name"),
     r"dataset_dicts\[1\] has no 'file_name'"),
    ("a box turned inside out", lambda d: d[0]["annotations"][0].update(bbox=[50, 5, 10, 20]),
     r"bbox \[50, 5, 10, 20\] is not a box inside the image \(x1 <= x2"),
    ("a box mode that does not exist", lambda d: d[0]["annotations"][0].update(bbox_mode=9),
     r"bbox_mode 9 is not a Detectron2 BoxMode"),
    ("a text height", lambda d: d[2].update(height="96"), r"'height' is '96', expected"),
    ("a NaN coordinate", lambda d: d[0]["annotations"][1]["bbox"].__setitem__(0, float("nan")),
     r"holds something other than finite numbers"),
    ("a score above 1", lambda d: d[0]["annotations"][0].update(score=3.0), r"score 3.0 is not"),
    ("annotations that are not a list", lambda d: d[0].update(annotations={}),
     r"'annotations' is dict, expected a list"),
]


@pytest.mark.parametrize("what,edit,message", PSEUDO_EDITS, ids=[e[0] for e in PSEUDO_EDITS])
def test_tampered_pseudo_dataset_is_refused(round_copy, what, edit, message):
    from imagescore_det.data.pseudo_check import PseudoDatasetError

    path = round_copy / "pseudo_dataset.json"
    _edit_json(path, lambda data: edit(data["dataset_dicts"]))
    with pytest.raises(PseudoDatasetError, match=message) as e:
        _read_round(round_copy)
    assert str(path) in str(e.value) and "Delete its round folder" in str(e.value)


def test_pseudo_dataset_from_another_round_or_truncated_is_refused(round_copy):
    from imagescore_det.data.pseudo_check import PseudoDatasetError
    from imagescore_det.engine.round_files import RoundError

    assert len(_read_round(round_copy)) > 1  # the untouched copy reads
    path = round_copy / "pseudo_dataset.json"
    original = path.read_text()
    _edit_json(path, lambda data: data["dataset_dicts"].pop())  # a valid file, one image less
    with pytest.raises(RoundError, match=r"has \d+ images and \d+ boxes, but selection.json "
                                         r"says .* Delete .*round_1"):
        _read_round(round_copy)
    path.write_text(original[: len(original) // 2])  # truncated
    with pytest.raises(PseudoDatasetError, match=r"Cannot read the pseudo-label dataset .*"
                                                 r"Delete its round folder"):
        _read_round(round_copy)


MANIFEST_EDITS = [
    ("points at another file", lambda m: m.update(pseudo_dataset="../../../etc/passwd"),
     r"'pseudo_dataset' is '../../../etc/passwd'; a round's file is always pseudo_dataset.json"),
    ("a count as text", lambda m: m.update(num_pseudo_images="7"),
     r"'num_pseudo_images' is '7', expected a non-negative integer"),
    ("an unknown key", lambda m: m.update(injected=1), r"unknown keys \['injected'\]"),
    ("another version", lambda m: m.update(format_version=3), r"has round format 3"),
    ("box count edited", lambda m: m.update(num_pseudo_boxes=m["num_pseudo_boxes"] + 1),
     r"selection.json says"),
]


@pytest.mark.parametrize("what,edit,message", MANIFEST_EDITS, ids=[e[0] for e in MANIFEST_EDITS])
def test_tampered_manifest_is_refused(round_copy, what, edit, message):
    from imagescore_det.engine.round_files import RoundError

    _edit_json(round_copy / "selection.json", edit)
    with pytest.raises(RoundError, match=message) as e:
        _read_round(round_copy)
    assert "round_1" in str(e.value) and "Delete" in str(e.value).replace("delete", "Delete")


def test_manifest_copied_from_another_round_is_refused(round_copy):
    from imagescore_det.engine.round_files import RoundError

    other = round_copy.parent / "round_2"
    shutil.copytree(round_copy, other)
    with pytest.raises(RoundError, match=r"describes round 1, but its folder is round 2: .*"
                                         r"Delete .*round_2"):
        _read_round(other)


# --------------------------------------------------------------------------- mask.pt
@pytest.fixture(scope="module")
def tiny_model(tiny_voc, tmp_path_factory):
    """The kill runs' model (the same MODEL.* settings), built in this process."""
    from imagescore_det.engine import Trainer, load_config

    cfg = load_config(TINY_CONFIG, tiny_cfg_opts(tmp_path_factory.mktemp("m"), 8))
    return cfg, Trainer.build_model(cfg)


def _tamper_mask(src, dst, edit):
    state = torch.load(src, weights_only=True)
    edit(state)
    torch.save(state, dst)


MASK_EDITS = [
    ("a mask of another shape", lambda s: s["masks"].__setitem__(0, s["masks"][0][..., :2]),
     r"the mask of layer 'conv1_1' is \(1, 4, 4, 2\), expected shape \(1, 4, 4, 4\)"),
    ("thresholds of another shape", lambda s: s.update(thresholds=s["thresholds"][:, :3]),
     r"'thresholds' must be a float tensor of shape \(1, 13\)"),
    ("a missing key", lambda s: s.pop("class_counts"), r"keys \['class_counts'\] are missing"),
    ("an infinite threshold", lambda s: s["thresholds"].__setitem__((0, 0), float("inf")),
     r"'thresholds' hold infinite values"),
    ("mask values other than 0/1", lambda s: s["masks"].__setitem__(0, s["masks"][0].float() * 3),
     r"holds values other than 0 and 1"),
    ("another similarity", lambda s: s.update(similarity="cosine"), r"'similarity' is 'cosine'"),
    ("another format version", lambda s: s.update(version=2), r"has format version 2"),
]


@pytest.mark.parametrize("what,edit,message", MASK_EDITS, ids=[e[0] for e in MASK_EDITS])
def test_tampered_mask_is_refused(baseline, tiny_model, tmp_path, what, edit, message):
    from imagescore_det.scoring import ImageScorer

    model = tiny_model[1]
    src = _round(baseline) / "mask.pt"
    ImageScorer.load(str(src), model.backbone)  # the untouched mask loads
    path = tmp_path / "mask.pt"
    _tamper_mask(src, path, edit)
    with pytest.raises(ValueError, match=message) as e:
        ImageScorer.load(str(path), model.backbone)
    assert str(path) in str(e.value)


def test_truncated_or_foreign_mask_is_refused(baseline, tiny_model, tmp_path):
    from imagescore_det.scoring import ImageScorer

    model = tiny_model[1]
    data = read_bytes(_round(baseline) / "mask.pt")
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"half.pt.*truncated.*Delete it and fit"):
        ImageScorer.load(str(tmp_path / "half.pt"), model.backbone)
    with pytest.raises(ValueError, match=r"is not a file written by ImageScorer.save"):
        ImageScorer.load(str(baseline / "model_0000001.pth"), model.backbone)


# --------------------------------------------------------------------------- checkpoints
class _Payload:
    """A pickle that runs code when loaded (what weights-only loading must refuse)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _resume_dir(baseline, tmp_path, name="model_0000003.pth", edit=None, raw=None):
    """An OUTPUT_DIR whose last_checkpoint names ``name``, a (tampered) copy of a real one."""
    out = tmp_path / "resume"
    out.mkdir(exist_ok=True)
    shutil.copy(baseline / "model_0000001.pth", out / "model_0000001.pth")
    if raw is not None:
        (out / name).write_bytes(raw)
    else:
        ckpt = torch.load(baseline / "model_0000003.pth", weights_only=True)
        if edit:
            edit(ckpt)
        torch.save(ckpt, out / name)
    (out / "last_checkpoint").write_text(name)
    return out


def _resume(model, out):
    from imagescore_det.engine import CheckedCheckpointer

    return CheckedCheckpointer(model, str(out)).resume_or_load("", resume=True)


def _nan(ckpt):
    ckpt["model"]["backbone.conv1_1.weight"][0, 0, 0, 0] = float("nan")


CHECKPOINT_EDITS = [
    ("a tensor replaced by a list", lambda c: c["model"].update({"roi_heads.box_predictor."
                                                                 "cls_score.bias": [0.0] * 5}),
     r"model entry 'roi_heads.box_predictor.cls_score.bias' is a list, not a tensor"),
    ("a NaN weight", _nan, r"tensor 'backbone.conv1_1.weight' holds NaN or infinite values"),
    ("another format version", lambda c: c.update(imagescore_checkpoint_format=2),
     r"imagescore_checkpoint_format 2; this version of imagescore-det writes and resumes 1"),
    ("a text iteration", lambda c: c.update(iteration="3"), r"iteration '3', not an iteration"),
    ("no model", lambda c: c.pop("model"), r"model entry 'trainer' is a dict, not a tensor"),
]


@pytest.mark.parametrize("what,edit,message", CHECKPOINT_EDITS,
                         ids=[e[0] for e in CHECKPOINT_EDITS])
def test_tampered_checkpoint_is_refused_on_resume(baseline, tiny_model, tmp_path, what, edit,
                                                  message):
    from imagescore_det.engine.safe_load import CheckpointFileError

    out = _resume_dir(baseline, tmp_path, edit=edit)
    with pytest.raises(CheckpointFileError, match=message) as e:
        _resume(tiny_model[1], out)
    assert str(out / "model_0000003.pth") in str(e.value)
    # the fix: which file to delete and where to resume from instead
    assert "write the previous checkpoint's name (model_0000001.pth)" in str(e.value)


def test_truncated_checkpoint_is_refused_and_the_previous_one_named(baseline, tiny_model,
                                                                    tmp_path):
    from imagescore_det.engine.safe_load import CheckpointFileError

    data = read_bytes(baseline / "model_0000003.pth")
    out = _resume_dir(baseline, tmp_path, raw=data[: len(data) // 3])
    with pytest.raises(CheckpointFileError, match=r"model_0000003.pth cannot be read .*truncated"
                                                  r".*Delete .*model_0000003.pth and write the "
                                                  r"previous checkpoint's name"):
        _resume(tiny_model[1], out)
    # following the fix resumes from the previous checkpoint
    (out / "model_0000003.pth").unlink()
    (out / "last_checkpoint").write_text("model_0000001.pth")
    assert _resume(tiny_model[1], out)["iteration"] == 1


def test_checkpoint_of_another_model_is_refused_on_resume(baseline, tiny_voc, tmp_path):
    from imagescore_det.engine import CheckpointMismatchError, Trainer, load_config

    cfg = load_config(TINY_CONFIG, tiny_cfg_opts(tmp_path / "o", 8)
                      + ["MODEL.ROI_BOX_HEAD.FC_DIM", "48"])
    out = _resume_dir(baseline, tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)--resume: checkpoint .*model_0000003.pth"
                                                      r" .*another model.*roi_heads.box_head.fc6"
                                                      r".*new OUTPUT_DIR"):
        _resume(Trainer.build_model(cfg), out)


def test_checkpoint_with_code_is_not_unpickled(baseline, tiny_model, tmp_path):
    from imagescore_det.engine.safe_load import CheckpointFileError

    marker = tmp_path / "code_ran"
    ckpt = torch.load(baseline / "model_0000003.pth", weights_only=True)
    ckpt["extra"] = _Payload(marker)
    out = _resume_dir(baseline, tmp_path, raw=b"")
    torch.save(ckpt, out / "model_0000003.pth")
    with pytest.raises(CheckpointFileError, match=r"holds Python objects other than tensors"):
        _resume(tiny_model[1], out)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../uninterrupted/model_0000003.pth", "weights.pkl",
                                  "model_0000009.pth", ""])
def test_last_checkpoint_naming_another_file_is_refused(baseline, tiny_model, tmp_path, name):
    from imagescore_det.engine.safe_load import CheckpointFileError

    out = _resume_dir(baseline, tmp_path)
    (out / "weights.pkl").write_bytes(pickle.dumps({"model": {}}))
    (out / "last_checkpoint").write_text(name)
    with pytest.raises(CheckpointFileError, match=r"last_checkpoint names .*(not a \.pth "
                                                  r"checkpoint file in|does not exist).*"
                                                  r"(model_0000001.pth|model_0000003.pth)"):
        _resume(tiny_model[1], out)


@pytest.mark.parametrize("escape", ["../other/model_0000003.pth", "{abs}"])
def test_last_checkpoint_naming_an_existing_file_elsewhere_is_refused(tmp_path, escape):
    """Only the path guard can refuse here: the named file exists, is a .pth file, and the
    OUTPUT_DIR has checkpoints of its own."""
    from imagescore_det.engine.safe_load import CheckpointFileError, resume_path

    out, other = tmp_path / "out", tmp_path / "other"
    out.mkdir()
    other.mkdir()
    torch.save({"model": {}}, other / "model_0000003.pth")
    torch.save({"model": {}}, out / "model_0000001.pth")
    name = escape.format(abs=other / "model_0000003.pth")
    assert os.path.isfile(os.path.join(out, name))
    (out / "last_checkpoint").write_text(name)
    with pytest.raises(CheckpointFileError, match=r"names .*which is not a \.pth checkpoint "
                                                  r"file in .*model_0000001.pth"):
        resume_path(str(out))
    (out / "last_checkpoint").write_text("model_0000001.pth")  # the guard lets its own through
    assert resume_path(str(out)) == str(out / "model_0000001.pth")


def test_pkl_weights_load_arrays_only_and_only_when_named(tiny_model, tmp_path):
    from imagescore_det.engine import CheckedCheckpointer
    from imagescore_det.engine.safe_load import CheckpointFileError

    model = tiny_model[1]
    arrays = {k: v.numpy() for k, v in model.state_dict().items() if k.startswith("backbone.")}
    good = tmp_path / "backbone.pkl"
    good.write_bytes(pickle.dumps({"model": arrays, "__author__": "test",
                                   "matching_heuristics": False}, protocol=2))
    CheckedCheckpointer(model, str(tmp_path)).resume_or_load(str(good), resume=False)
    marker = tmp_path / "code_ran"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"model": arrays, "__author__": _Payload(marker)}))
    with pytest.raises(CheckpointFileError, match=r"evil.pkl was refused: global "
                                                  r"'(posix|os)\.system' is not allowed"):
        CheckedCheckpointer(model, str(tmp_path)).resume_or_load(str(bad), resume=False)
    assert not marker.exists()


# --------------------------------------------------------------------------- non-finite
def test_nan_loss_names_iteration_losses_checkpoint_and_round(tiny_cfg):
    from test_selection import SELECT_OPTS

    from imagescore_det.engine import Trainer
    from imagescore_det.engine.lock import LOCK_FILE
    from imagescore_det.engine.nonfinite import NonFiniteLossError

    cfg = tiny_cfg(*SELECT_OPTS, "SOLVER.CHECKPOINT_PERIOD", "2", max_iter=6)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    model, forward = trainer.model, trainer.model.forward

    def poisoned(batched_inputs):
        losses = forward(batched_inputs)
        if trainer.iter == 4:
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return losses

    model.forward = poisoned
    with pytest.raises(NonFiniteLossError) as e:
        trainer.train()
    message = str(e.value)
    assert "Training stopped at iteration 4: the loss became infinite or NaN" in message
    assert re.search(r"loss terms: .*loss_cls=nan.*loss_box_reg=[\d.]+.*\(non-finite: loss_cls\)",
                     message), message
    assert f"last good checkpoint: {os.path.join(cfg.OUTPUT_DIR, 'model_0000003.pth')}" in message
    assert "pseudo-label round 1 at iteration 2 (tiny_voc_unlabeled_pseudo_r1" in message
    assert os.path.join(cfg.OUTPUT_DIR, "image_score", "round_1") in message
    assert "Lower SOLVER.BASE_LR" in message and "--resume" in message
    assert not os.path.exists(os.path.join(cfg.OUTPUT_DIR, LOCK_FILE))  # released


def test_nan_message_before_any_checkpoint_or_round():
    from imagescore_det.engine.nonfinite import non_finite_error

    d2 = FloatingPointError("Loss became infinite or NaN at iteration=0!\nloss_dict = "
                            "{'loss_cls': np.float64(inf), 'loss_rpn_loc': np.float64(0.25)}")
    message = str(non_finite_error(0, d2, "/nowhere"))
    assert "iteration 0" in message and "loss_cls=inf, loss_rpn_loc=0.25" in message
    assert "no checkpoint in /nowhere yet: the run must start over" in message
    assert "round" not in message and message.endswith("start again.")


def test_unreadable_eval_before_is_refused_with_the_fix(tiny_cfg):
    from test_selection import SELECT_OPTS

    from imagescore_det.engine import ImageScoreHook
    from imagescore_det.engine.round_files import RoundError

    cfg = tiny_cfg(*SELECT_OPTS)
    hook = ImageScoreHook(cfg, build_train_loader=None)
    path = os.path.join(cfg.OUTPUT_DIR, "image_score", "eval_before.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('{"bbox": {"AP50": 3')  # cut short
    with pytest.raises(RoundError, match=r"Cannot read the evaluation before round 1 .*"
                                         r"eval_before.json.*Delete .*eval_before.json"):
        hook._read_eval_before()


def test_fault_spec():
    from imagescore_det import faults

    assert faults._parse("iter@12") == ("iter", 12) and faults._parse("score") == ("score", None)
    assert faults._parse("replace:model_0000005.pth") == ("replace:model_0000005.pth", None)
    for bad in ("@3", "iter@x"):
        with pytest.raises(ValueError, match="IMAGESCORE_FAULT"):
            faults._parse(bad)
    previous = faults.configure("score@2")
    try:
        faults.fault_point("fit mask")  # another point: nothing happens
        faults.fault_point("score")  # the first hit of score@2: nothing happens
    finally:
        faults.configure(previous)


# ------------------------------------------------------ SEED -1: the drawn seed is recorded
def _subsample_digests(log):
    return re.findall(r"labeled images \(seed (\d+)\): subsample digest (\w+)", log)


def test_seed_minus_1_run_killed_while_fitting_resumes_with_its_seed(root):
    """Issue 19.2. ``SEED -1``, the fit subsample active (5 of 10 labeled images): a run
    killed while fitting the mask resumes with the seed it drew (kept in its checkpoint), so
    it fits the same subsample, and the round recomputed once more from that checkpoint
    makes the same selection."""
    from imagescore_det.data import SYNTHETIC_CLASSES
    from imagescore_det.data.voc import load_voc_dicts
    from imagescore_det.engine.selection import fit_subsample, subsample_digest

    out = root / "seed_minus_1"
    opts = ("SEED", "-1", "IMAGE_SCORE.FIT_MAX_IMAGES", "5")
    p = train_net(root, out, fault="fit_mask@2", opts=opts)
    assert p.returncode == -signal.SIGKILL, _tail(p)
    killed = _subsample_digests(p.stdout + p.stderr)
    assert len(killed) == 1, _tail(p)
    checkpoint = torch.load(out / "model_0000003.pth", weights_only=True)
    seed = checkpoint["trainer"]["hooks"]["ImageScoreHook"]["run_seed"]
    # known answer: the subsample of the recorded seed, from the labeled set itself
    labeled = load_voc_dicts(str(root / "synthetic_voc" / "VOC2007"), "labeled",
                             SYNTHETIC_CLASSES)
    expected = (str(seed), subsample_digest(fit_subsample(labeled, 5, seed)))
    assert killed == [expected]

    p = train_net(root, out, "--resume", opts=opts)
    assert p.returncode == 0, _tail(p)
    assert "Starting training from iteration 4" in p.stdout + p.stderr
    assert _subsample_digests(p.stdout + p.stderr) == [expected]
    manifest = json.loads((_round(out) / "selection.json").read_text())
    assert manifest["seed"] == seed
    first = digests(out)
    assert len(first) == 1

    # once more from the checkpoint before the round: the same subsample, the same selection
    shutil.rmtree(_round(out))
    for name in os.listdir(out):
        if name.startswith("model_") and name != "model_0000003.pth":
            os.remove(out / name)
    (out / "last_checkpoint").write_text("model_0000003.pth")
    p = train_net(root, out, "--resume", opts=opts)
    assert p.returncode == 0, _tail(p)
    assert _subsample_digests(p.stdout + p.stderr) == [expected]
    assert digests(out) == first * 2

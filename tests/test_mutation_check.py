"""tools/mutation_check.py: its catalogue still applies to the tree, and it reports a catch.

The catalogue names exact code snippets of files that are being refactored; these tests
fail as soon as one of them no longer occurs exactly once (update the entry in
tools/mutation_check.py), so the mutation check cannot rot silently.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def _load():
    spec = importlib.util.spec_from_file_location(
        "_mutation_check", os.path.join(REPO, "tools", "mutation_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mc = _load()


@pytest.mark.parametrize("m", mc.CATALOGUE, ids=[m.id for m in mc.CATALOGUE])
def test_catalogue_entry_applies(m):
    assert m.new != m.old, f"{m.id}: the mutation changes nothing"
    assert mc.snippet_problem(m) is None, mc.snippet_problem(m)
    assert m.tests, f"{m.id}: no test is listed to catch it"
    assert mc.test_ids_problem(m) is None, mc.test_ids_problem(m)
    assert not any("test_mutation_check" in t for t in m.tests)


def test_catalogue_ids_unique_and_apply_replaces_exactly_the_snippet(tmp_path):
    ids = [m.id for m in mc.CATALOGUE]
    assert len(ids) == len(set(ids))
    for m in mc.CATALOGUE:
        src = os.path.join(REPO, m.file)
        dst = tmp_path / m.id / m.file
        dst.parent.mkdir(parents=True)
        text = open(src, encoding="utf-8").read()
        dst.write_text(text, encoding="utf-8")
        mc.apply(m, str(tmp_path / m.id))
        assert dst.read_text(encoding="utf-8") == text.replace(m.old, m.new)


def test_moved_target_is_a_failure_with_a_clear_message():
    moved = mc.Mutation(id="moved", description="x", file="imagescore_det/data/pseudo.py",
                        old="no such code anywhere", new="y", tests=("tests/test_data.py",))
    args = mc.parse_args(["--no-baseline"])
    res = mc.check_mutation(moved, args, files=[])
    assert res["status"] == "target moved" and not res["caught"]
    assert res["message"].startswith("target moved: update the catalogue")
    gone = mc.Mutation(id="gone", description="x", file="imagescore_det/nope.py", old="a",
                       new="b", tests=("tests/test_data.py",))
    assert "does not exist" in mc.snippet_problem(gone)
    bad_test = mc.Mutation(id="t", description="x", file="imagescore_det/data/pseudo.py",
                           old="if len(anns) < min_boxes:", new="if False:",
                           tests=("tests/test_known_answers.py::test_not_there",))
    assert "has no test test_not_there" in mc.test_ids_problem(bad_test)


def test_end_to_end_threshold_mutation_is_caught(tmp_path):
    """A real run: mutation (a) on a copy of the tree, its known-answer test must fail."""
    out = tmp_path / "mc.json"
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "mutation_check.py"),
                        "--only", "pseudo-thresh", "--no-baseline", "--output", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["summary"] == {"total": 1, "caught": 1, "not_caught": 0, "not_caught_ids": []}
    (res,) = report["mutations"]
    assert res["id"] == "pseudo-thresh" and res["status"] == "caught"
    failed = res["failed_tests"]
    assert failed and all(
        t.startswith("tests/test_known_answers.py::test_predictions_to_dicts_applies_box_score_"
                     "thresh[") for t in failed), failed
    # thresh 0.0 keeps every box anyway: that case passes, the others fail
    assert len(failed) == 3 and len(res["passed_tests"]) == 1
    assert "pseudo-thresh" in p.stdout and "caught" in p.stdout
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]

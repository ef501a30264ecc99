"""imagescore_det.scoring imports, fits, scores and saves without Detectron2 or OpenCV."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("detectron2", "cv2", "fvcore", "matplotlib")

# Run in a fresh interpreter: a finder placed first on sys.meta_path refuses the blocked
# packages (and their submodules), as if they were not installed, and records every try.
SCRIPT = r"""
import importlib
import importlib.abc
import os
import pkgutil
import sys
import tempfile

repo, blocked = sys.argv[1], set(sys.argv[2:])
tried = []


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in blocked:
            tried.append(fullname)
            raise ImportError(f"{fullname} is blocked by test_scoring_import")
        return None


preloaded = sorted(name for name in sys.modules if name.partition(".")[0] in blocked)
assert not preloaded, f"already imported at interpreter start: {preloaded}"
sys.meta_path.insert(0, Refuse())

import torch
from torch import nn

import imagescore_det.scoring as scoring
from imagescore_det.scoring import ImageBatch, ImageScorer

where = os.path.dirname(os.path.abspath(scoring.__file__))
assert where == os.path.join(repo, "imagescore_det", "scoring"), f"imported from {where}"
for module in pkgutil.iter_modules(scoring.__path__):  # modules __init__ does not import too
    importlib.import_module(f"imagescore_det.scoring.{module.name}")

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                      nn.Linear(4 * 8 * 8, 5), nn.ReLU())
images = torch.randn(4, 3, 8, 8)
batches = [ImageBatch(images, valid_sizes=[(8, 8), (5, 7), (3, 3), (8, 2)])]
scorer = ImageScorer(model, grid=(2, 2)).fit(batches)
scores = scorer.score(batches)
assert scores.shape == (4,) and bool((scores <= 0).all()), scores
with tempfile.TemporaryDirectory() as tmp:
    scorer.save(os.path.join(tmp, "scorer.pt"))
    loaded = ImageScorer.load(os.path.join(tmp, "scorer.pt"), model)
assert torch.equal(loaded.score(batches), scores)

loaded_blocked = sorted(name for name in sys.modules if name.partition(".")[0] in blocked)
assert not loaded_blocked, f"imported: {loaded_blocked}"
assert not tried, f"tried to import: {tried}"
print("ok", where)
"""


def test_scoring_imports_and_runs_without_detectron2_or_opencv():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", SCRIPT, REPO, *BLOCKED], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stdout.startswith("ok "), proc.stdout

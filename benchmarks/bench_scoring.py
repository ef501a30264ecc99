#!/usr/bin/env python
"""Benchmark ImageScorer.score against a plain ``model(batch)`` pass, and its peak memory.

Model: VGG16 conv body (py-faster-rcnn layout, 13 conv+ReLU, no pool5), random weights,
every ReLU hooked (13 layers). Two scenarios, each timed in this process, interleaving
plain and score passes over the same pre-built batches (``--repeats`` times each):

* ``uniform``: equal-size tensors, ``grid=None`` (fully vectorized path);
* ``padded``: ``ImageBatch`` with per-image valid sizes in [0.6, 1] x the input size and
  ``grid=(16, 16)`` (crop + adaptive pooling, grouped by crop size).

Memory: for N and ``--mem-scale`` x N images, a fresh subprocess streams lazily generated
batches through a plain pass or through ``score`` (scorer fitted here, saved, loaded in the
child) and reports the peak resident set size of the process *during that pass* (Linux
VmHWM after resetting it via /proc/self/clear_refs just before the pass; falls back to
ru_maxrss, the peak since process start, where that is unavailable). Flat means the score
pass's peak does not grow with the number of images.

Inputs: random tensors by default. ``--root`` (a VOC-layout root) uses its photos instead:
the ``labeled`` split's to fit, the ``unlabeled`` split's to score and for memory, each
resized so that its longer side is ``--size`` (``padded``: the aspect ratio kept, the valid
size is the photo's; ``uniform``: stretched to a square), ImageNet-normalized.

``--seeds``: one measurement (both scenarios and memory) per seed; seed s draws the random
weights (torch seed s) and the scored and fit inputs (streams 2s+1 and 2s+2: random tensors
and valid sizes, or with ``--root`` the order the split's photos are taken in). The default,
0, is the draw this benchmark always made.

Writes ``--output`` (default benchmarks/results/bench_scoring.json; with several seeds
``{"seeds": [...], "runs": [one measurement's JSON per seed]}``) atomically and prints a
summary. ``--out`` is the old name of ``--output``.

    .venv/bin/python benchmarks/bench_scoring.py                 # defaults, ~2-3 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_scoring.py --images 8 --size 64 --repeats 1   # smoke run
    .venv/bin/python benchmarks/bench_scoring.py --root ../shared/voc2007-real --seeds 0 1   # photos
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from _bench_cli import per_seed, recorded_path, root_help, voc_dir  # noqa: E402

# torch and the scorer are imported where they are used: --help and a bad --root answer
# before torch's import (seconds on a loaded machine)
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
FIT_SPLIT, SCORE_SPLIT = "labeled", "unlabeled"  # with --root


def build_model(width: float, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers, c = [], 3
    for v in VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out = max(1, int(round(v * width)))
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(inplace=True)]
            c = out
    return nn.Sequential(*layers).eval()


def make_batch(index: int, bs: int, size: int, padded: bool, seed: int = 0):
    """Deterministic batch ``index``; padded batches zero everything outside each valid size."""
    import torch

    from imagescore_det.scoring import ImageBatch

    g = torch.Generator().manual_seed(seed * 100003 + index)
    x = torch.randn(bs, 3, size, size, generator=g)
    if not padded:
        return x
    lo = max(1, int(0.6 * size))
    vs = [tuple(int(v) for v in torch.randint(lo, size + 1, (2,), generator=g)) for _ in range(bs)]
    for i, (h, w) in enumerate(vs):
        x[i, :, h:, :] = 0
        x[i, :, :, w:] = 0
    return ImageBatch(x, valid_sizes=vs)


class Photos:
    """The photos of a VOC split as model inputs (``--root``): image k of a stream with seed
    s is the split's id at position k of a permutation drawn with s (repeating past the
    split's end)."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, RGB

    def __init__(self, dirname: str, split: str):
        self.dirname = dirname
        with open(os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")) as f:
            self.ids = [line.strip() for line in f if line.strip()]
        if not self.ids:
            sys.exit(f"error: {split}.txt of {dirname} lists no image ids")
        self._orders = {}

    def image_id(self, k: int, seed: int) -> str:
        import numpy as np

        if seed not in self._orders:
            self._orders[seed] = np.random.default_rng(seed).permutation(len(self.ids))
        return self.ids[self._orders[seed][k % len(self.ids)]]

    def batch(self, start: int, count: int, size: int, padded: bool, seed: int):
        """Images ``start .. start + count - 1`` of the stream as ``make_batch`` returns
        them: a tensor (uniform) or an ImageBatch with each photo's valid size (padded)."""
        import numpy as np
        import torch
        from PIL import Image

        from imagescore_det.scoring import ImageBatch

        x = torch.zeros(count, 3, size, size)
        valid = []
        mean = torch.tensor(self.MEAN).view(3, 1, 1)
        std = torch.tensor(self.STD).view(3, 1, 1)
        for j in range(count):
            path = os.path.join(self.dirname, "JPEGImages", self.image_id(start + j, seed) + ".jpg")
            with Image.open(path) as img:
                img = img.convert("RGB")
                w, h = img.size
                if padded:
                    scale = size / max(w, h)
                    w, h = max(1, round(w * scale)), max(1, round(h * scale))
                else:
                    w = h = size
                pixels = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32)
            x[j, :, :h, :w] = (torch.from_numpy(pixels).permute(2, 0, 1) / 255 - mean) / std
            valid.append((h, w))
        return ImageBatch(x, valid_sizes=valid) if padded else x


def stream(n_images: int, bs: int, size: int, padded: bool, seed: int = 0, photos=None):
    for b, start in enumerate(range(0, n_images, bs)):
        count = min(bs, n_images - start)
        yield (make_batch(b, count, size, padded, seed) if photos is None
               else photos.batch(start, count, size, padded, seed))


def plain_pass(model, batches):
    import torch

    from imagescore_det.scoring import ImageBatch

    with torch.no_grad():
        for b in batches:
            model(b.inputs if isinstance(b, ImageBatch) else b)


def rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak RSS since the last reset_peak_rss() (VmHWM), else since process start (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0) so the peak covers only the pass."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# -------------------------------------------------------------------------- memory child
def child(args) -> None:
    import torch

    from imagescore_det.scoring import ImageScorer

    if args.threads:
        torch.set_num_threads(args.threads)
    seed = args.seeds[0]
    model = build_model(args.width, seed)
    padded = args.scenario == "padded"
    photos = Photos(args.root, SCORE_SPLIT) if args.root else None
    # warm up allocator / kernels on one batch so that the baseline includes them
    plain_pass(model, [make_batch(10**6, args.batch, args.size, padded) if photos is None
                       else photos.batch(0, args.batch, args.size, padded, 10**6)])
    scorer = ImageScorer.load(args.scorer, model) if args.mode == "score" else None
    base = rss_now_mib()
    peak_reset = reset_peak_rss()
    t0 = time.perf_counter()
    batches = stream(args.images, args.batch, args.size, padded, seed=2 * seed + 1,
                     photos=photos)
    if scorer is None:
        plain_pass(model, batches)
        n = args.images
    else:
        n = len(scorer.score(batches))
    print(json.dumps({"mode": args.mode, "images": n, "seconds": time.perf_counter() - t0,
                      "rss_before_mib": base, "rss_after_mib": rss_now_mib(),
                      "peak_rss_mib": peak_rss_mib(), "peak_covers_pass_only": peak_reset}))


def run_child(args, mode: str, images: int, scorer_path: str, seed: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", "--mode", mode,
           "--images", str(images), "--batch", str(args.batch), "--size", str(args.size),
           "--width", str(args.width), "--scenario", args.mem_scenario, "--scorer", scorer_path,
           "--threads", str(args.threads), "--seeds", str(seed)] + (
               ["--root", args.voc_dir] if args.voc_dir else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------- main
def time_scenario(args, model, name: str, seed: int = 0, photos=None):
    from imagescore_det.scoring import ImageScorer

    padded = name == "padded"
    grid = (16, 16) if padded else None
    batches = list(stream(args.images, args.batch, args.size, padded, seed=2 * seed + 1,
                          photos=photos and photos[SCORE_SPLIT]))
    fit_batches = list(stream(args.images, args.batch, args.size, padded, seed=2 * seed + 2,
                              photos=photos and photos[FIT_SPLIT]))
    scorer = ImageScorer(model, grid=grid)
    t0 = time.perf_counter()
    scorer.fit(fit_batches)
    fit_s = time.perf_counter() - t0
    plain_pass(model, batches[:1])  # warm-up
    scorer.score(batches[:1])
    plain, score = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain_pass(model, batches)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scores = scorer.score(batches)
        score.append(time.perf_counter() - t0)
    assert scores.shape == (args.images,) and bool((scores <= 0).all())
    res = {
        "grid": grid, "layers": len(scorer.layer_names), "fit_seconds": fit_s,
        "plain_seconds": plain, "score_seconds": score,
        "ratio_median": statistics.median(score) / statistics.median(plain),
        "ratio_min": min(score) / min(plain),
        "score_ms_per_image": 1e3 * min(score) / args.images,
        "plain_ms_per_image": 1e3 * min(plain) / args.images,
    }
    return scorer, res


def measure(args, seed: int, photos=None) -> dict:
    """Both scenarios' timings and the memory runs with ``seed``'s draws: one run's JSON."""
    import torch

    from imagescore_det.scoring import ImageScorer

    t_start = time.perf_counter()
    model = build_model(args.width, seed)
    tag = "" if len(args.seeds) == 1 else f"[seed {seed}] "
    result = {
        "benchmark": "imagescore_det.scoring.ImageScorer.score vs plain model(batch) under no_grad",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "device": "cpu",
                    "loadavg_at_start": os.getloadavg()},
        "config": {"model": f"VGG16 conv body (13 conv+ReLU, width x{args.width})",
                   "images": args.images, "batch": args.batch, "size": args.size,
                   "repeats": args.repeats, "seed": seed,
                   "inputs": "random tensors" if photos is None else {
                       "root": recorded_path(args.voc_dir), "fit": FIT_SPLIT, "scored": SCORE_SPLIT}},
        "target": {"time_ratio_max": 1.10, "memory": "flat: peak at mem_scale*N ~= peak at N"},
        "scenarios": {},
    }
    scorers = {}
    for name in [s for s in args.scenarios.split(",") if s]:
        scorers[name], result["scenarios"][name] = time_scenario(args, model, name, seed, photos)
        r = result["scenarios"][name]
        print(f"{tag}[{name:7s}] layers={r['layers']} grid={r['grid']}  plain "
              f"{r['plain_ms_per_image']:.1f} ms/img  score {r['score_ms_per_image']:.1f} ms/img  "
              f"ratio median {r['ratio_median']:.3f}  min {r['ratio_min']:.3f}  "
              f"(fit {r['fit_seconds']:.1f} s)", flush=True)

    if not args.skip_memory:
        scen = args.mem_scenario
        scorer = scorers.get(scen)
        if scorer is None:
            scorer = ImageScorer(model, grid=(16, 16) if scen == "padded" else None).fit(
                list(stream(args.batch, args.batch, args.size, scen == "padded",
                            seed=2 * seed + 2, photos=photos and photos[FIT_SPLIT])))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "scorer.pt")
            scorer.save(path)
            mem = {"scenario": scen, "measure": "peak RSS (VmHWM, MiB) of a fresh subprocess during the pass", "runs": []}
            for n in (args.images, args.mem_scale * args.images):
                for mode in ("plain", "score"):
                    r = run_child(args, mode, n, path, seed)
                    mem["runs"].append(r)
                    print(f"{tag}[memory ] {mode:5s} {n:4d} images: peak RSS "
                          f"{r['peak_rss_mib']:.1f} MiB (RSS before pass "
                          f"{r['rss_before_mib']:.1f}, after {r['rss_after_mib']:.1f})",
                          flush=True)
        peak = {(r["mode"], r["images"]): r["peak_rss_mib"] for r in mem["runs"]}
        n1, n4 = args.images, args.mem_scale * args.images
        mem["score_peak_growth_mib"] = peak["score", n4] - peak["score", n1]
        mem["plain_peak_growth_mib"] = peak["plain", n4] - peak["plain", n1]
        mem["score_minus_plain_peak_mib_at_N"] = peak["score", n1] - peak["plain", n1]
        result["memory"] = mem
        print(f"{tag}[memory ] score peak growth N={n1} -> {n4}: "
              f"{mem['score_peak_growth_mib']:+.1f} MiB (plain pass: "
              f"{mem['plain_peak_growth_mib']:+.1f} MiB); score - plain at N: "
              f"{mem['score_minus_plain_peak_mib_at_N']:+.1f} MiB")
    result["total_seconds"] = time.perf_counter() - t_start
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None,
                   help=root_help([FIT_SPLIT, SCORE_SPLIT], "the photos to use as inputs",
                                  default=False) + "; default: none, random tensors")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="one measurement per seed: the random weights and inputs (default 0)")
    p.add_argument("--images", type=int, default=24, help="N images per timed pass (default 24)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128, help="input side in pixels (default 128)")
    p.add_argument("--width", type=float, default=1.0, help="VGG16 channel multiplier (default 1.0)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1; 0 = torch default). On a shared, loaded "
                        "machine multi-threaded small ops wait for busy cores, which inflates the "
                        "score/plain ratio; 1 thread gives stable numbers")
    p.add_argument("--mem-scale", type=int, default=4, help="memory at N and mem-scale*N images")
    p.add_argument("--mem-scenario", choices=["uniform", "padded"], default="padded")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--scenarios", default="uniform,padded")
    p.add_argument("--output", "--out", dest="output",
                   default=os.path.join(ROOT, "benchmarks", "results", "bench_scoring.json"),
                   help="JSON result path (default: %(default)s; --out: its old name)")
    # internal: memory child
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["plain", "score"], help=argparse.SUPPRESS)
    p.add_argument("--scenario", default="padded", help=argparse.SUPPRESS)
    p.add_argument("--scorer", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        return child(args)
    args.voc_dir = voc_dir(args.root, [FIT_SPLIT, SCORE_SPLIT]) if args.root else None
    photos = None if args.voc_dir is None else {
        split: Photos(args.voc_dir, split) for split in (FIT_SPLIT, SCORE_SPLIT)}
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    result = per_seed([measure(args, seed, photos) for seed in args.seeds], args.seeds)
    total = time.perf_counter() - t_start

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.output)
    print(f"wrote {args.output} ({total:.0f} s)")


if __name__ == "__main__":
    main()

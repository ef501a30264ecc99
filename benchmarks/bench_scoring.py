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

Writes benchmarks/results/bench_scoring.json atomically and prints a summary.

    .venv/bin/python benchmarks/bench_scoring.py                 # defaults, ~2-3 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_scoring.py --images 8 --size 64 --repeats 1   # smoke run
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

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from imagescore_det.scoring import ImageBatch, ImageScorer  # noqa: E402

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def build_model(width: float) -> nn.Module:
    torch.manual_seed(0)
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


def stream(n_images: int, bs: int, size: int, padded: bool, seed: int = 0):
    for b, start in enumerate(range(0, n_images, bs)):
        yield make_batch(b, min(bs, n_images - start), size, padded, seed)


def plain_pass(model, batches):
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
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.width)
    padded = args.scenario == "padded"
    # warm up allocator / kernels on one batch so that the baseline includes them
    plain_pass(model, [make_batch(10**6, args.batch, args.size, padded)])
    scorer = ImageScorer.load(args.scorer, model) if args.mode == "score" else None
    base = rss_now_mib()
    peak_reset = reset_peak_rss()
    t0 = time.perf_counter()
    batches = stream(args.images, args.batch, args.size, padded, seed=1)
    if scorer is None:
        plain_pass(model, batches)
        n = args.images
    else:
        n = len(scorer.score(batches))
    print(json.dumps({"mode": args.mode, "images": n, "seconds": time.perf_counter() - t0,
                      "rss_before_mib": base, "rss_after_mib": rss_now_mib(),
                      "peak_rss_mib": peak_rss_mib(), "peak_covers_pass_only": peak_reset}))


def run_child(args, mode: str, images: int, scorer_path: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", "--mode", mode,
           "--images", str(images), "--batch", str(args.batch), "--size", str(args.size),
           "--width", str(args.width), "--scenario", args.mem_scenario, "--scorer", scorer_path,
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------- main
def time_scenario(args, model, name: str):
    padded = name == "padded"
    grid = (16, 16) if padded else None
    batches = list(stream(args.images, args.batch, args.size, padded, seed=1))
    fit_batches = list(stream(args.images, args.batch, args.size, padded, seed=2))
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "bench_scoring.json"))
    # internal: memory child
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["plain", "score"], help=argparse.SUPPRESS)
    p.add_argument("--scenario", default="padded", help=argparse.SUPPRESS)
    p.add_argument("--scorer", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        return child(args)
    if args.threads:
        torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    model = build_model(args.width)
    result = {
        "benchmark": "imagescore_det.scoring.ImageScorer.score vs plain model(batch) under no_grad",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "device": "cpu",
                    "loadavg_at_start": os.getloadavg()},
        "config": {"model": f"VGG16 conv body (13 conv+ReLU, width x{args.width})",
                   "images": args.images, "batch": args.batch, "size": args.size,
                   "repeats": args.repeats},
        "target": {"time_ratio_max": 1.10, "memory": "flat: peak at mem_scale*N ~= peak at N"},
        "scenarios": {},
    }
    scorers = {}
    for name in [s for s in args.scenarios.split(",") if s]:
        scorers[name], result["scenarios"][name] = time_scenario(args, model, name)
        r = result["scenarios"][name]
        print(f"[{name:7s}] layers={r['layers']} grid={r['grid']}  plain {r['plain_ms_per_image']:.1f} "
              f"ms/img  score {r['score_ms_per_image']:.1f} ms/img  ratio median "
              f"{r['ratio_median']:.3f}  min {r['ratio_min']:.3f}  (fit {r['fit_seconds']:.1f} s)",
              flush=True)

    if not args.skip_memory:
        scen = args.mem_scenario
        scorer = scorers.get(scen)
        if scorer is None:
            scorer = ImageScorer(model, grid=(16, 16) if scen == "padded" else None).fit(
                list(stream(args.batch, args.batch, args.size, scen == "padded", seed=2)))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "scorer.pt")
            scorer.save(path)
            mem = {"scenario": scen, "measure": "peak RSS (VmHWM, MiB) of a fresh subprocess during the pass", "runs": []}
            for n in (args.images, args.mem_scale * args.images):
                for mode in ("plain", "score"):
                    r = run_child(args, mode, n, path)
                    mem["runs"].append(r)
                    print(f"[memory ] {mode:5s} {n:4d} images: peak RSS {r['peak_rss_mib']:.1f} MiB "
                          f"(RSS before pass {r['rss_before_mib']:.1f}, after {r['rss_after_mib']:.1f})",
                          flush=True)
        peak = {(r["mode"], r["images"]): r["peak_rss_mib"] for r in mem["runs"]}
        n1, n4 = args.images, args.mem_scale * args.images
        mem["score_peak_growth_mib"] = peak["score", n4] - peak["score", n1]
        mem["plain_peak_growth_mib"] = peak["plain", n4] - peak["plain", n1]
        mem["score_minus_plain_peak_mib_at_N"] = peak["score", n1] - peak["plain", n1]
        result["memory"] = mem
        print(f"[memory ] score peak growth N={n1} -> {n4}: {mem['score_peak_growth_mib']:+.1f} MiB "
              f"(plain pass: {mem['plain_peak_growth_mib']:+.1f} MiB); score - plain at N: "
              f"{mem['score_minus_plain_peak_mib_at_N']:+.1f} MiB")
    result["total_seconds"] = time.perf_counter() - t_start
    result["machine"]["loadavg_at_end"] = os.getloadavg()

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({result['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()

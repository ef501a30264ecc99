"""The three flags every benchmark takes, with one meaning each (not a benchmark itself).

* ``--root``: the data the benchmark measures. For the real photos: a VOC-layout root, the
  directory holding ``VOC2007/`` (``JPEGImages/``, ``Annotations/``,
  ``ImageSets/Main/<split>.txt``); default ``$IMAGESCORE_VOC07REAL`` if set, else
  ``../shared/voc2007-real`` beside the repository. A ``VOC2007`` directory itself is
  accepted too (what ``$IMAGESCORE_VOC07REAL``, ``bench_selection --real-dir`` and
  ``gpu_check --root`` took before).
* ``--seeds``: the seeds of every random draw the benchmark makes (``--seed`` is an alias
  where a benchmark had it). A benchmark that makes one measurement per seed writes, for
  one seed, the JSON it always wrote; for several, ``{"seeds": [...], "runs": [that JSON of
  each seed]}`` (:func:`per_seed`).
* ``--output``: the JSON result path (PNG / Markdown beside it where a benchmark writes
  them).

Paths in a result (the data root, files) are recorded by :func:`recorded_path`: relative to
the repository, never the absolute path of the machine that measured.

The leading underscore keeps it out of ``tests/test_benchmarks_cli.py``'s glob of
benchmark scripts.
"""
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VOC_ROOT = os.path.join(os.path.dirname(REPO), "shared", "voc2007-real")
ENV = "IMAGESCORE_VOC07REAL"


def default_voc_root():
    """``$IMAGESCORE_VOC07REAL`` if set, else ``../shared/voc2007-real``."""
    return os.environ.get(ENV) or DEFAULT_VOC_ROOT


def _split_files(splits):
    return f"{splits[0]}.txt" if len(splits) == 1 else f"{{{','.join(splits)}}}.txt"


def root_help(splits, what="the real photos it measures", default=True):
    return (f"VOC-layout root of {what}: the directory holding VOC2007/ (JPEGImages/, "
            f"Annotations/, ImageSets/Main/{_split_files(splits)}), or that VOC2007 "
            f"directory itself" + (f"; default ${ENV} if set, else {DEFAULT_VOC_ROOT}"
                                   if default else ""))


def description(doc):
    """A script's first docstring paragraph on one line (argparse's description)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def voc_dir(root, splits, flag="--root", from_env=False):
    """The ``VOC2007`` directory of ``root`` (``root/VOC2007`` or ``root`` itself) holding
    the split files ``splits``; otherwise exit (status 1) with a message that names the
    path and the fix (no traceback)."""
    root = os.path.abspath(os.path.expanduser(root))
    for candidate in (os.path.join(root, "VOC2007"), root):
        if os.path.isdir(os.path.join(candidate, "ImageSets", "Main")):
            break
    else:
        candidate = None
    source = f"{root} (from ${ENV})" if from_env else root
    fix = (f"Pass {flag} DIR, a VOC-layout root whose VOC2007/ holds JPEGImages/, "
           f"Annotations/ and ImageSets/Main/{_split_files(splits)} (on the project's "
           f"machines: {flag} {DEFAULT_VOC_ROOT})" + (f", or unset ${ENV}" if from_env else "")
           + ".")
    if not os.path.isdir(root):
        sys.exit(f"error: {flag} {source} does not exist. {fix}")
    if candidate is None:
        sys.exit(f"error: {flag} {source} is not a VOC-layout root: neither "
                 f"{os.path.join(root, 'VOC2007', 'ImageSets', 'Main')} nor "
                 f"{os.path.join(root, 'ImageSets', 'Main')} exists. {fix}")
    missing = [os.path.join(candidate, "ImageSets", "Main", f"{s}.txt") for s in splits
               if not os.path.isfile(os.path.join(candidate, "ImageSets", "Main", f"{s}.txt"))]
    missing += [os.path.join(candidate, sub) for sub in ("Annotations", "JPEGImages")
                if not os.path.isdir(os.path.join(candidate, sub))]
    if missing:
        sys.exit(f"error: {flag} {source}: {', '.join(missing)} "
                 f"{'is' if len(missing) == 1 else 'are'} missing. {fix}")
    return candidate


def resolve_voc_root(given, splits, flag="--root"):
    """``voc_dir`` of ``given``, or of the default root when ``given`` is None."""
    if given is not None:
        return voc_dir(given, splits, flag)
    return voc_dir(default_voc_root(), splits, flag, from_env=bool(os.environ.get(ENV)))


def recorded_path(path):
    """``path`` as a results file records it: as given when relative, else relative to the
    repository (``../shared/voc2007-real``, ``datasets``), so that the file reads the same
    on any machine. ``None`` stays ``None``."""
    if path is None or not os.path.isabs(path):
        return path
    return os.path.relpath(path, REPO)


def per_seed(results, seeds):
    """One seed: its result as is; several: ``{"seeds": [...], "runs": [result, ...]}``."""
    if len(results) == 1:
        return results[0]
    return {"seeds": list(seeds), "runs": list(results)}


def write_results(output, result, plot, markdown):
    """Write ``result`` as JSON to ``output`` and, beside it, ``plot(png_path, result)`` and
    the Markdown ``markdown(result)`` (all atomically); print the Markdown and the paths."""
    from imagescore_det.utils import atomic_write_json, atomic_write_text

    atomic_write_json(output, result)
    stem = os.path.splitext(output)[0]
    plot(stem + ".png", result)
    md = markdown(result)
    atomic_write_text(stem + ".md", md)
    print(md)
    print(f"wrote {output}, {stem}.png, {stem}.md")


def save_figure(fig, path, dpi=110, **savefig_kwargs):
    """Save a matplotlib figure as PNG atomically and close it (``savefig_kwargs``, e.g.
    ``bbox_inches="tight"``, go to ``fig.savefig``)."""
    import matplotlib.pyplot as plt

    from imagescore_det.utils import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, **savefig_kwargs))
    plt.close(fig)


_print_lock = threading.Lock()


def log(msg):
    """Print one line at once (benchmarks run training processes from several threads)."""
    with _print_lock:
        print(msg, flush=True)


def add_threads_argument(parser):
    """``--threads N``: OpenMP threads per training run (default: the CPU cores / --jobs)."""
    parser.add_argument(
        "--threads", type=int, default=None,
        help="threads per run (default: the CPU cores / --jobs); on a machine shared with "
             "other jobs give 1: two OpenMP threads on an oversubscribed CPU wait for each "
             "other (a run of ours went 5-10x slower)")


def threads_per_run(args):
    """``--threads``, else the CPU cores shared among ``--jobs`` runs (at least 1)."""
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: give 1 or more threads per run.")
    return args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))


def run_train_net(out_dir, config, opts, resume, threads):
    """``tools/train_net.py --config-file <config> [--resume] <opts>`` in a subprocess with
    ``threads`` OpenMP/MKL threads, its output appended to ``<out_dir>.log``; raises, naming
    that log, when it fails (a rerun of the benchmark resumes the run)."""
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
           os.path.join(REPO, config)] + (["--resume"] if resume else []) + list(opts)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    os.makedirs(os.path.dirname(out_dir.rstrip("/")) or ".", exist_ok=True)
    name = os.path.relpath(out_dir, REPO)
    started = time.time()
    log(f"[{name}] started: {' '.join(cmd[1:])}")
    with open(out_dir.rstrip("/") + ".log", "a") as f:
        done = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}); see "
                           f"{out_dir}.log. Rerun the benchmark to resume.")
    log(f"[{name}] done in {time.time() - started:.0f} s")


def git_commit():
    """The repository's short HEAD commit (``"unknown"`` outside a git checkout): results
    record it, so a number can be traced to the code that made it."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------- --pool
POOL_DIR_PREFIX = "pool_"


def add_pool_argument(parser, example):
    """``--pool NAME KEY VALUE ...``: the arms measured on another pool of ``--config``'s
    protocol, every one branched from the base run's round checkpoint with these overrides
    (the labeled and test images are the base run's, so its supervised copy serves)."""
    parser.add_argument(
        "--pool", nargs="+", default=None, metavar="NAME [KEY VALUE]",
        help="measure on another pool of --config's protocol: every arm branches from the base "
             "run's round checkpoint with these KEY VALUE overrides, into "
             f"<work-dir>/seed<s>/{POOL_DIR_PREFIX}NAME/ (e.g. {example}); the supervised "
             "copy stays the base run's")


def parse_pool(parser, args):
    """``(NAME, [KEY VALUE ...])`` of ``args.pool``, or None; a usage error (exit 2) naming
    the flag when it is not a name followed by pairs."""
    if not args.pool:
        return None
    if len(args.pool) % 2 == 0 or not args.pool[0].isidentifier():
        parser.error(f"--pool {' '.join(args.pool)}: give a NAME (letters, digits, _) then "
                     "KEY VALUE pairs")
    return args.pool[0], args.pool[1:]


def pool_run_dir(work_dir, seed, name, pool=None):
    """``<work_dir>/seed<s>/[pool_<POOL>/]<name>``: where an arm's run of ``seed`` lives."""
    return os.path.join(work_dir, f"seed{seed}", *([POOL_DIR_PREFIX + pool] if pool else []),
                        name)


# --------------------------------------------------------------------------- --round-from
def add_round_from_argument(parser, example):
    """``--round-from DIR``: every seed's base run starts from another run's round checkpoint
    (``{seed}`` in DIR is the seed) instead of training its warm-up again."""
    parser.add_argument(
        "--round-from", default=None, metavar="DIR",
        help="start every seed's base run from the round checkpoint (model_round1.pth) of a "
             "run that trained the same warm-up, instead of training it again: that run's "
             "folder, with {seed} where the seed goes (e.g. " + example + "); its round "
             "must be where this benchmark's config starts (IMAGE_SCORE.START_ITER, or "
             "TEACHER.BURN_IN_ITER in the teacher-student mode)")


def round_sources(pattern, seeds, cfg):
    """``{seed: run folder or None}`` for ``--round-from`` ``pattern``, each checked before
    anything trains: it holds ``model_round1.pth`` and its saved config.yaml puts the round
    where ``cfg`` starts (``engine.paired.start_iteration``); else SystemExit naming the
    file and the fix."""
    from imagescore_det.engine import load_config
    from imagescore_det.engine.paired import ROUND_CHECKPOINT, start_iteration

    sources = {}
    for seed in seeds:
        if not pattern:
            sources[seed] = None
            continue
        source = os.path.abspath(pattern.format(seed=seed))
        checkpoint = os.path.join(source, ROUND_CHECKPOINT + ".pth")
        saved = os.path.join(source, "config.yaml")
        if not (os.path.isfile(checkpoint) and os.path.isfile(saved)):
            raise SystemExit(
                f"--round-from {pattern}: {checkpoint} or {saved} is missing for seed {seed}. "
                "Give the folder of a run that trained its warm-up with PAIRED_BASELINE True "
                "(e.g. bench_headroom.py's <work-dir>/seed{seed}/same/oracle_all), with {seed} "
                "where the seed goes.")
        theirs, ours = start_iteration(load_config(saved)), start_iteration(cfg)
        if theirs != ours:
            raise SystemExit(
                f"--round-from {pattern}: {saved} has its round at iteration {theirs}, this "
                f"benchmark's config starts from iteration {ours}. Pass --opts with that "
                "iteration (IMAGE_SCORE.START_ITER or TEACHER.BURN_IN_ITER, and the run's "
                "SOLVER.STEPS), or another --round-from.")
        sources[seed] = source
    return sources

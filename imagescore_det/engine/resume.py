"""A resumed run replays what the uninterrupted run does.

Detectron2 restarts its training sampler and every random generator when a process starts,
so a run resumed from the checkpoint of iteration ``c`` sees other images and other random
draws (augmentation, RPN/RoI sampling) from ``c + 1`` on than a run that was never stopped:
a kill during the warm-up would change the model that scores the pool, hence the selection.

:class:`ReplayHook` removes the difference. At every iteration where a run can resume (its
first, and the one after each periodic checkpoint) and after each selection round, *every*
run, interrupted or not, seeds Python's, NumPy's and torch's generators with
``hash(data seed, iteration) + rank`` and rebuilds the training data loader (the current
one: labeled, or labeled + pseudo-labeled). From there on the two runs draw the same
numbers. The data seed is ``SEED``, or when that is negative one drawn at the start and
saved in every checkpoint (the hook's state), so ``SEED -1`` runs replay too.

It is also the kill point ``iter@<i>`` of :mod:`imagescore_det.faults`.
"""
import hashlib
import logging

from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from ..faults import fault_point
from .consistency import draw_seed

logger = logging.getLogger(__name__)


def derived_seed(seed, iteration):
    """The seed of the stream that starts at ``iteration`` (< 2**31 - 2**16: room for ranks)."""
    digest = hashlib.sha256(f"imagescore-replay/{seed}/{iteration}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2 ** 31 - 2 ** 16)


class ReplayHook(HookBase):
    """Re-seed and rebuild the training data at every resume point (see the module doc).

    Create it with the trainer whose loader it rebuilds; it records every later
    ``reset_data_loader`` (the selection rounds switch to labeled + pseudo-labeled data) so
    the rebuild is always of the current data.
    """

    def __init__(self, trainer, cfg, round_iterations=()):
        self.period = int(cfg.SOLVER.CHECKPOINT_PERIOD)
        self.rounds = set(round_iterations)
        self.seed = int(cfg.SEED) if cfg.SEED >= 0 else None
        builder_cls, loader_cfg = type(trainer), cfg  # no reference to the trainer itself
        self._builder = lambda: builder_cls.build_train_loader(loader_cfg)
        inner = trainer._trainer
        self._reset = inner.reset_data_loader

        def recording_reset(data_loader_builder):
            self._builder = data_loader_builder
            self._reset(data_loader_builder)

        inner.reset_data_loader = recording_reset

    def state_dict(self):
        return {"data_seed": self.seed} if self.seed is not None else {}

    def load_state_dict(self, state):
        if state.get("data_seed") is not None:
            self.seed = int(state["data_seed"])

    def before_train(self):
        if self.seed is None:  # SEED -1: one seed for the whole run, kept in the checkpoints
            self.seed = draw_seed()

    def is_resume_point(self, iteration):
        return (iteration == self.trainer.start_iter or iteration in self.rounds
                or (self.period > 0 and iteration % self.period == 0))

    def before_step(self):
        iteration = self.trainer.iter
        fault_point("iter", iteration)  # test-only (IMAGESCORE_FAULT=iter@<i>)
        if self.is_resume_point(iteration):
            seed = derived_seed(self.seed, iteration)
            seed_all_rng(seed + comm.get_rank())
            self._reset(self._builder)
            logger.info("Iteration %d: random generators re-seeded (%d) and training data "
                        "rebuilt, so that a run resumed here replays this one", iteration, seed)

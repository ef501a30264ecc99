#!/usr/bin/env python
"""Train and evaluate a detector with Image Score pseudo-labeling (Detectron2 style).

    python tools/train_net.py --config-file configs/synthetic/imagescore_V16tiny_quick.yaml
    python tools/train_net.py --config-file CFG --num-gpus 8 [KEY VALUE ...]
    python tools/train_net.py --config-file CFG --resume
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS path/to/model.pth
"""
import sys

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import imagescore_det.engine  # noqa: F401  (registers the VGG16 backbone and the datasets)
from imagescore_det.data import register_all_imagescore_datasets  # noqa: F401
from imagescore_det.data.checks import DataCheckError
from imagescore_det.data.split import SplitError
from imagescore_det.engine import ConfigError, Trainer, load_config
from imagescore_det.engine.bad_images import BadImageError
from imagescore_det.data.pseudo_check import PseudoDatasetError
from imagescore_det.engine.checkpoint import CheckedCheckpointer, CheckpointMismatchError
from imagescore_det.engine.lock import OutputDirLockedError, acquire_output_dir
from imagescore_det.engine.nonfinite import NonFiniteLossError
from imagescore_det.engine.round_files import RoundError
from imagescore_det.engine.safe_load import CheckpointFileError

# what stops a run with a message that names the file, key or process and the fix
USER_ERRORS = (ConfigError, CheckpointMismatchError, CheckpointFileError, OutputDirLockedError,
               RoundError, PseudoDatasetError, NonFiniteLossError, DataCheckError, BadImageError,
               SplitError)


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    if not args.eval_only and comm.is_main_process():
        acquire_output_dir(cfg.OUTPUT_DIR)  # before default_setup writes config.yaml and logs
    default_setup(cfg, args)
    # this project's own loggers, like Detectron2's projects do (e.g. PointRend)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="imagescore_det")
    return cfg


def main(args):
    cfg = setup(args)
    trainer_cls, checkpointer_cls = Trainer, CheckedCheckpointer
    if cfg.TEACHER.ENABLED:  # online teacher-student mode (imagescore_det/teacher)
        from imagescore_det.teacher.trainer import TeacherTrainer, TeacherWeightsCheckpointer
        trainer_cls, checkpointer_cls = TeacherTrainer, TeacherWeightsCheckpointer
    if args.eval_only:  # a teacher-student checkpoint: its teacher is evaluated
        # the test sets as the evaluator reads them, before the model is built and loaded
        trainer_cls.check_data(cfg, ("test",))
        model = trainer_cls.build_model(cfg)
        # evaluation is strict: weights that miss part of the model stop, naming the keys
        checkpointer_cls(model, save_dir=cfg.OUTPUT_DIR, strict=True,
                         config_file=args.config_file).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        return trainer_cls.test(cfg, model)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def worker(args):
    """What ``launch`` runs in each process: :func:`main`, then every rank waits for the
    others and the process group is destroyed before the worker exits, so no rank tears
    gloo/NCCL down while another still talks to it (a 2-process CPU test once saw a rank
    abort at exit, "terminate called without an active exception"; Detectron2's ``launch``
    leaves the group to process exit). ``main`` itself leaves the group alone: a script may
    call it more than once in one launch."""
    import torch.distributed as dist

    results = main(args)
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()
    return results


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        launch(worker, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")

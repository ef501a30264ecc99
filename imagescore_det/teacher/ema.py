"""The teacher as an exponential moving average (EMA) of the student."""
import copy

import torch


@torch.no_grad()
def ema_update(teacher, student, keep_rate):
    """``teacher = keep_rate * teacher + (1 - keep_rate) * student``, entry by entry of the
    state dicts (parameters and floating-point buffers, as Unbiased Teacher does); integer
    buffers (e.g. BatchNorm's ``num_batches_tracked``) are copied."""
    student_state = student.state_dict()
    for key, value in teacher.state_dict().items():
        source = student_state[key]
        if value.is_floating_point():
            value.mul_(keep_rate).add_(source.detach(), alpha=1.0 - keep_rate)
        else:
            value.copy_(source)


def make_teacher(student):
    """A frozen copy of ``student`` in eval mode (its weights are set by :func:`copy_into`
    and :func:`ema_update`, never by the optimizer)."""
    teacher = copy.deepcopy(student)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def copy_into(teacher, student):
    """The teacher becomes an exact copy of the student (the end of the burn-in)."""
    teacher.load_state_dict(student.state_dict())


def scaled_keep_rate(keep_rate, factor):
    """The per-step keep rate at ``factor`` times the images a step: ``k ** factor``, so that
    the weight of the student of ``n`` images ago stays the same."""
    return float(keep_rate ** factor)

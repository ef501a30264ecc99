"""The teacher's boxes as the student's targets, and the unsupervised loss."""

from detectron2.structures import Instances

# the losses of Detectron2's Faster R-CNN that train on pseudo-boxes
CLASSIFICATION_LOSSES = ("loss_rpn_cls", "loss_cls")
REGRESSION_LOSSES = ("loss_rpn_loc", "loss_box_reg")

def unsup_loss_names(regression):
    """The unsupervised losses that are on: objectness and ROI classification, and with
    ``TEACHER.UNSUP_REGRESSION`` the box regressions too."""
    return CLASSIFICATION_LOSSES + (REGRESSION_LOSSES if regression else ())

def pseudo_targets(predictions, score_thresh):
    """Per image the teacher's boxes with score >= ``score_thresh`` as ``Instances`` with
    ``gt_boxes`` / ``gt_classes`` (the student's targets), in the coordinates of the view the
    teacher saw (``predictions``: the teacher's ``inference(..., do_postprocess=False)``)."""
    targets = []
    for pred in predictions:
        keep = pred.scores >= score_thresh
        target = Instances(pred.image_size)
        target.gt_boxes = pred.pred_boxes[keep].clone()
        target.gt_classes = pred.pred_classes[keep].clone()
        targets.append(target)
    return targets

def unsupervised_loss(student, strong_inputs, targets, names, weight):
    """``(weight * sum of the losses in names, the unweighted losses)`` of the student on the
    strong views against the teacher's targets. Images without a target box are left out:
    none with a box gives exactly 0 (a zero that still reaches every parameter, so the
    gradients stay finite and defined), never the NaN of an empty mean."""
    inputs = [dict(view, instances=target) for view, target in zip(strong_inputs, targets)
              if len(target) > 0]
    if not inputs:
        zero = sum(p.sum() for p in student.parameters() if p.requires_grad) * 0.0
        return zero, {name: zero.detach() for name in names}
    losses = student(inputs)
    parts = {name: losses[name] for name in names}
    return weight * sum(parts.values()), {k: v.detach() for k, v in parts.items()}

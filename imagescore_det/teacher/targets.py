"""The teacher's boxes as the student's targets, and the unsupervised loss."""

from detectron2.structures import Instances

from ..evaluation.pseudo_labels import match_image, precision_of

# the losses of Detectron2's Faster R-CNN that train on pseudo-boxes
CLASSIFICATION_LOSSES = ("loss_rpn_cls", "loss_cls")
REGRESSION_LOSSES = ("loss_rpn_loc", "loss_box_reg")

def unsup_loss_names(regression):
    """The unsupervised losses that are on: objectness and ROI classification, and with
    ``TEACHER.UNSUP_REGRESSION`` the box regressions too."""
    return CLASSIFICATION_LOSSES + (REGRESSION_LOSSES if regression else ())

def kept(pred, score_thresh):
    """The mask of the teacher's boxes that become targets (score >= ``score_thresh``)."""
    return pred.scores >= score_thresh

def pseudo_targets(predictions, score_thresh):
    """Per image the teacher's boxes with score >= ``score_thresh`` as ``Instances`` with
    ``gt_boxes`` / ``gt_classes`` (the student's targets), in the coordinates of the view the
    teacher saw (``predictions``: the teacher's ``inference(..., do_postprocess=False)``)."""
    targets = []
    for pred in predictions:
        keep = kept(pred, score_thresh)
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

def pseudo_box_counts(predictions, truths, score_thresh, iou_thresh=0.5):
    """Per image ``(tp, fp, n_true)`` of the boxes :func:`pseudo_targets` keeps against the
    image's truth (``Instances`` with ``gt_boxes`` / ``gt_classes`` in the same view), matched
    as the offline round's ``pseudo_precision`` is (``evaluation.pseudo_labels.match_image``:
    IoU >= ``iou_thresh`` with a true box of the same class, each true box at most once,
    greedy by score)."""
    rows = []
    for pred, truth in zip(predictions, truths):
        keep = kept(pred, score_thresh)
        rows.append(match_image(pred.pred_boxes.tensor[keep].cpu().numpy(),
                                pred.scores[keep].cpu().numpy(),
                                pred.pred_classes[keep].cpu().numpy(),
                                truth.gt_boxes.tensor.cpu().numpy(),
                                truth.gt_classes.cpu().numpy(), iou_thresh))
    return rows

def pseudo_box_scalars(rows, totals):
    """The event-storage scalars of one step's ``(tp, fp, n_true)`` rows: the batch's sums
    ``teacher/pseudo_tp``, ``pseudo_fp``, ``pseudo_gt``; ``pseudo_precision`` only when the
    batch has a pseudo-box and ``pseudo_recall`` only when it has a true box (undefined
    otherwise: left out that step, never NaN); and the running sums since the burn-in
    ``teacher/pseudo_{tp,fp,gt}_total`` (``totals``: a list of three, updated in place), from
    which any span of the online phase is pooled exactly although metrics.json keeps only
    every 20th step."""
    overall = precision_of(rows)
    tp, fp, gt = (int(sum(row[j] for row in rows)) for j in range(3))
    for j, n in enumerate((tp, fp, gt)):
        totals[j] += n
    out = {"teacher/pseudo_tp": tp, "teacher/pseudo_fp": fp, "teacher/pseudo_gt": gt,
           "teacher/pseudo_tp_total": totals[0], "teacher/pseudo_fp_total": totals[1],
           "teacher/pseudo_gt_total": totals[2]}
    for name in ("precision", "recall"):
        if overall[name] is not None:
            out[f"teacher/pseudo_{name}"] = overall[name]
    return out

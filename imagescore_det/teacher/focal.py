"""Optional focal loss in the ROI classifier (``TEACHER.FOCAL_GAMMA``; Unbiased Teacher uses
gamma 1.5 against the foreground/background imbalance of pseudo-labels)."""
import torch
import torch.nn.functional as F

from detectron2.layers import cat
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers


def focal_cross_entropy(logits, targets, gamma):
    """``mean((1 - p_t) ** gamma * CE)`` over the rows, p_t the softmax probability of the
    target class; gamma 0 is Detectron2's mean cross entropy. No rows: 0 (as Detectron2's
    ``cross_entropy``)."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, targets, reduction="none")
    return ((1.0 - torch.exp(-ce)) ** gamma * ce).mean()


class FocalFastRCNNOutputLayers(FastRCNNOutputLayers):
    """Detectron2's box predictor with the classification loss made focal."""

    focal_gamma = 0.0

    def losses(self, predictions, proposals):
        losses = super().losses(predictions, proposals)
        scores = predictions[0]
        gt_classes = (cat([p.gt_classes for p in proposals], dim=0) if len(proposals)
                      else torch.empty(0, dtype=torch.long, device=scores.device))
        losses["loss_cls"] = focal_cross_entropy(scores, gt_classes, self.focal_gamma) * \
            self.loss_weight.get("loss_cls", 1.0)
        return losses


def use_focal_loss(model, gamma):
    """Make the ROI classification loss of ``model`` (a Detectron2 R-CNN with the standard
    ``FastRCNNOutputLayers``, softmax) focal with ``gamma``; returns the model."""
    predictor = model.roi_heads.box_predictor
    if type(predictor) is not FastRCNNOutputLayers or predictor.use_sigmoid_ce:
        raise ValueError("TEACHER.FOCAL_GAMMA > 0 needs Detectron2's FastRCNNOutputLayers with "
                         f"softmax classification; this model has {type(predictor).__name__} "
                         f"(use_sigmoid_ce={getattr(predictor, 'use_sigmoid_ce', None)}). Set "
                         "TEACHER.FOCAL_GAMMA 0.0.")
    predictor.__class__ = FocalFastRCNNOutputLayers
    predictor.focal_gamma = float(gamma)
    return model

"""The authors' multi-task loss: cross-entropy + center loss for emotion and for gender, weighted.

total = 0.7 * (CE_emotion + 0.15 * Center_emotion) + 0.3 * (CE_gender + 0.15 * Center_gender)
(spec "Model", authors' methods/train_SD_CAFF.py). The centers are parameters: train them with the model.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sdcaff.errors import ParamsError
from sdcaff.model import ModelOutput

GENDERS = 2
# authors' center loss (KaiyangZhou/pytorch-center-loss): each squared distance is clamped to this range.
DISTANCE_MIN, DISTANCE_MAX = 1e-12, 1e12


@dataclasses.dataclass(frozen=True)
class LossParams:
    emotion_weight: float = 0.7  # authors' code: alpha
    gender_weight: float = 0.3  # authors' code: beta; 0 = gender task off (no gender terms, no centers)
    center_weight: float = 0.15  # authors' code: center_rate; 0 = center losses off (no centers)
    center_lr: float = 0.1  # authors' code: lr_cent, the emotion centers' effective learning rate


class CenterLoss(nn.Module):
    """Center loss [Wen et al., ECCV 2016] as the authors use it: sum of squared distances / batch."""

    def __init__(self, n_classes: int, feature_dim: int):
        super().__init__()
        # authors' center loss: centers drawn from a standard normal.
        self.centers = nn.Parameter(torch.randn(n_classes, feature_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Returns the scalar loss for features (B, D) and integer labels (B,)."""
        # One-hot product rather than centers[labels]: indexing's backward accumulates with atomics
        # on CUDA, a matrix product does not.
        own_centers = F.one_hot(labels, self.centers.shape[0]).to(features.dtype) @ self.centers
        # The usual formulation halves the distance; the authors' implementation does not.
        distances = (features - own_centers).pow(2).sum(dim=1)
        return distances.clamp(DISTANCE_MIN, DISTANCE_MAX).sum() / features.shape[0]


class LossParts(NamedTuple):
    total: torch.Tensor  # scalar, the one to backpropagate
    emotion_ce: torch.Tensor
    emotion_center: torch.Tensor
    gender_ce: torch.Tensor
    gender_center: torch.Tensor


class MultiTaskLoss(nn.Module):
    """Weighted emotion + gender cross-entropy and center losses; holds the learned centers."""

    def __init__(self, p: LossParams, n_classes: int):
        super().__init__()
        self.params = p
        centers_on = p.center_weight > 0
        # authors' code: center features are the center heads' outputs, n_classes and 2 wide.
        self.emotion_centers = CenterLoss(n_classes, n_classes) if centers_on else None
        self.gender_centers = CenterLoss(GENDERS, GENDERS) if centers_on and p.gender_weight > 0 else None

    def forward(self, out: ModelOutput, emotion: torch.Tensor, gender: torch.Tensor) -> LossParts:
        """Returns the total loss and its four unweighted terms for labels emotion (B,), gender (B,)."""
        p = self.params
        zero = out.emotion.new_zeros(())
        emotion_ce = F.cross_entropy(out.emotion, emotion)
        emotion_center = zero
        if self.emotion_centers is not None:
            emotion_center = self.emotion_centers(out.emotion_center, emotion)
        gender_ce = gender_center = zero
        if p.gender_weight > 0:
            if out.gender is None:
                raise ParamsError("loss gender_weight > 0 but the model has no gender head (model.gender_head)")
            gender_ce = F.cross_entropy(out.gender, gender)
            if self.gender_centers is not None:
                gender_center = self.gender_centers(out.gender_center, gender)
        total = p.emotion_weight * (emotion_ce + p.center_weight * emotion_center) + p.gender_weight * (
            gender_ce + p.center_weight * gender_center
        )
        return LossParts(total, emotion_ce, emotion_center, gender_ce, gender_center)


def scale_center_grads(loss: MultiTaskLoss, lr: float) -> None:
    """Rescales the emotion centers' gradients by center_lr / (center_weight * lr); call before step()."""
    # authors' code: only the emotion centers are rescaled, with the current (decayed) lr, so that
    # under plain SGD they would move at rate center_lr whatever the loss weight and model lr.
    if loss.emotion_centers is None:
        return
    grad = loss.emotion_centers.centers.grad
    if grad is not None:
        grad.mul_(loss.params.center_lr / (loss.params.center_weight * lr))

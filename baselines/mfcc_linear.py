"""The floor: utterance-level MFCC statistics (mean and std of each coefficient) and one linear layer."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sdcaff.model import ModelOutput


@dataclasses.dataclass(frozen=True)
class LinearParams:
    n_mfcc: int = 60  # the feature file's coefficients (the authors' 60)
    n_classes: int = 4  # neutral, sad, angry, happy


class MfccLinear(nn.Module):
    """Per-coefficient mean and std over frames -> standardised (batch statistics) -> linear classifier."""

    def __init__(self, p: LinearParams):
        super().__init__()
        self.params = p
        # Without learned scale or shift this is only standardisation; the model stays linear in the statistics.
        self.standardize = nn.BatchNorm1d(2 * p.n_mfcc, affine=False)
        self.linear = nn.Linear(2 * p.n_mfcc, p.n_classes)

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> ModelOutput:
        """Returns ModelOutput for MFCC maps static (B, 1, n_mfcc, T); `dynamic` is not read."""
        if static.dim() != 4 or static.shape[1:3] != (1, self.params.n_mfcc):
            raise ValueError(f"static input must be (B, 1, {self.params.n_mfcc}, T), got {tuple(static.shape)}")
        mfcc = static.squeeze(1)
        statistics = torch.cat([mfcc.mean(dim=2), mfcc.std(dim=2)], dim=1)  # (B, 2 * n_mfcc)
        logits = self.linear(self.standardize(statistics))
        return ModelOutput(emotion=logits, gender=None, emotion_center=logits, gender_center=None, fused=statistics)


Params = LinearParams  # the model-module contract: `Params` and `build` (docs/adding-a-model.md)


def build(p: LinearParams) -> MfccLinear:
    """Returns a freshly initialised MFCC-statistics linear classifier."""
    return MfccLinear(p)

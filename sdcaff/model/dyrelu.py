"""Dynamic ReLU, type B (channel-wise) [Chen et al., "Dynamic ReLU", ECCV 2020], for 2-d feature maps."""

from __future__ import annotations

import torch
from torch import nn

# Dynamic ReLU paper, sec. 3.2 (and the DyReLUB the authors import): the k slopes start at
# alpha = [1, 0, ...] and the k intercepts at beta = [0, ...], so an untrained DyReLU is a plain ReLU;
# the residuals the coefficient network predicts are scaled by lambda_a = 1.0 and lambda_b = 0.5.
ALPHA_FIRST = 1.0
LAMBDA_A = 1.0
LAMBDA_B = 0.5


class DyReLUB(nn.Module):
    """y_c = max_k (a_c^k(x) * x_c + b_c^k(x)), with a, b predicted per channel from the whole map."""

    def __init__(self, channels: int, k: int = 2, reduction: int = 4):
        super().__init__()
        if channels // reduction < 1:
            raise ValueError(f"DyReLUB: {channels} channels cannot be reduced by {reduction}")
        self.channels = channels
        self.k = k
        # Coefficient network: global average pool -> fc C->C/r -> ReLU -> fc C/r->2kC (spec, "Model").
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, 2 * k * channels)
        alpha = torch.zeros(k)
        alpha[0] = ALPHA_FIRST
        self.register_buffer("init", torch.cat([alpha, torch.zeros(k)]), persistent=False)
        self.register_buffer("lambdas", torch.tensor([LAMBDA_A] * k + [LAMBDA_B] * k), persistent=False)

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns slopes a and intercepts b, each (B, C, k), for x (B, C, H, W)."""
        context = x.mean(dim=(2, 3))
        residual = 2 * torch.sigmoid(self.fc2(torch.relu(self.fc1(context)))) - 1
        # Per channel the 2k values are [a^1..a^k, b^1..b^k].
        coef = residual.view(-1, self.channels, 2 * self.k) * self.lambdas + self.init
        return coef[..., : self.k], coef[..., self.k :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the activation of x: (B, C, H, W) -> (B, C, H, W)."""
        slopes, intercepts = self.coefficients(x)
        slopes = slopes[..., None, None]
        intercepts = intercepts[..., None, None]
        # Running maximum written as max(u, v) = u + relu(v - u): same values, but its backward is one
        # threshold kernel, where torch.maximum's tie-splitting backward costs ~4 passes over the map.
        out = torch.addcmul(intercepts[:, :, 0], x, slopes[:, :, 0])
        for piece in range(1, self.k):
            out = out + torch.relu(torch.addcmul(intercepts[:, :, piece], x, slopes[:, :, piece]) - out)
        return out

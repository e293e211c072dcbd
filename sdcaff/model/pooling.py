"""Average pooling written as means and matrix products: deterministic on CUDA, unlike the adaptive pools.

torch.nn.AdaptiveAvgPool1d/2d have no deterministic CUDA backward, so training under
torch.use_deterministic_algorithms(True) on a GPU would stop at them; these give the same values.
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalAverage(nn.Module):
    """The mean over positions, as a module for nn.Sequential."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns (B, C, H, W) -> (B, C, 1, 1)."""
        return x.mean(dim=(2, 3), keepdim=True)


def averaging_matrix(length: int, size: int, device=None, dtype=None) -> torch.Tensor:
    """Returns the (length, size) matrix whose column i averages adaptive pooling window i."""
    # PyTorch's adaptive windows: [floor(i * L / n), ceil((i + 1) * L / n)).
    dtype = dtype or torch.get_default_dtype()
    i = torch.arange(size, device=device)
    start = (i * length) // size
    end = ((i + 1) * length + size - 1) // size
    position = torch.arange(length, device=device)[:, None]
    inside = (position >= start) & (position < end)
    return inside.to(dtype) / (end - start).to(dtype)


def adaptive_average(x: torch.Tensor, size: int) -> torch.Tensor:
    """Returns the last axis adaptively average-pooled to `size`: (..., L) -> (..., size)."""
    return x @ averaging_matrix(x.shape[-1], size, x.device, x.dtype)

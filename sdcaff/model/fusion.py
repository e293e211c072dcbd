"""Fusion of the static (CNN) and dynamic (LSTM) branch maps into one vector: Cross AFF and its rivals.

Every fusion takes the static map (B, Cs, H, W) and the dynamic map (B, Cd, 1, T), either of which is
None in a single-branch model, and returns the fused vector (B, out_features).
"""

from __future__ import annotations

import torch
from torch import nn

from sdcaff.model.pooling import GlobalAverage, adaptive_average

KINDS = ("cross_aff", "aff", "iaff", "concat", "add", "ss_cross", "dd_cross")


def local_context(channels: int, inner: int) -> nn.Sequential:
    """Returns AFF's point-wise context: (B, C, H, W) -> (B, C, H, W) [aff]."""
    return nn.Sequential(
        nn.Conv2d(channels, inner, kernel_size=1),
        nn.BatchNorm2d(inner),
        nn.ReLU(),
        nn.Conv2d(inner, channels, kernel_size=1),
        nn.BatchNorm2d(channels),
    )


def global_context(channels: int, inner: int, out_channels: int) -> nn.Sequential:
    """Returns AFF's pooled context: (B, C, H, W) -> (B, out_channels, 1, 1) [aff]."""
    # out_channels differs from channels only in Cross AFF, where the context gates the other branch.
    return nn.Sequential(
        GlobalAverage(),
        nn.Conv2d(channels, inner, kernel_size=1),
        nn.BatchNorm2d(inner),
        nn.ReLU(),
        nn.Conv2d(inner, out_channels, kernel_size=1),
        nn.BatchNorm2d(out_channels),
    )


def pooled(x: torch.Tensor) -> torch.Tensor:
    """Returns the global average over positions: (B, C, H, W) -> (B, C)."""
    return x.mean(dim=(2, 3))


class MultiScaleChannelAttention(nn.Module):
    """AFF's MS-CAM: gate = sigmoid(local(x) + global(x)) [aff]."""

    def __init__(self, channels: int, inner: int):
        super().__init__()
        self.local = local_context(channels, inner)
        self.glob = global_context(channels, inner, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the gate: (B, C, H, W) -> (B, C, H, W), values in (0, 1)."""
        return torch.sigmoid(self.local(x) + self.glob(x))


class CrossAFF(nn.Module):
    """SD-CAFF's fusion: each branch gated by its own local context plus the other's global context."""

    def __init__(self, static_channels: int, dynamic_channels: int, inner: int):
        super().__init__()
        self.static_local = local_context(static_channels, inner)
        self.static_global = global_context(static_channels, inner, dynamic_channels)
        self.dynamic_local = local_context(dynamic_channels, inner)
        self.dynamic_global = global_context(dynamic_channels, inner, static_channels)
        self.out_features = static_channels + dynamic_channels

    def gates(self, static: torch.Tensor, dynamic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the static gate (B, Cs, H, W) and the dynamic gate (B, Cd, 1, T)."""
        static_gate = torch.sigmoid(self.static_local(static) + self.dynamic_global(dynamic))
        dynamic_gate = torch.sigmoid(self.dynamic_local(dynamic) + self.static_global(static))
        return static_gate, dynamic_gate

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """Returns the fused vector: (B, Cs, H, W), (B, Cd, 1, T) -> (B, Cs + Cd)."""
        static_gate, dynamic_gate = self.gates(static, dynamic)
        return torch.cat([pooled(static * static_gate), pooled(dynamic * dynamic_gate)], dim=1)


class Concat(nn.Module):
    """The authors' "CRNN": each present branch globally average-pooled, then concatenated."""

    def __init__(self, static_channels: int, dynamic_channels: int):
        super().__init__()
        self.out_features = static_channels + dynamic_channels

    def forward(self, static: torch.Tensor | None, dynamic: torch.Tensor | None) -> torch.Tensor:
        """Returns (B, Cs + Cd), or (B, Cs) / (B, Cd) when one branch is None."""
        return torch.cat([pooled(x) for x in (static, dynamic) if x is not None], dim=1)


class DynamicToStaticGrid(nn.Module):
    """Brings the dynamic map onto the static map's grid, so same-shape fusions (add, AFF) apply."""

    def __init__(self, dynamic_channels: int, static_channels: int):
        super().__init__()
        # A 1x1 projection + BN, as a ResNet projection shortcut matches channel counts.
        self.project = nn.Sequential(
            nn.Conv2d(dynamic_channels, static_channels, kernel_size=1), nn.BatchNorm2d(static_channels)
        )

    def forward(self, dynamic: torch.Tensor, width: int) -> torch.Tensor:
        """Returns (B, Cd, 1, T) -> (B, Cs, 1, width), broadcastable over the static map's rows."""
        # The dynamic map has no frequency axis; only its time axis is pooled to the static width.
        return self.project(adaptive_average(dynamic, width))


class Add(nn.Module):
    """Element-wise sum on the static grid, then global average pool: AFF's baseline fusion."""

    def __init__(self, static_channels: int, dynamic_channels: int):
        super().__init__()
        self.align = DynamicToStaticGrid(dynamic_channels, static_channels)
        self.out_features = static_channels

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """Returns (B, Cs, H, W), (B, Cd, 1, T) -> (B, Cs)."""
        return pooled(static + self.align(dynamic, static.shape[-1]))


class AFF(nn.Module):
    """Plain AFF: Z = M(X + Y) * X + (1 - M(X + Y)) * Y, X static, Y dynamic on its grid [aff]."""

    def __init__(self, static_channels: int, dynamic_channels: int, inner: int):
        super().__init__()
        self.align = DynamicToStaticGrid(dynamic_channels, static_channels)
        self.attention = MultiScaleChannelAttention(static_channels, inner)
        self.out_features = static_channels

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """Returns (B, Cs, H, W), (B, Cd, 1, T) -> (B, Cs)."""
        aligned = self.align(dynamic, static.shape[-1])
        gate = self.attention(static + aligned)
        # The paper's formula; Dai et al.'s released AFF doubles both terms.
        return pooled(gate * static + (1 - gate) * aligned)


class IterativeAFF(nn.Module):
    """iAFF: the gate is computed on a first AFF integration instead of on X + Y [aff]."""

    def __init__(self, static_channels: int, dynamic_channels: int, inner: int):
        super().__init__()
        self.align = DynamicToStaticGrid(dynamic_channels, static_channels)
        self.first = MultiScaleChannelAttention(static_channels, inner)
        self.second = MultiScaleChannelAttention(static_channels, inner)
        self.out_features = static_channels

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """Returns (B, Cs, H, W), (B, Cd, 1, T) -> (B, Cs)."""
        aligned = self.align(dynamic, static.shape[-1])
        first_gate = self.first(static + aligned)
        initial = first_gate * static + (1 - first_gate) * aligned
        # Its own second attention, as in the paper (the released iAFF reuses the first global context).
        gate = self.second(initial)
        return pooled(gate * static + (1 - gate) * aligned)


def build_fusion(kind: str, static_channels: int, dynamic_channels: int, inner: int) -> nn.Module:
    """Returns the fusion module for `kind`; its out_features is the fused width."""
    if kind in ("cross_aff", "ss_cross", "dd_cross"):
        # ss_cross / dd_cross differ from cross_aff only in what feeds the two slots (see sdcaff.py).
        return CrossAFF(static_channels, dynamic_channels, inner)
    if kind == "concat":
        return Concat(static_channels, dynamic_channels)
    if kind == "add":
        return Add(static_channels, dynamic_channels)
    if kind == "aff":
        return AFF(static_channels, dynamic_channels, inner)
    if kind == "iaff":
        return IterativeAFF(static_channels, dynamic_channels, inner)
    raise ValueError(f"unknown fusion kind {kind!r}; known: {', '.join(KINDS)}")

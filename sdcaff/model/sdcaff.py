"""SD-CAFF: static CNN branch on MFCC maps, dynamic LSTM branch on MFCC + deltas, Cross AFF, four heads.

No I/O: sizes come in as ModelParams, tensors in and out. Sizes and sources: ../shared/spec/sdcaff.md
"Model" and the authors' methods/SD_CAFF.py; every ablation is a ModelParams switch.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sdcaff.errors import ParamsError
from sdcaff.model.dyrelu import DyReLUB
from sdcaff.model.fusion import build_fusion
from sdcaff.model.pooling import adaptive_average

KERNEL = 3  # spec: five 3x3 convolutions
POOL = 2  # spec: 2x2 max pools
GENDERS = 2


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """Every size and switch of the network; the defaults are the published (paper) model."""

    n_mfcc: int = 60  # spec: 60 coefficients per frame
    frames: int = 251  # spec: 6 s at hop 384, centred frames
    cnn_channels: tuple[int, ...] = (8, 32, 64, 96, 128)  # authors' code: conv1..conv6 without conv3
    first_padding: int = 0  # authors' code: conv1 unpadded (60 x 251 -> 58 x 249); the others pad 1
    pool_before: tuple[int, ...] = (2, 3, 4)  # 0-based convs preceded by a 2x2 max pool (authors' code)
    cnn_dropout: float = 0.1  # authors' code: dropout on the CNN output
    dyrelu: bool = True  # false = plain ReLU (the authors' DyRELU=False ablation)
    dyrelu_k: int = 2  # authors' DyReLUB default: two linear pieces
    dyrelu_reduction: int = 4  # authors' DyReLUB default: coefficient net C -> C/4 -> 2kC
    # What the LSTM reads from the (B, T, 3 * n_mfcc) input: `stack` = MFCC, delta, delta-delta (the
    # model file's example); `mfcc` = the first n_mfcc only; `weighted` = the released train script's
    # weighted sum of the three with lstm_input_weights (n_mfcc wide).
    lstm_input: Literal["stack", "mfcc", "weighted"] = "stack"
    lstm_input_weights: tuple[float, ...] = (0.7, 0.3, 0.0)  # authors' train script: 0.7 mfcc + 0.3 delta
    lstm_hidden: int = 1024  # authors' code: one unidirectional layer
    lstm_dropout: float = 0.1  # authors' code: dropout on the LSTM outputs
    lstm_pooled: int = 64  # authors' code: AdaptiveAvgPool1d(64) over each frame's hidden state
    # The LSTMs read the frames averaged in non-overlapping groups of this many (1 = every frame, the
    # paper's); the fusions pool over time, so any length fits. A CPU budget knob of the quick profile.
    lstm_stride: int = 1
    aff_inner: int = 32  # authors' code: inter_channels r of every AFF context
    fusion: Literal["cross_aff", "aff", "iaff", "concat", "add", "ss_cross", "dd_cross"] = "cross_aff"
    branches: Literal["both", "cnn", "lstm"] = "both"  # single branch: needs fusion concat (= pooling)
    n_classes: int = 4  # spec: neutral, sad, angry, happy
    gender_head: bool = True  # false = no gender and gender-center heads (authors' Gender=False)

    def problems(self) -> list[str]:
        """Returns what is inconsistent in these params, one message per problem; empty when fine."""
        found = []
        if not self.cnn_channels:
            found.append("cnn_channels: needs at least one convolution")
        if any(not 0 <= i < len(self.cnn_channels) for i in self.pool_before):
            found.append(f"pool_before: {list(self.pool_before)} names a conv outside 0..{len(self.cnn_channels) - 1}")
        if self.dyrelu and any(c < self.dyrelu_reduction for c in self.cnn_channels):
            found.append(f"cnn_channels: every width must be >= dyrelu_reduction ({self.dyrelu_reduction})")
        if not 1 <= self.lstm_stride <= self.frames:
            found.append(f"lstm_stride: must be 1..frames ({self.frames}), got {self.lstm_stride}")
        if len(self.lstm_input_weights) != 3:
            found.append("lstm_input_weights: needs 3 weights (mfcc, delta, delta_delta)")
        if self.branches != "both" and self.fusion != "concat":
            found.append(f"fusion '{self.fusion}' needs branches 'both'; a single branch takes fusion 'concat'")
        if found:
            return found
        channels, height, width = static_shape(self)
        if min(height, width) < 1:
            found.append(f"n_mfcc x frames ({self.n_mfcc} x {self.frames}) is too small for the CNN's pools")
        elif self.fusion == "ss_cross" and channels * width % self.lstm_pooled:
            found.append(
                f"fusion 'ss_cross': the second CNN's {channels} x {width} map cannot be reshaped "
                f"to lstm_pooled ({self.lstm_pooled}) channels"
            )
        return found


def static_shape(p: ModelParams) -> tuple[int, int, int]:
    """Returns the CNN branch's output (channels, height, width) for an n_mfcc x frames input."""
    height, width = p.n_mfcc, p.frames
    for i in range(len(p.cnn_channels)):
        if i in p.pool_before:
            height, width = height // POOL, width // POOL
        padding = p.first_padding if i == 0 else KERNEL // 2
        height, width = height + 2 * padding - KERNEL + 1, width + 2 * padding - KERNEL + 1
    return p.cnn_channels[-1], height, width


class ModelOutput(NamedTuple):
    emotion: torch.Tensor  # (B, n_classes) logits
    gender: torch.Tensor | None  # (B, 2) logits; None without the gender head
    emotion_center: torch.Tensor  # (B, n_classes): the features the emotion center loss pulls
    gender_center: torch.Tensor | None  # (B, 2); None without the gender head
    fused: torch.Tensor  # (B, D): the fused vector all heads read


class ConvBlock(nn.Module):
    """3x3 convolution -> batch norm -> dynamic ReLU (or ReLU)."""

    def __init__(self, in_channels: int, channels: int, padding: int, p: ModelParams):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, KERNEL, padding=padding)
        self.bn = nn.BatchNorm2d(channels)
        self.act = DyReLUB(channels, p.dyrelu_k, p.dyrelu_reduction) if p.dyrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns (B, C_in, H, W) -> (B, C, H', W')."""
        return self.act(self.bn(self.conv(x)))


class StaticBranch(nn.Module):
    """The CNN branch: conv blocks with 2x2 max pools between, dropout at the end."""

    def __init__(self, p: ModelParams):
        super().__init__()
        widths = (1, *p.cnn_channels)
        self.blocks = nn.ModuleList(
            ConvBlock(widths[i], widths[i + 1], p.first_padding if i == 0 else KERNEL // 2, p)
            for i in range(len(p.cnn_channels))
        )
        self.pool_before = frozenset(p.pool_before)
        self.dropout = nn.Dropout(p.cnn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the static map: (B, 1, 60, 251) -> (B, 128, 7, 31) for the paper sizes."""
        for i, block in enumerate(self.blocks):
            if i in self.pool_before:
                x = F.max_pool2d(x, POOL)
            x = block(x)
        return self.dropout(x)


class DynamicBranch(nn.Module):
    """The LSTM branch: one unidirectional LSTM, dropout, each frame's hidden state average-pooled."""

    def __init__(self, input_size: int, hidden: int, dropout: float, pooled: int, stride: int = 1):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.pooled = pooled
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the dynamic map: (B, T, F) -> (B, pooled, 1, T // stride), channels x 1 x time."""
        if self.stride > 1:  # frames averaged in groups of `stride`, a last incomplete group dropped
            x = F.avg_pool1d(x.transpose(1, 2), self.stride).transpose(1, 2)
        out, _ = self.lstm(x)
        out = adaptive_average(self.dropout(out), self.pooled)
        return out.transpose(1, 2).unsqueeze(2)


class SDCAFF(nn.Module):
    """The network; forward(static, dynamic) -> ModelOutput (docs/architecture.md, model contract)."""

    def __init__(self, p: ModelParams):
        super().__init__()
        self.params = p
        static_channels, dynamic_channels = p.cnn_channels[-1], p.lstm_pooled
        lstm_inputs = 3 * p.n_mfcc if p.lstm_input == "stack" else p.n_mfcc
        # Static slot: the CNN, or for dd_cross an LSTM on MFCC only pooled to the CNN's width
        # (authors' DD_CAFF). Dynamic slot: the LSTM, or for ss_cross a second CNN (authors' SS_CAFF).
        self.cnn = StaticBranch(p) if p.branches != "lstm" and p.fusion != "dd_cross" else None
        self.second_lstm = (
            DynamicBranch(p.n_mfcc, p.lstm_hidden, p.lstm_dropout, static_channels, p.lstm_stride)
            if p.fusion == "dd_cross" else None
        )
        self.lstm = (
            DynamicBranch(lstm_inputs, p.lstm_hidden, p.lstm_dropout, dynamic_channels, p.lstm_stride)
            if p.branches != "cnn" and p.fusion != "ss_cross"
            else None
        )
        self.second_cnn = StaticBranch(p) if p.fusion == "ss_cross" else None
        self.fusion = build_fusion(
            p.fusion,
            static_channels if p.branches != "lstm" else 0,
            dynamic_channels if p.branches != "cnn" else 0,
            p.aff_inner,
        )
        width = self.fusion.out_features
        heads = {"emotion": nn.Linear(width, p.n_classes), "emotion_center": nn.Linear(width, p.n_classes)}
        if p.gender_head:
            heads["gender"] = nn.Linear(width, GENDERS)
            heads["gender_center"] = nn.Linear(width, GENDERS)
        self.heads = nn.ModuleDict(heads)

    def lstm_features(self, dynamic: torch.Tensor) -> torch.Tensor:
        """Returns what the LSTM reads: (B, T, 3n) -> (B, T, 3n) for `stack`, else (B, T, n)."""
        n = self.params.n_mfcc
        if self.params.lstm_input == "stack":
            return dynamic
        if self.params.lstm_input == "mfcc":
            return dynamic[..., :n]
        mfcc, delta, delta_delta = dynamic[..., :n], dynamic[..., n : 2 * n], dynamic[..., 2 * n :]
        w = self.params.lstm_input_weights
        return w[0] * mfcc + w[1] * delta + w[2] * delta_delta

    def branch_maps(
        self, static: torch.Tensor, dynamic: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns the static slot (B, Cs, H, W) and the dynamic slot (B, Cd, 1, T'); None if absent."""
        p = self.params
        if static.dim() != 4 or static.shape[1:3] != (1, p.n_mfcc):
            raise ValueError(f"static input must be (B, 1, {p.n_mfcc}, T), got {tuple(static.shape)}")
        if dynamic.dim() != 3 or dynamic.shape[-1] != 3 * p.n_mfcc:
            raise ValueError(f"dynamic input must be (B, T, {3 * p.n_mfcc}), got {tuple(dynamic.shape)}")
        static_map = dynamic_map = None
        if self.cnn is not None:
            static_map = self.cnn(static)
        elif self.second_lstm is not None:
            # authors' DD_CAFF: the static slot's LSTM reads the MFCC matrix as a sequence of frames.
            static_map = self.second_lstm(static.squeeze(1).transpose(1, 2))
        if self.lstm is not None:
            dynamic_map = self.lstm(self.lstm_features(dynamic))
        elif self.second_cnn is not None:
            second = self.second_cnn(static)
            # authors' SS_CAFF: a raw reshape of (C, H, W) to (lstm_pooled, H, C * W / lstm_pooled).
            dynamic_map = second.reshape(second.shape[0], p.lstm_pooled, second.shape[2], -1)
        return static_map, dynamic_map

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> ModelOutput:
        """Returns ModelOutput for static (B, 1, n_mfcc, T) and dynamic (B, T, 3 * n_mfcc)."""
        fused = self.fusion(*self.branch_maps(static, dynamic))
        has_gender = "gender" in self.heads
        return ModelOutput(
            emotion=self.heads["emotion"](fused),
            gender=self.heads["gender"](fused) if has_gender else None,
            emotion_center=self.heads["emotion_center"](fused),
            gender_center=self.heads["gender_center"](fused) if has_gender else None,
            fused=fused,
        )


def build(p: ModelParams) -> SDCAFF:
    """Returns a freshly initialised SD-CAFF (or ablation) for `p`; raises ParamsError if inconsistent."""
    problems = p.problems()
    if problems:
        raise ParamsError("model params: " + "; ".join(problems))
    return SDCAFF(p)


def count_parameters(module: nn.Module) -> int:
    """Returns the number of trainable parameters of `module`."""
    return sum(t.numel() for t in module.parameters() if t.requires_grad)


def component_parameters(model: SDCAFF) -> dict[str, int]:
    """Returns trainable parameter counts per top-level component (cnn, lstm, fusion, heads, ...)."""
    return {name: count_parameters(child) for name, child in model.named_children()}

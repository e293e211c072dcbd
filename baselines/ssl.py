"""SUPERB-style downstream over a frozen self-supervised upstream (WavLM, HuBERT, wav2vec 2.0, Whisper encoder).

SUPERB's emotion task (s3prl: upstream/interfaces.py Featurizer, downstream/emotion) freezes the upstream
and trains only what reads it: one weight per hidden state (the embedding output and every layer),
softmax-normalised and initialised to zero so every layer starts equal; the weighted sum of the hidden
states; a linear projection (projector_dim 256); mean pooling over the valid frames; a linear classifier.
The upstream runs in the features stage, which stores each layer either already mean-pooled (ssl_cache
pooled: projection and weighted sum are linear, so pooling first gives the same vector) or frame by frame
(ssl_cache frames), where the head pools the projected frames itself over the valid-frame mask the feature
file carries. s3prl's optional per-frame layer norm before the sum (`layer_norm`) does not commute with
pooling and needs the frames. `head: mlp` swaps the linear classifier for Linear -> ReLU -> Dropout -> Linear.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sdcaff.errors import ParamsError
from sdcaff.model import ModelOutput


@dataclasses.dataclass(frozen=True)
class SslHeadParams:
    """Head sizes; `layers` and `dim` must be the feature file's (N, layers, dim)."""

    layers: int = 13  # hidden states incl. the embedding output: a Base upstream's 12 layers + 1
    dim: int = 768  # a Base upstream's hidden size
    head: Literal["linear", "mlp"] = "linear"  # SUPERB's emotion task: linear
    mlp_hidden: int = 256  # the MLP head's hidden width
    dropout: float = 0.1  # the MLP head's dropout; the linear head has none
    projection: int | None = 256  # SUPERB emotion: projector_dim 256; null = the head reads the weighted sum
    layer_norm: bool = False  # s3prl Featurizer `normalize`: each hidden state layer-normed per frame (frames only)
    n_classes: int = 4  # neutral, sad, angry, happy

    def problems(self) -> list[str]:
        """Returns what is inconsistent in these params, one message per problem; empty when fine."""
        found = []
        for name in ("layers", "dim", "mlp_hidden", "n_classes"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.projection is not None and self.projection < 1:
            found.append(f"projection must be at least 1 or null, got {self.projection}")
        if not 0.0 <= self.dropout < 1.0:
            found.append(f"dropout must be in [0, 1), got {self.dropout}")
        return found


class SslHead(nn.Module):
    """Softmax-weighted sum of the pooled hidden states -> optional projection -> linear or MLP classifier."""

    def __init__(self, p: SslHeadParams):
        super().__init__()
        self.params = p
        # s3prl Featurizer: zeros, so the softmax starts uniform and no layer is preferred before training.
        self.layer_logits = nn.Parameter(torch.zeros(p.layers))
        self.projection = nn.Linear(p.dim, p.projection) if p.projection is not None else nn.Identity()
        width = p.projection if p.projection is not None else p.dim
        if p.head == "linear":
            self.head = nn.Linear(width, p.n_classes)
        else:
            self.head = nn.Sequential(nn.Linear(width, p.mlp_hidden), nn.ReLU(), nn.Dropout(p.dropout),
                                      nn.Linear(p.mlp_hidden, p.n_classes))

    @property
    def layer_weights(self) -> torch.Tensor:
        """Returns the current layer weights (layers,), softmax-normalised: non-negative, summing to 1."""
        return F.softmax(self.layer_logits, dim=0)

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> ModelOutput:
        """Returns ModelOutput for the upstream's hidden states from the loader: pooled, static (B, 1, layers,
        dim); or frame by frame, static (B, 1, layers x dim, T) with the valid-frame mask as dynamic's last
        column, dynamic (B, T, layers x dim + 1)."""
        p = self.params
        frame_level = static.dim() == 4 and static.shape[1] == 1 and static.shape[2] == p.layers * p.dim != p.layers
        if frame_level:
            fused = self.pool_frames(static, dynamic)
        else:
            fused = self.projection(self.layer_weights @ self.pooled(static))  # (B, projection or dim)
        logits = self.head(fused)
        # No center space and no gender head: the logits stand in for the emotion center vectors, as in
        # the other baselines, so the shared loss runs (with center_weight 0 and gender_weight 0).
        return ModelOutput(emotion=logits, gender=None, emotion_center=logits, gender_center=None, fused=fused)

    def pooled(self, static: torch.Tensor) -> torch.Tensor:
        """Returns the pooled hidden states (B, layers, dim) of static (B, 1, layers, dim), shapes checked."""
        p = self.params
        if static.dim() != 4 or static.shape[1] != 1 or static.shape[3] != p.dim:
            raise ValueError(f"static input must be pooled upstream hidden states (B, 1, layers, dim) = "
                             f"(B, 1, {p.layers}, {p.dim}) or frames (B, 1, layers x dim, T) = "
                             f"(B, 1, {p.layers * p.dim}, T), got {tuple(static.shape)}")
        if static.shape[2] != p.layers:
            # Another upstream (Large: 25 hidden states, Base: 13) or another feature set than the head's.
            raise ValueError(f"features hold {static.shape[2]} hidden states per utterance, but the head is "
                             f"configured for layers {p.layers}: the feature set and the model's `layers` "
                             f"must come from the same upstream")
        if p.layer_norm:
            raise ValueError("layer_norm normalises each frame and needs frame-level features: set the feature "
                             "set's ssl_cache to frames (docs/ssl.md)")
        return static.squeeze(1)

    def pool_frames(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """Returns the projected weighted sum mean-pooled over each utterance's valid frames, (B, projection or dim)."""
        p = self.params
        batch, _, width, frames = static.shape
        if dynamic.shape != (batch, frames, width + 1):
            raise ValueError(f"frame-level features need the valid-frame mask as dynamic's last column, dynamic "
                             f"(B, T, layers x dim + 1) = {(batch, frames, width + 1)}, got {tuple(dynamic.shape)}")
        hidden = static.reshape(batch, p.layers, p.dim, frames).transpose(2, 3)  # (B, layers, T, dim)
        if p.layer_norm:
            hidden = F.layer_norm(hidden, (p.dim,))
        weighted = torch.einsum("l,bltd->btd", self.layer_weights, hidden)
        projected = self.projection(weighted)  # (B, T, projection or dim)
        mask = dynamic[..., -1:]  # (B, T, 1): 1 on valid frames, 0 on padding
        return (projected * mask).sum(1) / mask.sum(1).clamp(min=1.0)


Params = SslHeadParams  # the model-module contract: `Params` and `build` (docs/adding-a-model.md)


def build(p: SslHeadParams) -> SslHead:
    """Returns a freshly initialised head (uniform layer weights); raises ParamsError if `p` is inconsistent."""
    problems = p.problems()
    if problems:
        raise ParamsError("ssl head params: " + "; ".join(problems))
    return SslHead(p)

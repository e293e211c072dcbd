"""External peer: SpeechBrain's ECAPA-TDNN on 80 log-mel filterbanks, as in its IEMOCAP recipe.

Built from speechbrain.lobes (no downloaded weights). The recipe (recipes/IEMOCAP/emotion_recognition/
hparams/train.yaml) normalises each sentence's mean, embeds with ECAPA-TDNN and scores with its cosine
Classifier under an additive angular margin loss. Here the cosines, times the recipe's scale, are
the logits of the shared cross-entropy training loop; the margin is left out (docs/fidelity.md).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.processing.features import InputNormalization
from torch import nn

from sdcaff.errors import ParamsError
from sdcaff.model import ModelOutput

RES2NET_SCALE = 8  # speechbrain ECAPA_TDNN default: each SE-Res2Net block splits its channels in 8


@dataclasses.dataclass(frozen=True)
class EcapaParams:
    """ECAPA-TDNN sizes; the defaults are the SpeechBrain IEMOCAP recipe's."""

    n_mels: int = 80  # recipe: Fbank n_mels 80
    channels: tuple[int, ...] = (512, 512, 512, 512, 1536)  # recipe: half the speaker-recognition sizes
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)  # recipe
    dilations: tuple[int, ...] = (1, 2, 3, 4, 1)  # recipe
    attention_channels: int = 64  # recipe
    lin_neurons: int = 96  # recipe: embedding size
    cosine_scale: float = 30.0  # recipe: AdditiveAngularMargin scale
    # Filterbank frames averaged in non-overlapping groups of this many before the TDNN (1 = the recipe's
    # 10 ms frames); 2 halves a CPU step (a 20 ms frame rate). A CPU budget knob of the quick profile.
    frame_stride: int = 1
    n_classes: int = 4  # neutral, sad, angry, happy

    def problems(self) -> list[str]:
        """Returns what is inconsistent in these params, one message per problem; empty when fine."""
        found = []
        if not len(self.channels) == len(self.kernel_sizes) == len(self.dilations) >= 3:
            found.append("channels, kernel_sizes and dilations need one entry per layer, at least 3 layers")
        if self.frame_stride < 1:
            found.append(f"frame_stride: must be at least 1, got {self.frame_stride}")
        if any(c % RES2NET_SCALE for c in self.channels[1:-1]):
            found.append(f"channels: the SE-Res2Net widths must be multiples of {RES2NET_SCALE}")
        return found


class Ecapa(nn.Module):
    """Sentence mean normalisation -> ECAPA-TDNN embedding -> cosine classifier."""

    def __init__(self, p: EcapaParams):
        super().__init__()
        self.params = p
        self.normalize = InputNormalization(norm_type="sentence", std_norm=False)  # recipe: mean_var_norm
        self.embedding = ECAPA_TDNN(
            p.n_mels, lin_neurons=p.lin_neurons, channels=list(p.channels), kernel_sizes=list(p.kernel_sizes),
            dilations=list(p.dilations), attention_channels=p.attention_channels,
        )
        self.classifier = Classifier(p.lin_neurons, out_neurons=p.n_classes)

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor) -> ModelOutput:
        """Returns ModelOutput for filterbanks static (B, 1, n_mels, T); `dynamic` is not read."""
        if static.dim() != 4 or static.shape[1:3] != (1, self.params.n_mels):
            raise ValueError(f"static input must be (B, 1, {self.params.n_mels}, T) filterbanks, "
                             f"got {tuple(static.shape)}")
        maps = static.squeeze(1)  # (B, n_mels, T)
        if self.params.frame_stride > 1:  # a last incomplete group of frames dropped
            maps = F.avg_pool1d(maps, self.params.frame_stride)
        frames = maps.transpose(1, 2)  # (B, T', n_mels)
        lengths = torch.ones(frames.shape[0], device=frames.device)  # every clip is the full 6 s
        embedding = self.embedding(self.normalize(frames, lengths))  # (B, 1, lin_neurons)
        logits = self.params.cosine_scale * self.classifier(embedding).squeeze(1)  # (B, n_classes)
        return ModelOutput(emotion=logits, gender=None, emotion_center=logits, gender_center=None,
                           fused=embedding.squeeze(1))


Params = EcapaParams  # the model-module contract: `Params` and `build` (docs/adding-a-model.md)


def build(p: EcapaParams) -> Ecapa:
    """Returns a freshly initialised ECAPA-TDNN classifier; raises ParamsError if `p` is inconsistent."""
    problems = p.problems()
    if problems:
        raise ParamsError("ecapa params: " + "; ".join(problems))
    return Ecapa(p)

"""The peers the suite races: Cross AFF written as its formula reads, and per-file feature paths (librosa, torchaudio).

Each peer computes what the suite computes, so a timing ratio compares the same work done two ways.
"""

from __future__ import annotations

import librosa
import numpy as np
import torch
import torchaudio

from sdcaff import mfcc as suite_mfcc

# ---------------------------------------------------------------------------------------------------
# Cross AFF, one formula per line, on the suite module's own weights (its state_dict).

BN_EPS = 1e-5  # torch.nn.BatchNorm2d default, the suite module's batch norm
# Positions inside the suite's nn.Sequential contexts: (conv, BN, conv, BN); ReLU sits between.
LOCAL_LAYERS = ("0", "1", "3", "4")  # conv, BN, ReLU, conv, BN
GLOBAL_LAYERS = ("1", "2", "4", "5")  # average pool first, then the same


def batch_norm(x: torch.Tensor, weights: dict, name: str, training: bool) -> torch.Tensor:
    """Returns (x - mean) / sqrt(var + eps) * gamma + beta per channel: (B, C, H, W) -> (B, C, H, W)."""
    if training:
        # Batch statistics over batch and positions, biased variance, as BatchNorm2d normalises with.
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = weights[f"{name}.running_mean"], weights[f"{name}.running_var"]
    gamma, beta = weights[f"{name}.weight"], weights[f"{name}.bias"]
    scale = gamma / torch.sqrt(var + BN_EPS)
    return (x - mean[:, None, None]) * scale[:, None, None] + beta[:, None, None]


def pointwise(x: torch.Tensor, weights: dict, name: str) -> torch.Tensor:
    """Returns a 1x1 convolution as a matrix product over channels: (B, C, H, W) -> (B, C', H, W)."""
    w = weights[f"{name}.weight"][:, :, 0, 0]
    return torch.einsum("oc,bchw->bohw", w, x) + weights[f"{name}.bias"][:, None, None]


def context(x: torch.Tensor, weights: dict, prefix: str, layers: tuple[str, ...], training: bool) -> torch.Tensor:
    """Returns BN(conv(ReLU(BN(conv(x))))) [aff]: (B, C, H, W) -> (B, C_out, H, W)."""
    conv1, norm1, conv2, norm2 = (f"{prefix}.{i}" for i in layers)
    hidden = torch.relu(batch_norm(pointwise(x, weights, conv1), weights, norm1, training))
    return batch_norm(pointwise(hidden, weights, conv2), weights, norm2, training)


def cross_aff(weights: dict, static: torch.Tensor, dynamic: torch.Tensor, training: bool) -> torch.Tensor:
    """Returns [mean(S * sig(L(S) + G(D))), mean(D * sig(L(D) + G(S)))]: (B, Cs, H, W), (B, Cd, 1, T) -> (B, Cs + Cd)."""
    static_global = context(static.mean(dim=(2, 3), keepdim=True), weights, "static_global", GLOBAL_LAYERS, training)
    dynamic_global = context(dynamic.mean(dim=(2, 3), keepdim=True), weights, "dynamic_global", GLOBAL_LAYERS,
                             training)
    # The swap: each branch's gate adds the OTHER branch's global context, broadcast over positions.
    static_gate = torch.sigmoid(context(static, weights, "static_local", LOCAL_LAYERS, training) + dynamic_global)
    dynamic_gate = torch.sigmoid(context(dynamic, weights, "dynamic_local", LOCAL_LAYERS, training) + static_global)
    return torch.cat([(static * static_gate).mean(dim=(2, 3)), (dynamic * dynamic_gate).mean(dim=(2, 3))], dim=1)


# ---------------------------------------------------------------------------------------------------
# The authors' feature path, one file at a time: energy + zero-crossing silence detector, pad/cut,
# librosa MFCC, librosa delta across coefficients (spec "Features").

SILENCE_FRAME = 2048  # authors' code: delete_silence(frame_length=2048)
SILENCE_HOP = 512  # authors' code: delete_silence(hop_length=512)


def silent_frames(y: np.ndarray) -> np.ndarray:
    """Returns the authors' labels, True = silent by their two thresholds: (1 + len(y) // hop,) bool."""
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=SILENCE_FRAME, hop_length=SILENCE_HOP)[0]
    # Amplitude: zero-padded centred frames under a square-root symmetric Hann window, |.| summed.
    padded = np.concatenate([np.zeros(SILENCE_FRAME // 2), y, np.zeros(SILENCE_FRAME // 2)])
    n_frames = int(np.ceil((len(padded) - SILENCE_FRAME) / SILENCE_HOP))
    index = np.arange(SILENCE_FRAME)[None, :] + SILENCE_HOP * np.arange(n_frames)[:, None]
    amp = np.abs(padded[index] * np.sqrt(np.hanning(SILENCE_FRAME))).sum(axis=1)
    zcr_high = max(zcr.max() * 0.8, zcr.min() * 2)
    amp_low = min(amp.min() * 10, amp.max() * 0.05 + amp.min() * 5.0, amp.max() * 0.1)
    # librosa frames one more when len(y) is a multiple of the hop. The authors allocate the labels
    # before cutting zcr to the energy frames, so that extra label stays 0 (speech) and is scanned too.
    label = np.zeros(zcr.shape[0], dtype=bool)
    zcr = zcr[: len(amp)]
    label[: len(amp)] = (zcr >= zcr_high) | (amp <= amp_low)
    return label


def remove_silence(y: np.ndarray) -> np.ndarray:
    """Returns y with the authors' silent stretches cut out, their edge arithmetic kept: (m,) as y."""
    silent = silent_frames(y)
    starts, ends = [], []
    # Frame pairs (i, i + 1): a silent-to-speech step opens a run, a speech-to-silent step closes one.
    for i in range(len(silent) - 1):
        if i == 0 and not silent[0]:
            starts.append(0)
        if silent[i] and not silent[i + 1]:
            starts.append(i)
        if not silent[i] and silent[i + 1]:
            ends.append(i)
    starts = [(i - 1) * SILENCE_HOP for i in starts]
    ends = [(i - 1) * SILENCE_HOP + SILENCE_FRAME for i in ends]
    if not starts or not ends:
        return y
    if len(ends) != len(starts):
        ends.append(len(y) - 1)
    pieces = []
    if len(starts) == 1:
        # The authors emit a lone run here and once more after the loop: it is kept twice.
        starts[0] = max(starts[0], 0)
        ends[0] = len(y) - 1 if ends[0] > len(y) else ends[0]
        pieces.append(y[starts[0] : ends[0]])
    for k in range(len(starts) - 1):
        starts[k] = max(starts[k], 0)
        ends[k] = len(y) - 1 if ends[k] > len(y) else ends[k]
        if ends[k] >= starts[k + 1]:
            starts[k + 1] = starts[k]  # overlapping runs merge into the next one
        else:
            pieces.append(y[starts[k] : ends[k]])
    pieces.append(y[starts[-1] : ends[-1]])
    return np.concatenate(pieces)


def pad_or_cut(y: np.ndarray, length: int) -> np.ndarray:
    """Returns y's first `length` samples, zeros appended when shorter: (length,) float32."""
    if len(y) >= length:
        return y[:length].astype(np.float32)
    return np.concatenate([y, np.zeros(length - len(y))]).astype(np.float32)


def librosa_features(clip: np.ndarray, sample_rate: int, pad_mode: str) -> tuple[np.ndarray, ...]:
    """Returns the authors' (mfcc, delta, delta-delta) of one clip, each (n_mfcc, frames) float32."""
    static = librosa.feature.mfcc(
        y=clip, sr=sample_rate, n_mfcc=suite_mfcc.N_MFCC, win_length=suite_mfcc.WIN_LENGTH,
        hop_length=suite_mfcc.HOP_LENGTH, pad_mode=pad_mode,
    )
    first = librosa.feature.delta(static, width=suite_mfcc.DELTA_WIDTH, axis=-2)
    return static, first, librosa.feature.delta(first, width=suite_mfcc.DELTA_WIDTH, axis=-2)


def torchaudio_transform(sample_rate: int, pad_mode: str) -> torchaudio.transforms.MFCC:
    """Returns torchaudio's MFCC module set to the suite's (librosa's) filterbank, window and hop."""
    return torchaudio.transforms.MFCC(
        sample_rate=sample_rate, n_mfcc=suite_mfcc.N_MFCC, norm="ortho", log_mels=False,
        melkwargs={
            "n_fft": suite_mfcc.N_FFT, "win_length": suite_mfcc.WIN_LENGTH, "hop_length": suite_mfcc.HOP_LENGTH,
            "n_mels": suite_mfcc.N_MELS, "f_min": suite_mfcc.F_MIN, "f_max": suite_mfcc.F_MAX,
            "mel_scale": "slaney", "norm": "slaney", "center": True, "pad_mode": pad_mode,
        },
    )


def torchaudio_features(clip: torch.Tensor, transform: torchaudio.transforms.MFCC) -> tuple[torch.Tensor, ...]:
    """Returns (mfcc, delta, delta-delta) of one (samples,) clip with stock torchaudio, each (n_mfcc, frames)."""
    static = transform(clip)
    # compute_deltas works along the last axis: transpose so it runs across coefficients, as the
    # authors' delta does. Its edges repeat the end values where librosa fits a line: same cost, not
    # the same edge numbers.
    first = torchaudio.functional.compute_deltas(static.T, win_length=suite_mfcc.DELTA_WIDTH)
    second = torchaudio.functional.compute_deltas(first, win_length=suite_mfcc.DELTA_WIDTH)
    return static, first.T, second.T

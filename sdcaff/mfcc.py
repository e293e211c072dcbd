"""Batched MFCC + deltas in torch, computing what the authors' librosa.feature.mfcc and delta computed."""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torchaudio

SAMPLE_RATE = 16000  # authors' code: IEMOCAP read at its native rate, MSP-IMPROV loaded with sr=16000
N_MFCC = 60  # authors' code: feature_extractor n_mfcc=60
N_FFT = 2048  # librosa.feature.mfcc default; the authors set only the window and hop
WIN_LENGTH = 768  # authors' code: feature_extractor win_length=768 (48 ms)
HOP_LENGTH = 384  # authors' code: feature_extractor hop_length=384 (24 ms) -> 251 frames per 6 s
N_MELS = 128  # librosa.feature.melspectrogram default
F_MIN = 0.0  # librosa.filters.mel default
F_MAX = 8000.0  # librosa.filters.mel default: sample_rate / 2
PAD_MODE = "reflect"  # librosa <= 0.8 stft default; zeros from 0.9.0: the authors' padding is undetermined (fidelity.md)
TOP_DB = 80.0  # librosa.power_to_db default: floor each utterance at its maximum - 80 dB
AMIN = 1e-10  # librosa.power_to_db default: power floor before the log
DELTA_WIDTH = 9  # librosa.feature.delta default: Savitzky-Golay window of 9 points
DELTA_AXIS = "coefficient"  # authors' code: librosa.feature.delta(mfcc, axis=-2), across coefficients

DELTA_AXES = {"coefficient": -2, "time": -1}  # axis of a (..., n_mfcc, frames) tensor


@functools.lru_cache(maxsize=8)
def _kernels(
    device: torch.device, sample_rate: int, n_mfcc: int, n_fft: int, win_length: int, n_mels: int,
    f_min: float, f_max: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns the Hann window (win_length,), mel matrix (n_mels, 1 + n_fft // 2) and DCT (n_mfcc, n_mels)."""
    # scipy.signal.get_window('hann', n, fftbins=True), as librosa uses: the periodic Hann window.
    window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
    # librosa.filters.mel defaults: Slaney mel scale and Slaney area normalisation.
    fbank = torchaudio.functional.melscale_fbanks(
        1 + n_fft // 2, f_min, f_max, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
    ).T
    # librosa.feature.mfcc: scipy DCT-II, orthonormal, first n_mfcc rows.
    dct = torchaudio.functional.create_dct(n_mfcc, n_mels, norm="ortho").T
    return tuple(t.to(device=device, dtype=torch.float32).contiguous() for t in (window, fbank, dct))


def mfcc(
    batch: torch.Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_mfcc: int = N_MFCC,
    n_fft: int = N_FFT,
    win_length: int = WIN_LENGTH,
    hop_length: int = HOP_LENGTH,
    n_mels: int = N_MELS,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
    pad_mode: Literal["reflect", "constant"] = PAD_MODE,
    top_db: float | None = TOP_DB,
) -> torch.Tensor:
    """Returns librosa-style MFCCs of (B, samples) audio: (B, n_mfcc, 1 + samples // hop_length) float32."""
    window, fbank, dct = _kernels(batch.device, sample_rate, n_mfcc, n_fft, win_length, n_mels, f_min, f_max)
    spectrum = torch.stft(
        batch.to(torch.float32), n_fft, hop_length=hop_length, win_length=win_length, window=window,
        center=True, pad_mode=pad_mode, return_complex=True,
    )
    power = spectrum.real.square() + spectrum.imag.square()  # (B, 1 + n_fft // 2, frames)
    # power_to_db with ref 1.0 (whose log is 0) and amin 1e-10.
    db = 10.0 * torch.log10(torch.matmul(fbank, power).clamp(min=AMIN))
    if top_db is not None:
        # The floor is per utterance: each row's own maximum, never the batch's.
        db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - top_db)
    return torch.matmul(dct, db)


def delta(x: torch.Tensor, axis: int, width: int = DELTA_WIDTH) -> torch.Tensor:
    """Returns librosa.feature.delta(x, width=width, order=1, axis=axis): same shape as x."""
    if width < 3 or width % 2 == 0 or width > x.shape[axis]:
        raise ValueError(f"delta width must be odd, at least 3 and at most {x.shape[axis]}, got {width}")
    # savgol_filter(polyorder 1, deriv 1) is the least-squares slope over `width` points: taps n / sum(n^2).
    half = width // 2
    taps = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    taps = taps / taps.square().sum()
    moved = x.movedim(axis, -1)
    n = moved.shape[-1]
    # A sum of shifted copies rather than a matmul: elementwise, so a row's result never depends on
    # the batch it was computed in.
    slope = sum(taps[k] * moved[..., k : n - width + 1 + k] for k in range(width))  # (..., n - width + 1)
    # mode 'interp' fits one line to the first (last) `width` points for the edge positions; a line's
    # slope is the same everywhere, so each edge repeats the first (last) full-window value.
    edges = (*slope.shape[:-1], half)
    full = torch.cat([slope[..., :1].expand(edges), slope, slope[..., -1:].expand(edges)], dim=-1)
    return full.movedim(-1, axis)


def extract(
    batch: torch.Tensor,
    *,
    delta_axis: Literal["coefficient", "time"] = DELTA_AXIS,
    delta_width: int = DELTA_WIDTH,
    **mfcc_options,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (mfcc, delta, delta-delta) of (B, samples) audio, each (B, n_mfcc, frames); options go to mfcc()."""
    static = mfcc(batch, **mfcc_options)
    axis = DELTA_AXES[delta_axis]
    first = delta(static, axis, delta_width)
    # authors' code: delta-delta is the same first-order delta applied to the delta.
    return static, first, delta(first, axis, delta_width)

"""Silence removal for one utterance: the authors' energy + zero-crossing detector, a plain trim, or none."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

FRAME_LENGTH = 2048  # authors' code: delete_silence(frame_length=2048)
HOP_LENGTH = 512  # authors' code: delete_silence(hop_length=512)
ZERO_THRESHOLD = 1e-10  # librosa.zero_crossings default: |y| <= 1e-10 counts as zero, and zero as positive
TRIM_TOP_DB = 60.0  # librosa.effects.trim default: frames 60 dB below the loudest are silence
TRIM_AMIN = 1e-10  # librosa.amplitude_to_db default amin 1e-5, squared: the power floor


def zero_crossing_rate(y: np.ndarray, frame_length: int = FRAME_LENGTH, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Returns librosa.feature.zero_crossing_rate(y)[0] (centred, edge-padded): (1 + len(y) // hop_length,) float64."""
    half = frame_length // 2
    padded = np.pad(y, half, mode="edge")
    negative = padded < -ZERO_THRESHOLD
    # crossed[j] = 1 when samples j and j + 1 differ in sign; a frame holds frame_length - 1 such pairs,
    # and librosa divides by frame_length (its first sample has no predecessor and counts as no crossing).
    crossed = np.concatenate([[0], np.cumsum(negative[1:] != negative[:-1])])
    starts = np.arange(1 + (len(padded) - frame_length) // hop_length) * hop_length
    return (crossed[starts + frame_length - 1] - crossed[starts]) / frame_length


def frame_amplitude(y: np.ndarray, frame_length: int = FRAME_LENGTH, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Returns each zero-padded centred frame's summed |sqrt-Hann-windowed sample|: (ceil(len(y) / hop),) float64."""
    half = frame_length // 2
    padded = np.concatenate([np.zeros(half), y.astype(np.float64), np.zeros(half)])
    # authors' code: ceil((len(padded) - frame_length) / hop) frames, one fewer than librosa's framing
    # gives when len(y) is a multiple of the hop.
    n_frames = -(-len(y) // hop_length)
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length][:n_frames]
    # authors' code: np.sqrt(np.hanning(frame_length)), the symmetric Hann window.
    window = np.sqrt(np.hanning(frame_length))
    return np.abs(frames * window).sum(axis=1)


def authors_silent_frames(y: np.ndarray, frame_length: int = FRAME_LENGTH, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Returns the authors' silence labels (True = silent), one per ZCR frame: (1 + len(y) // hop_length,) bool."""
    zcr = zero_crossing_rate(y, frame_length, hop_length)
    amp = frame_amplitude(y, frame_length, hop_length)
    # authors' code: the thresholds are taken before the frame counts are reconciled, so the extra
    # zero-crossing frame of a hop-multiple length still sets them.
    zcr_high = max(zcr.max() * 0.8, zcr.min() * 2)
    amp_low = min(amp.min() * 10, amp.max() * 0.05 + amp.min() * 5.0, amp.max() * 0.1)
    # authors' code: label = np.zeros(zcr.shape[0]) is allocated before zcr is cut to the energy frames,
    # so a hop-multiple length keeps one label more than frames, never set: an extra "speech" label that
    # can open a last run. They cut zcr only when its length exceeds amp[0] (a value, not a length: a typo)
    # and otherwise return None, which crashes their pipeline; every run that finished cut it.
    silent = np.zeros(len(zcr), dtype=bool)
    silent[: len(amp)] = (zcr[: len(amp)] >= zcr_high) | (amp <= amp_low)
    return silent


def authors_segments(
    silent: np.ndarray, num_samples: int, frame_length: int = FRAME_LENGTH, hop_length: int = HOP_LENGTH
) -> list[tuple[int, int]] | None:
    """Returns the (start, end) sample slices the authors' code concatenates, or None where it keeps the input."""
    speech = ~silent
    # authors' code scans label pairs (i, i + 1) for i < n - 1, so the last label never opens or closes a
    # run on its own and a one-label utterance has no runs at all.
    opens = np.flatnonzero(silent[:-1] & speech[1:])  # i = the last silent frame before speech
    closes = np.flatnonzero(speech[:-1] & silent[1:])  # i = the last speech frame
    if len(silent) > 1 and speech[0]:
        opens = np.concatenate([[0], opens])
    # authors' code: (i - 1) * hop is the left edge of frame i + 1, the first speech frame (centred frame
    # k spans k * hop - frame / 2 onwards); the end, (i - 1) * hop + frame, lies one hop past the right
    # edge of frame i, the last speech frame.
    starts = [(int(i) - 1) * hop_length for i in opens]
    ends = [(int(i) - 1) * hop_length + frame_length for i in closes]
    # authors' code: no run opened, or none closed (the only speech runs to the end): input unchanged.
    if not starts or not ends:
        return None
    # authors' code: a last run that never closes ends one sample short of the end.
    if len(ends) != len(starts):
        ends.append(num_samples - 1)

    def clamp(k: int) -> None:
        # authors' code: a start of -hop (speech from frame 0 or 1) becomes 0; an end past the
        # signal becomes its last index (so that sample is dropped); applied only where they loop.
        if starts[k] == -hop_length:
            starts[k] = 0
        if ends[k] > num_samples:
            ends[k] = num_samples - 1

    segments = []
    if len(starts) == 1:
        clamp(0)
        # authors' code: a single run is emitted here and again after the loop below: it appears twice.
        segments.append((starts[0], ends[0]))
    for k in range(len(starts) - 1):
        clamp(k)
        if ends[k] >= starts[k + 1]:
            # authors' code: overlapping runs merge; the next run inherits this start.
            starts[k + 1] = starts[k]
        else:
            segments.append((starts[k], ends[k]))
    # authors' code: the last run is emitted without clamping its end (slicing stops at the signal's end).
    segments.append((starts[-1], ends[-1]))
    return segments


def trim(y: np.ndarray, top_db: float = TRIM_TOP_DB, frame_length: int = FRAME_LENGTH,
         hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Returns y without its leading and trailing frames quieter than top_db below the loudest: (m,) as y."""
    # The same rule as librosa.effects.trim, in torch: centred frames zero-padded, mean power per frame,
    # dB against the loudest frame; keep from the first loud frame's start to the last loud frame's end.
    signal = torch.from_numpy(y).double()
    padded = torch.nn.functional.pad(signal, (frame_length // 2, frame_length // 2))
    power = padded.unfold(0, frame_length, hop_length).square().mean(dim=1)
    db = 10 * torch.log10(power.clamp(min=TRIM_AMIN)) - 10 * torch.log10(power.max().clamp(min=TRIM_AMIN))
    loud = torch.nonzero(db > -top_db).flatten()
    if len(loud) == 0:
        return y[:0]
    start = int(loud[0]) * hop_length
    end = min(len(y), (int(loud[-1]) + 1) * hop_length)
    return y[start:end]


def remove_silence(y: np.ndarray, method: Literal["authors", "trim", "none"] = "authors",
                   trim_top_db: float = TRIM_TOP_DB) -> np.ndarray:
    """Returns y with its silence removed by `method`: (m,) same dtype as y (m may exceed len(y) for `authors`)."""
    if method == "none":
        return y
    if method == "trim":
        return trim(y, trim_top_db)
    if method != "authors":
        raise ValueError(f"unknown silence method {method!r}; known: authors, trim, none")
    segments = authors_segments(authors_silent_frames(y), len(y))
    if segments is None:
        return y
    return np.concatenate([y[start:end] for start, end in segments])

"""Wav headers and samples, checked: every defect is an AudioError that names the file."""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import numpy as np

from sdcaff.errors import AudioError

# WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_EXTENSIBLE (subformat checked below)
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


@dataclasses.dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    bits: int
    encoding: str  # "pcm" or "float"
    num_samples: int  # per channel


def inspect(path: str | os.PathLike) -> WavInfo:
    """Returns the header facts of a RIFF/WAVE file; raises AudioError on any defect."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if size == 0:
                raise AudioError(f"{path}: empty file (0 bytes)")
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise AudioError(f"{path}: not a RIFF/WAVE file (starts with {head[:12]!r})")
            fmt = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    raise AudioError(f"{path}: truncated: no data chunk found in {size} bytes")
                cid, clen = struct.unpack("<4sI", chunk)
                left = size - f.tell()
                if cid != b"data" and clen > left:
                    raise AudioError(
                        f"{path}: truncated or corrupt: {cid.decode('latin-1')!r} chunk declares {clen} bytes, "
                        f"{left} follow"
                    )
                if cid == b"fmt ":
                    body = f.read(clen)
                    if len(body) < 16:
                        raise AudioError(f"{path}: truncated fmt chunk ({len(body)} of {clen} bytes)")
                    tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", body[:16])
                    if tag == _EXTENSIBLE and len(body) >= 26:
                        tag = struct.unpack("<H", body[24:26])[0]
                    if tag not in (_PCM, _FLOAT):
                        raise AudioError(f"{path}: unsupported wav encoding (format tag {tag}); need PCM or float")
                    if channels < 1 or rate < 1 or block < 1:
                        raise AudioError(f"{path}: corrupt fmt chunk (channels={channels}, rate={rate})")
                    _check_sample_layout(path, tag, channels, block, bits)
                    fmt = (tag, channels, rate, block, bits)
                    if clen % 2:
                        f.read(1)
                elif cid == b"fact":
                    # Float and compressed wavs carry one: a 4-byte frame count. libsndfile cannot open a file
                    # whose fact chunk is shorter, and says only "No 'data' chunk marker".
                    if clen < 4:
                        raise AudioError(f"{path}: malformed fact chunk ({clen} bytes; it holds a 4-byte sample count)")
                    f.seek(clen + (clen % 2), os.SEEK_CUR)
                elif cid == b"data":
                    if fmt is None:
                        raise AudioError(f"{path}: data chunk before fmt chunk")
                    tag, channels, rate, block, bits = fmt
                    available = size - f.tell()
                    if clen > available:
                        raise AudioError(
                            f"{path}: truncated: header declares {clen} data bytes, file holds {available}"
                        )
                    if clen == 0:
                        raise AudioError(f"{path}: no audio samples (empty data chunk)")
                    return WavInfo(rate, channels, bits, "pcm" if tag == _PCM else "float", clen // block)
                else:
                    f.seek(clen + (clen % 2), os.SEEK_CUR)
    except FileNotFoundError as exc:
        raise AudioError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise AudioError(f"{path}: is a directory, not a wav file") from exc
    except PermissionError as exc:
        raise AudioError(f"{path}: permission denied") from exc


def _check_sample_layout(path: Path, tag: int, channels: int, block: int, bits: int) -> None:
    """Raises AudioError when format, sample width and block align disagree (libsndfile cannot open such a file)."""
    if tag == _FLOAT and bits not in (32, 64):
        raise AudioError(f"{path}: float format (tag 3) with {bits}-bit samples; float wavs hold 32- or 64-bit samples")
    if tag == _PCM and not 1 <= bits <= 32:
        raise AudioError(f"{path}: PCM with {bits}-bit samples; need 1 to 32 bits")
    # Bytes per frame: every channel's sample, each padded to whole bytes (12-bit PCM takes 2).
    expected = channels * ((bits + 7) // 8)
    if block != expected:
        # libsndfile recomputes the frame size and reads on; the frame count here would be wrong.
        raise AudioError(
            f"{path}: corrupt fmt chunk: block align {block} does not fit {channels} channel(s) of {bits}-bit "
            f"samples (expected {expected})"
        )


def read(path: str | os.PathLike, mono: str = "error") -> tuple[np.ndarray, int]:
    """Returns (float32 samples: PCM scaled to [-1, 1], float as stored, sample rate); checks the header first.

    mono: "error" refuses multi-channel audio; "mean" averages the channels.
    """
    import soundfile

    info = inspect(path)
    if info.channels > 1 and mono == "error":
        raise AudioError(f"{path}: {info.channels} channels; the corpora are mono")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise AudioError(f"{path}: cannot decode: {exc}") from exc
    samples = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return np.ascontiguousarray(samples, dtype=np.float32), int(rate)

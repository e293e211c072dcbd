"""Silence removal: ZCR and trim against librosa, the authors' detector against a loop re-writing of their code."""

from __future__ import annotations

import sys
from pathlib import Path

import librosa
import numpy as np
import pytest

from sdcaff import silence
from sdcaff.data import synthetic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reference  # noqa: E402  (benchmarks/reference.py: the authors' path the benchmarks race)

RATE = 16000
HOP, FRAME = 512, 2048


def tone(seconds: float, amplitude: float = 0.5, hz: float = 200.0) -> np.ndarray:
    """Returns a voiced-like stretch: loud, few zero crossings: (seconds * RATE,) float32."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def hiss(seconds: float, rng: np.random.Generator, amplitude: float = 1e-3) -> np.ndarray:
    """Returns a silence-like stretch: faint white noise, many zero crossings: (seconds * RATE,) float32."""
    return (amplitude * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


def reference_remove(y: np.ndarray) -> np.ndarray:
    """Returns y after the authors' detector, re-written line by line in their numpy (their quirks included)."""
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=FRAME, hop_length=HOP)[0]
    padded = np.concatenate([np.zeros(FRAME // 2), y, np.zeros(FRAME // 2)])
    n = int(np.ceil((len(padded) - FRAME) / HOP))
    window = np.sqrt(np.hanning(FRAME))
    amp = np.array([np.sum(np.abs(padded[i * HOP : i * HOP + FRAME] * window)) for i in range(n)])
    zcr_high = max(0.8 * max(zcr), 2 * min(zcr))
    amp_low = min(10 * min(amp), 0.05 * max(amp) + 5 * min(amp), 0.1 * max(amp))
    # As theirs: the labels are allocated before zcr is cut, one per ZCR frame, 0 = speech.
    label = np.zeros(zcr.shape[0])
    zcr = zcr[:n]
    for i in range(len(zcr)):
        if zcr[i] >= zcr_high or amp[i] <= amp_low:
            label[i] = 1
    silent = [bool(v) for v in label]
    starts, ends = [], []
    for i in range(len(silent) - 1):
        if i == 0 and not silent[0]:
            starts.append(-HOP)
        if silent[i] and not silent[i + 1]:
            starts.append((i - 1) * HOP)
        if not silent[i] and silent[i + 1]:
            ends.append((i - 1) * HOP + FRAME)
    if not starts or not ends:
        return y
    if len(ends) < len(starts):
        ends.append(len(y) - 1)
    pieces = []
    if len(starts) == 1:
        s, e = max(starts[0], 0), (len(y) - 1 if ends[0] > len(y) else ends[0])
        return np.concatenate([y[s:e], y[s:e]])
    s = max(starts[0], 0)
    for k in range(len(starts) - 1):
        e = len(y) - 1 if ends[k] > len(y) else ends[k]
        if e >= starts[k + 1]:
            continue  # merged: the run keeps start s
        pieces.append(y[s:e])
        s = starts[k + 1]
    pieces.append(y[s : ends[-1]])
    return np.concatenate(pieces)


def crafted() -> dict[str, np.ndarray]:
    """Returns named signals covering each branch of the detector."""
    rng = np.random.default_rng(987654)
    return {
        "silence-speech-silence": np.concatenate([hiss(1, rng), tone(2), hiss(1, rng)]),
        "two-segments": np.concatenate([hiss(0.5, rng), tone(1), hiss(1, rng), tone(0.7, hz=150), hiss(0.5, rng)]),
        "close-segments-merge": np.concatenate([hiss(0.5, rng), tone(1), hiss(0.15, rng), tone(1), hiss(0.5, rng)]),
        "speech-first": np.concatenate([tone(1), hiss(1, rng), tone(1), hiss(0.5, rng)]),
        "trailing-speech": np.concatenate([hiss(1, rng), tone(2)]),
        "trailing-after-segment": np.concatenate([hiss(0.5, rng), tone(1), hiss(1, rng), tone(1)]),
        "all-silence": hiss(2, rng),
        "hop-multiple": np.concatenate([hiss(1, rng), tone(1), hiss(1, rng)])[: 90 * HOP],
        "end-inside-frame": np.concatenate([hiss(0.5, rng), tone(1), hiss(0.05, rng)]),
        "one-frame": tone(0.02),
    }


@pytest.mark.parametrize("length", [100, 512, 4096, 5000, 16000 * 2 + 7])
def test_zero_crossing_rate_matches_librosa(length):
    rng = np.random.default_rng(length)
    y = rng.standard_normal(length).astype(np.float32)
    y[::7] = 0.0  # exact zeros count as positive
    y[3::11] = -0.0
    y[5::13] = -1e-11  # within librosa's 1e-10 zero threshold
    y[: length // 4] = np.abs(y[: length // 4])  # a crossing-free stretch at the edge padding
    expected = librosa.feature.zero_crossing_rate(y, frame_length=FRAME, hop_length=HOP)[0]
    got = silence.zero_crossing_rate(y)
    assert got.shape == (1 + length // HOP,)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("length", [700, 1024, 5000])
def test_frame_amplitude_counts_and_values(length):
    y = np.random.default_rng(1).standard_normal(length).astype(np.float32)
    padded = np.concatenate([np.zeros(FRAME // 2), y, np.zeros(FRAME // 2)])
    window = np.sqrt(np.hanning(FRAME))
    n = -(-length // HOP)
    expected = [np.abs(padded[i * HOP : i * HOP + FRAME] * window).sum() for i in range(n)]
    np.testing.assert_allclose(silence.frame_amplitude(y), expected, rtol=1e-12)


@pytest.mark.reliability("fidelity")
@pytest.mark.parametrize("name", list(crafted()))
def test_authors_detector_matches_loop_reading(name):
    y = crafted()[name]
    np.testing.assert_array_equal(silence.remove_silence(y, "authors"), reference_remove(y))


@pytest.mark.reliability("fidelity")
def test_one_segment_is_emitted_twice():
    # 4 s is 125 hops: cut 100 samples of the silent tail so that no extra label opens a tail slice.
    y = crafted()["silence-speech-silence"][:-100]
    out = silence.remove_silence(y)
    half = len(out) // 2
    np.testing.assert_array_equal(out[:half], out[half:])
    # The run starts at the left edge of the first frame that overlaps the tone (1 s .. 3 s) and ends one
    # hop past the right edge of the last one.
    segments = silence.authors_segments(silence.authors_silent_frames(y), len(y))
    (start, end), repeat = segments
    assert repeat == (start, end)
    assert RATE - FRAME < start <= RATE and 3 * RATE + HOP <= end < 3 * RATE + FRAME + HOP


def test_trailing_speech_returns_input_unchanged():
    y = crafted()["trailing-speech"]
    assert silence.authors_segments(silence.authors_silent_frames(y), len(y)) is None
    assert silence.remove_silence(y) is y


def test_two_segments_drop_the_gap_and_merge_close_runs():
    signals = crafted()
    two = silence.authors_segments(silence.authors_silent_frames(signals["two-segments"]), len(signals["two-segments"]))
    assert len(two) == 2 and two[0][1] < two[1][0]
    assert len(silence.remove_silence(signals["two-segments"])) < len(signals["two-segments"])
    close = signals["close-segments-merge"]
    merged = silence.authors_segments(silence.authors_silent_frames(close), len(close))
    # Two runs 2 silent frames apart overlap once widened: one slice, emitted once (not twice).
    assert len(merged) == 1
    assert len(silence.remove_silence(close)) == merged[0][1] - merged[0][0]


@pytest.mark.parametrize(
    "labels, num_samples, expected",
    [
        # frames 2-4 and 6-8 speak, one silent frame between: widened runs overlap and merge.
        ("__SSS_SSS___", 6000, [(0, 5632)]),
        # speech from frame 0 (start -hop -> 0); the last run never closes: it ends at num_samples - 1.
        ("SS______SS", 5000, [(0, 2048), (3072, 4999)]),
        # one run whose end passes the signal: clamped to the last index, and emitted twice.
        ("_SSS_", 2100, [(0, 2099), (0, 2099)]),
        # five silent frames between runs: two slices; the last end passes the signal and is not clamped.
        ("_SS_____SS_", 6000, [(0, 2560), (3072, 6144)]),
        # no closed run, or no run at all: the input is kept.
        ("___SSS", 3000, None),
        ("S", 300, None),
    ],
)
def test_authors_segments_on_hand_labels(labels, num_samples, expected):
    silent = np.array([c == "_" for c in labels])
    assert silence.authors_segments(silent, num_samples) == expected


def test_speech_from_the_first_frame_starts_at_zero():
    y = crafted()["speech-first"]
    segments = silence.authors_segments(silence.authors_silent_frames(y), len(y))
    assert segments[0][0] == 0


def test_unclosed_last_run_ends_one_sample_short():
    y = crafted()["trailing-after-segment"]
    segments = silence.authors_segments(silence.authors_silent_frames(y), len(y))
    assert len(segments) == 2 and segments[-1][1] == len(y) - 1


def rendered(num_samples: int) -> np.ndarray:
    """Returns a neutral synthetic IEMOCAP-like utterance, silent at both ends: (num_samples,) float32."""
    seed, corpus = 987654, "iemocap"
    voice = synthetic.speaker_voice(seed, corpus, "Ses01F", "F")
    rng = synthetic.rng_for(seed, corpus, "utt", "audio")
    speech, _ = synthetic.render_speech(voice, synthetic.utterance_style(voice, "neu", rng), num_samples, RATE, rng)
    return synthetic.iemocap_channel(speech, RATE, rng).astype(np.float32)


@pytest.mark.reliability("fidelity")
def test_hop_multiple_length_keeps_an_extra_speech_label():
    y = crafted()["hop-multiple"]
    assert len(silence.zero_crossing_rate(y)) == len(silence.frame_amplitude(y)) + 1
    silent = silence.authors_silent_frames(y)
    assert len(silent) == len(y) // HOP + 1
    # The extra label is never set (speech): after the silent last frame it opens a run that never closes,
    # which ends at the last index: one slice from the left edge of the next-to-last frame, 1023 samples.
    assert silent[-2] and not silent[-1]
    segments = silence.authors_segments(silent, len(y))
    assert segments[-1] == ((len(y) // HOP - 2) * HOP, len(y) - 1)
    assert len(segments) == 2 and segments[0][1] < segments[1][0]


@pytest.mark.reliability("fidelity")
def test_rendered_utterance_of_192000_samples_keeps_168447():
    # 375 hops exactly; the utterance ends in silence. Dropping the extra label (the suite before issue 12)
    # kept 167,424 samples; the authors' extra speech label appends the 1,023-sample tail slice.
    y = rendered(192_000)
    out = silence.remove_silence(y)
    assert len(out) == 168_447
    np.testing.assert_array_equal(out, reference_remove(y))
    np.testing.assert_array_equal(out[-1023:], y[190_976:191_999])


@pytest.mark.reliability("fidelity")
@pytest.mark.parametrize("kind", ["rendered", "tones"])
@pytest.mark.parametrize("num_samples", [150 * HOP, 150 * HOP + 1, 375 * HOP - 300])
def test_authors_detector_matches_their_code_at_and_off_hop_multiples(kind, num_samples):
    if kind == "rendered":
        y = rendered(num_samples)
    else:
        rng = np.random.default_rng(num_samples)
        parts = [hiss(0.5, rng), tone(1), hiss(0.6, rng), tone(0.8, hz=150), hiss(9, rng)]
        y = np.concatenate(parts)[:num_samples]
    out = silence.remove_silence(y)
    np.testing.assert_array_equal(out, reference_remove(y))
    np.testing.assert_array_equal(reference.remove_silence(y), out)
    # Both end in silence: at a hop multiple the extra label appends the tail slice; off one, the labels
    # and the energy frames are as many and no slice reaches the end.
    segments = silence.authors_segments(silence.authors_silent_frames(y), len(y))
    tail = ((len(y) // HOP - 2) * HOP, len(y) - 1)
    assert (segments[-1] == tail) == (num_samples % HOP == 0)
    assert (segments[-1][1] == len(y) - 1) == (num_samples % HOP == 0)


@pytest.mark.parametrize("name", ["silence-speech-silence", "two-segments", "trailing-speech", "all-silence"])
@pytest.mark.parametrize("top_db", [20.0, 60.0])
def test_trim_matches_librosa(name, top_db):
    y = crafted()[name]
    expected, _ = librosa.effects.trim(y, top_db=top_db, frame_length=FRAME, hop_length=HOP)
    np.testing.assert_array_equal(silence.remove_silence(y, "trim", trim_top_db=top_db), expected)


def test_none_keeps_the_signal_and_unknown_method_fails():
    y = crafted()["two-segments"]
    assert silence.remove_silence(y, "none") is y
    with pytest.raises(ValueError, match="unknown silence method 'vad'"):
        silence.remove_silence(y, "vad")

"""Stage synth: IEMOCAP- and MSP-IMPROV-layout corpora of speech-like audio, emotion carried by prosody and voice."""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import multiprocessing
import os
import wave
from pathlib import Path

import numpy as np
from scipy import signal
from tqdm import tqdm

from sdcaff import params as params_module
from sdcaff.data import corpora
from sdcaff.errors import SdcaffError
from sdcaff.files import atomic_dir, ensure_outside

log = logging.getLogger(__name__)

EPOCH = 1672531200  # every file's and folder's mtime (2023-01-01 00:00 UTC): fingerprints see no build time
# synth replaces its output folder whole, so it marks every folder it writes and replaces only a marked one.
# The marker is part of the corpus (the fingerprint lists it); it holds no path or time, so bytes stay the same.
MARKER = ".sdcaff-synthetic"
MARKER_HEAD = "written by `sdcaff synth`"

# ---------------------------------------------------------------------------------------------
# The real corpora's shapes (spec/corpora.md unless a comment says otherwise)
# ---------------------------------------------------------------------------------------------

IEMOCAP_RATE = 16000  # Hz, as the release
MSP_RATE = 44100  # Hz: MSP-IMPROV audio is not 16 kHz; the features stage resamples it

# The 151 dialogs of IEMOCAP_full_release (its sentences/wav folder names), per session.
_SCRIPTS = ("script01_1", "script01_2", "script01_3", "script02_1", "script02_2", "script03_1", "script03_2")
_IMPROS = tuple(f"impro0{i}" for i in range(1, 9))
IEMOCAP_DIALOGS: dict[int, tuple[str, ...]] = {
    1: tuple(f"Ses01{g}_{d}" for g in "FM" for d in _IMPROS[:7] + _SCRIPTS),  # session 1 has no impro08
    2: tuple(f"Ses02{g}_{d}" for g in "FM" for d in _IMPROS + _SCRIPTS),
    3: tuple(f"Ses03F_{d}" for d in _IMPROS + _SCRIPTS)
    + tuple(f"Ses03M_{d}" for d in ("impro01", "impro02", "impro03", "impro04", "impro05a", "impro05b",
                                    "impro06", "impro07", "impro08a", "impro08b") + _SCRIPTS),
    4: tuple(f"Ses04{g}_{d}" for g in "FM" for d in _IMPROS + _SCRIPTS),
    5: tuple(f"Ses05F_{d}" for d in _IMPROS + _SCRIPTS)
    + tuple(f"Ses05M_{d}" for d in _IMPROS + _SCRIPTS + ("script01_1b",)),
}
IEMOCAP_SESSION_WAVS = (1819, 1811, 2136, 2103, 2170)  # wavs per session; 10,039 in all
IEMOCAP_LABELS = {  # whole corpus, summary-line label counts
    "neu": 1708, "hap": 595, "exc": 1041, "sad": 1084, "ang": 1103, "fru": 1849,
    "sur": 107, "fea": 40, "dis": 2, "oth": 3, "xxx": 2507,
}
IEMOCAP_IMPROVISED_WAVS = 4784  # commonly reported improvised share of the 10,039 (scripted 5,255)
IEMOCAP_IMPROVISED_MAIN = {"neu": 1099, "hap": 284, "exc": 663, "ang": 289, "sad": 608}
IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"

MSP_CONDITIONS = {"T": 652, "R": 620, "S": 4381, "P": 2785}  # target-improvised, read, other-improvised, natural
MSP_SESSIONS = 6
MSP_SCENARIOS = 20  # S01..S20, each played with the four target emotions A H N S
# Consensus labels: the 4-class counts are the real ones; the 640 others we split into X, O and
# utterances the evaluation file lacks (the split is our guess, see docs/fidelity.md).
MSP_CONSENSUS = {"N": 3477, "H": 2644, "S": 885, "A": 792, "X": 400, "O": 160, "": 80}
# How much more often the consensus equals the scenario's target than chance allows, per condition:
# the target sentences (R, T) are acted for the target; the free parts (S, P) drift towards neutral.
MSP_TARGET_AGREEMENT = {"R": 20.0, "T": 14.0, "S": 8.0, "P": 5.0}

# ---------------------------------------------------------------------------------------------
# Emotions as prosody and voice quality (our design; the numbers follow the direction of the
# acoustic-correlates literature: arousal raises F0, range, energy, rate and brightness)
# ---------------------------------------------------------------------------------------------

STYLE_DIMS = (
    "f0_st",     # F0 level offset, semitones
    "range_st",  # accent size, semitones
    "gain_db",   # loudness offset, dB
    "log_rate",  # log of the speaking-rate factor
    "log_tilt",  # log of the glottal low-pass corner factor: higher = brighter, less spectral tilt
    "jitter",    # period jitter, fraction of the period (standard deviation)
    "shimmer",   # pulse amplitude jitter, fraction
    "breath",    # aspiration noise added to the speaker's own, relative to the pulse train
    "f1_shift",  # relative F1 shift: wider jaw opening under arousal
    "final_st",  # phrase-final F0 movement, semitones
)
EMOTIONS = {  # class means, one value per STYLE_DIMS entry
    "neu": (0.0, 2.0, 0.0, 0.00, 0.00, 0.010, 0.05, 0.00, 0.00, -1.5),
    "hap": (2.5, 3.6, 2.5, 0.08, 0.20, 0.012, 0.06, 0.00, 0.05, -1.0),
    "exc": (4.0, 4.8, 5.0, 0.15, 0.40, 0.012, 0.06, -0.02, 0.08, -0.5),
    "ang": (3.0, 3.8, 7.0, 0.08, 0.75, 0.020, 0.08, -0.03, 0.10, -2.5),
    "sad": (-2.0, 1.0, -5.0, -0.22, -0.45, 0.022, 0.09, 0.12, -0.05, -3.0),
    "fru": (1.0, 2.6, 2.5, 0.02, 0.35, 0.016, 0.07, 0.02, 0.03, -2.0),
    "sur": (5.0, 5.5, 3.0, 0.05, 0.20, 0.012, 0.06, 0.03, 0.07, 4.0),
    "fea": (4.0, 3.0, -1.0, 0.15, -0.10, 0.030, 0.10, 0.10, 0.00, 1.0),
    "dis": (-1.0, 2.0, 1.0, -0.10, 0.10, 0.016, 0.07, 0.04, -0.02, -2.0),
    "oth": (0.5, 2.4, 0.5, 0.00, 0.05, 0.012, 0.06, 0.03, 0.00, -1.0),
}
NO_AGREEMENT = ("neu", "fru", "hap", "exc", "ang", "sad")  # what an `xxx` utterance blends two of
# Spread of each style value around the class mean: per speaker and class (idiosyncrasy), and per
# utterance. They make classes overlap; docs/fidelity.md records the accuracies they give.
SPEAKER_SD = np.array((2.0, 1.35, 3.4, 0.12, 0.37, 0.005, 0.025, 0.05, 0.05, 1.35))
UTTERANCE_SD = np.array((2.1, 1.3, 3.2, 0.12, 0.36, 0.005, 0.026, 0.05, 0.05, 1.6))
STYLE_FLOOR = np.array((-12.0, 0.3, -20.0, -0.7, -1.5, 0.002, 0.01, 0.0, -0.2, -8.0))

# Adult male F1-F3 (Hz), Peterson & Barney (1952) averages, for i ɪ ɛ æ ɑ ɔ ʊ u ʌ; F4, F5 fixed.
VOWELS = np.array([
    (270, 2290, 3010), (390, 1990, 2550), (530, 1840, 2480), (660, 1720, 2410), (730, 1090, 2440),
    (570, 840, 2410), (440, 1020, 2240), (300, 870, 2240), (640, 1190, 2390),
], dtype=float)
HIGH_FORMANTS = (3500.0, 4500.0)
BANDWIDTHS = np.array((70.0, 100.0, 130.0, 180.0, 250.0))  # Hz, F1..F5
CONSONANTS = {  # unvoiced bursts: band (Hz), level re the vowels (dB), share of consonants
    "s": ((4000.0, 7600.0), -14.0, 0.35),
    "sh": ((2000.0, 5000.0), -12.0, 0.20),
    "f": ((1000.0, 7000.0), -22.0, 0.20),
    "t": ((1500.0, 7000.0), -10.0, 0.25),  # plosive release: short
}
SPEECH_DBFS = -26.0  # speech RMS of a neutral utterance at a speaker's mean level
FRAME_S = 0.005  # F0 contour control rate


@dataclasses.dataclass(frozen=True)
class SynthParams:
    seed: int = 20230109  # one seed for both corpora; every file draws from (seed, its own id)
    iemocap_scale: float = 0.13  # fraction of the real 10,039 wavs
    iemocap_improvised_share: float | None = 0.55  # improvised fraction of the wavs; null = the real 4784/10039
    msp_improv_scale: float = 0.09  # fraction of the real 8,438 utterances
    workers: int = 2  # processes rendering audio


@dataclasses.dataclass(frozen=True)
class Utterance:
    uid: str  # utterance id as the corpus names it
    relpath: str  # wav path relative to the corpus root
    speaker: str  # speaker key: seeds the speaker's voice
    gender: str  # F or M: the speaker's, never the dialog leader's
    label: str  # consensus label written to the label file ("" = not evaluated)
    style: str  # what is rendered: see utterance_style
    num_samples: int
    rate: int


@dataclasses.dataclass(frozen=True)
class Voice:
    f0_hz: float  # speaker's neutral mean F0
    formant_scale: float  # vocal tract length: women's formants lie higher
    syllables_per_s: float
    breath: float  # aspiration noise relative to the pulse train
    tilt_hz: float  # glottal low-pass corner
    gain_db: float  # recording level re SPEECH_DBFS
    expressiveness: float  # scales the distance of every class mean from neutral
    offsets: dict[str, np.ndarray]  # class -> this speaker's deviation from the class mean


# ---------------------------------------------------------------------------------------------
# Seeds and counts
# ---------------------------------------------------------------------------------------------

def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """Returns a generator seeded from `seed` and string keys, independent of call order."""
    words = [int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "little") for k in keys]
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def apportion(weights: dict[str, float], total: int) -> dict[str, int]:
    """Returns integer counts summing to `total`, proportional to `weights` (largest remainder)."""
    keys = list(weights)
    w = np.array([weights[k] for k in keys], dtype=float)
    exact = w / w.sum() * total if w.sum() > 0 else np.zeros(len(keys))
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return dict(zip(keys, counts.tolist()))


def log_normal_samples(rng: np.random.Generator, rate: int) -> int:
    """Returns an utterance length in samples: log-normal, median 3 s, clipped to 0.8-12 s."""
    seconds = float(np.clip(3.0 * np.exp(0.55 * rng.standard_normal()), 0.8, 12.0))
    return int(round(seconds * rate))


# ---------------------------------------------------------------------------------------------
# Voices and styles
# ---------------------------------------------------------------------------------------------

def speaker_voice(seed: int, corpus: str, speaker: str, gender: str) -> Voice:
    """Returns the voice of one speaker, drawn from (seed, corpus, speaker)."""
    rng = rng_for(seed, corpus, speaker, "voice")
    female = gender == "F"
    offsets = {label: rng.normal(0.0, SPEAKER_SD) for label in EMOTIONS}
    return Voice(
        f0_hz=rng.uniform(190.0, 230.0) if female else rng.uniform(100.0, 130.0),
        formant_scale=rng.uniform(1.10, 1.22) if female else rng.uniform(0.94, 1.04),
        syllables_per_s=rng.uniform(3.8, 5.2),
        breath=rng.uniform(0.05, 0.25) if female else rng.uniform(0.02, 0.15),
        tilt_hz=rng.uniform(250.0, 450.0),
        gain_db=rng.normal(0.0, 3.0),
        expressiveness=rng.uniform(0.7, 1.3),
        offsets=offsets,
    )


def utterance_style(voice: Voice, style: str, rng: np.random.Generator) -> dict[str, float]:
    """Returns the style values (STYLE_DIMS) of one utterance by `voice`.

    style: an EMOTIONS key; "xxx" (no agreement: a random blend of two classes, between clusters);
    or "perceived+intended" (MSP-IMPROV: heard as one class, acted for another, mostly the first).
    """
    if style == "xxx":
        pair = rng.choice(len(NO_AGREEMENT), size=2, replace=False)
        weights = {NO_AGREEMENT[pair[0]]: (w := rng.uniform(0.3, 0.7)), NO_AGREEMENT[pair[1]]: 1.0 - w}
    elif "+" in style:
        perceived, intended = style.split("+")
        weights = {perceived: (w := rng.uniform(0.55, 0.8)), intended: 1.0 - w}
    else:
        weights = {style: 1.0}
    neutral = np.array(EMOTIONS["neu"])
    vector = neutral.copy()
    for name, w in weights.items():
        shift = voice.expressiveness * (np.array(EMOTIONS[name]) - neutral) + voice.offsets[name]
        vector += w * shift
    vector = np.maximum(vector + rng.normal(0.0, UTTERANCE_SD), STYLE_FLOOR)
    return dict(zip(STYLE_DIMS, vector.tolist()))


# ---------------------------------------------------------------------------------------------
# Source-filter rendering
# ---------------------------------------------------------------------------------------------

def formant_sos(freqs: np.ndarray, bandwidths: np.ndarray, rate: int) -> np.ndarray:
    """Returns a cascade of unity-DC-gain resonators, (k, 6) second-order sections."""
    keep = freqs < 0.45 * rate
    radius = np.exp(-np.pi * bandwidths[keep] / rate)
    a1 = -2.0 * radius * np.cos(2.0 * np.pi * freqs[keep] / rate)
    a2 = radius**2
    zeros = np.zeros_like(a1)
    return np.stack([1.0 + a1 + a2, zeros, zeros, np.ones_like(a1), a1, a2], axis=1)


@functools.lru_cache(maxsize=None)
def band_sos(low_hz: float, high_hz: float, rate: int) -> np.ndarray:
    """Returns a 2nd-order Butterworth band-pass, (2, 6) sections."""
    return signal.butter(2, [low_hz, min(high_hz, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")


def plan_syllables(voice: Voice, style: dict, start_s: float, end_s: float, rng: np.random.Generator) -> list:
    """Returns syllables as (consonant or None, consonant_s, vowel_start_s, vowel_end_s, vowel, accent, phrase)."""
    rate = voice.syllables_per_s * np.exp(style["log_rate"])
    syllables, t, phrase, left_in_phrase = [], start_s, 0, rng.integers(4, 10)
    names = list(CONSONANTS)
    shares = np.array([CONSONANTS[n][2] for n in names])
    while end_s - t > 0.12:
        length = min(rng.gamma(8.0, 1.0 / (8.0 * rate)), end_s - t)
        consonant = names[rng.choice(len(names), p=shares)] if rng.random() < 0.6 else None
        cons_s = 0.0 if consonant is None else length * (0.15 if consonant == "t" else rng.uniform(0.2, 0.35))
        syllables.append((consonant, t, t + cons_s, t + length, rng.integers(len(VOWELS)),
                          rng.random() < 0.35, phrase))
        t += length
        left_in_phrase -= 1
        if left_in_phrase == 0 and end_s - t > 0.6:
            # Phrase break: slower speakers (sad) pause longer.
            t += rng.uniform(0.12, 0.35) / np.exp(style["log_rate"])
            phrase, left_in_phrase = phrase + 1, rng.integers(4, 10)
    return syllables


def f0_contour(voice: Voice, style: dict, syllables: list, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Returns F0 in Hz per sample, (n,): declination per phrase, accents, final movement, drift."""
    frames = int(n / (FRAME_S * rate)) + 2
    times = np.arange(frames) * FRAME_S
    st = np.zeros(frames)
    phrases = {}
    for syl in syllables:
        first, last = phrases.get(syl[6], (syl[2], syl[3]))
        phrases[syl[6]] = (min(first, syl[2]), max(last, syl[3]))
    for first, last in phrases.values():
        span = (times >= first) & (times <= last)
        st[span] -= 2.0 * (times[span] - first) / max(last - first, 1e-3)  # declination: 2 semitones a phrase
    finals = {}
    for syl in syllables:
        finals[syl[6]] = syl
        if syl[5]:
            mid, half = (syl[2] + syl[3]) / 2, (syl[3] - syl[2])
            near = np.abs(times - mid) < half
            st[near] += style["range_st"] * rng.uniform(0.5, 1.0) * 0.5 * (1 + np.cos(np.pi * (times[near] - mid) / half))
    for syl in finals.values():
        span = (times >= syl[2]) & (times <= syl[3])
        st[span] += style["final_st"] * (times[span] - syl[2]) / max(syl[3] - syl[2], 1e-3)
    drift = np.convolve(rng.standard_normal(frames), np.hanning(41), mode="same")
    st += 0.4 * drift / np.sqrt((np.hanning(41) ** 2).sum())
    hz = voice.f0_hz * 2.0 ** ((style["f0_st"] + st) / 12.0)
    return np.interp(np.arange(n) / rate, times, hz)


def glottal_source(voice: Voice, style: dict, f0: np.ndarray, voiced: np.ndarray, rate: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Returns the excitation (n,): a jittered, shimmered pulse train, low-passed, plus aspiration."""
    n = len(f0)
    cycle = np.floor(np.cumsum(f0 / rate)).astype(np.int64)
    pulses = np.flatnonzero(np.diff(cycle)) + 1
    pulses = pulses[voiced[pulses]]
    period = rate / f0[pulses]
    pulses = np.clip(pulses + np.round(rng.normal(0.0, style["jitter"], len(pulses)) * period).astype(np.int64), 0, n - 1)
    train = np.zeros(n)
    np.add.at(train, pulses, 1.0 + style["shimmer"] * rng.standard_normal(len(pulses)))
    # Glottal flow as a double real pole; its derivative (lip radiation) leaves -6 dB/octave.
    radius = np.exp(-2.0 * np.pi * voice.tilt_hz * np.exp(style["log_tilt"]) / rate)
    flow = signal.lfilter([1.0], [1.0, -2.0 * radius, radius * radius], train)
    source = np.diff(flow, prepend=0.0)
    level = np.sqrt(np.mean(source[voiced] ** 2)) if voiced.any() else 1.0
    breath = max(voice.breath + style["breath"], 0.0)
    return source + breath * level * rng.standard_normal(n)


def ramp(length: int, attack: int, release: int) -> np.ndarray:
    """Returns a raised-cosine on/off envelope, (length,)."""
    env = np.ones(length)
    attack, release = min(attack, length // 2), min(release, length // 2)
    env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / max(attack, 1))
    env[length - release:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / max(release, 1))
    return env


def render_speech(voice: Voice, style: dict, n: int, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns (speech (n,) at the style's level, mask (n,) of the samples where speech sounds)."""
    lead, trail = rng.uniform(0.2, 1.0, size=2)
    seconds = n / rate
    if seconds - lead - trail < 0.5:  # short utterance: shrink the silences, keep half a second of speech
        lead, trail = (np.array([lead, trail]) * max(seconds - 0.5, 0.05) / (lead + trail)).tolist()
    syllables = plan_syllables(voice, style, lead, seconds - trail, rng)
    voiced = np.zeros(n, dtype=bool)
    for syl in syllables:
        voiced[int(syl[2] * rate): int(syl[3] * rate)] = True
    f0 = f0_contour(voice, style, syllables, n, rate, rng)
    source = glottal_source(voice, style, f0, voiced, rate, rng)
    out = np.zeros(n)
    tail = int(0.02 * rate)  # let each vowel's resonances ring out past its end
    formants = np.concatenate([VOWELS, np.tile(HIGH_FORMANTS, (len(VOWELS), 1))], axis=1) * voice.formant_scale
    formants[:, 0] *= 1.0 + style["f1_shift"]
    widths = BANDWIDTHS * (1.0 + 2.0 * max(voice.breath + style["breath"], 0.0))  # breathy voice: damped
    phrase_last = {syl[6]: i for i, syl in enumerate(syllables)}
    for i, syl in enumerate(syllables):
        a, b = int(syl[2] * rate), int(syl[3] * rate)
        if b - a < 8:
            continue
        gain_db = (3.0 if syl[5] else 0.0) - (3.0 if phrase_last[syl[6]] == i else 0.0) + rng.normal(0.0, 1.5)
        piece = source[a:b] * ramp(b - a, int(0.02 * rate), int(0.03 * rate)) * 10 ** (gain_db / 20)
        shaped = signal.sosfilt(formant_sos(formants[syl[4]], widths, rate), np.concatenate([piece, np.zeros(tail)]))
        stop = min(a + len(shaped), n)
        out[a:stop] += shaped[: stop - a]
    level = np.sqrt(np.mean(out[voiced] ** 2)) if voiced.any() else 1.0
    mask = voiced.copy()
    for syl in syllables:
        if syl[0] is None:
            continue
        a, b = int(syl[1] * rate), int(syl[2] * rate)
        if b - a < 8:
            continue
        band, level_db, _ = CONSONANTS[syl[0]]
        burst = rng.standard_normal(b - a) * ramp(b - a, int(0.005 * rate), int(0.01 * rate))
        burst = signal.sosfilt(band_sos(*band, rate), burst)
        burst *= level * 10 ** ((level_db + rng.normal(0.0, 3.0)) / 20) / max(np.sqrt(np.mean(burst**2)), 1e-12)
        out[a:b] += burst
        mask[a:b] = True
    target = 10 ** ((SPEECH_DBFS + voice.gain_db + style["gain_db"]) / 20)
    speech_rms = np.sqrt(np.mean(out[mask] ** 2)) if mask.any() else 1.0
    return out * target / max(speech_rms, 1e-12), mask


def iemocap_channel(speech: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Returns the studio recording (n,): a 60 Hz high-pass and a low, white noise floor."""
    floor_db = rng.uniform(-64.0, -56.0)  # dBFS: quiet studio, lapel microphones
    noisy = speech + 10 ** (floor_db / 20) * rng.standard_normal(len(speech))
    return signal.sosfilt(_high_pass(60.0, rate), noisy)


def msp_channel(speech: np.ndarray, mask: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Returns the MSP-IMPROV-like recording (n,): room noise and hum at 15-30 dB SNR through a band-limited microphone."""
    n = len(speech)
    speech_rms = np.sqrt(np.mean(speech[mask] ** 2)) if mask.any() else 1e-3
    room = signal.lfilter([1.0], [1.0, -0.8], rng.standard_normal(n))  # room noise, tilted to the lows
    hum = sum(np.sin(2 * np.pi * 60.0 * k * np.arange(n) / rate + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
    noise = room / np.sqrt(np.mean(room**2)) + 0.1 * hum
    snr_db = rng.uniform(15.0, 30.0)
    noise *= speech_rms * 10 ** (-snr_db / 20) / np.sqrt(np.mean(noise**2))
    return signal.sosfilt(_microphone(rate), speech + noise)


@functools.lru_cache(maxsize=None)
def _high_pass(corner_hz: float, rate: int) -> np.ndarray:
    """Returns a 2nd-order Butterworth high-pass, (1, 6) sections."""
    return signal.butter(2, corner_hz, btype="highpass", fs=rate, output="sos")


@functools.lru_cache(maxsize=None)
def _microphone(rate: int) -> np.ndarray:
    """Returns the MSP-IMPROV-like microphone response: 120 Hz-7 kHz band-pass with a presence peak, sections."""
    band = signal.butter(2, [120.0, 7000.0], btype="bandpass", fs=rate, output="sos")
    peak_b, peak_a = signal.iirpeak(2500.0, 1.5, fs=rate)
    # The peak adds to the direct path (y = x + 0.4 * peak(x)): a +3 dB presence bump around 2.5 kHz.
    presence = signal.tf2sos(np.polyadd(peak_a, 0.4 * peak_b), peak_a)
    return np.concatenate([band, presence])


def render_file(job: tuple[str, str, int, Utterance]) -> int:
    """Writes one utterance's wav under root; returns its sample count."""
    root, corpus, seed, utt = job
    voice = speaker_voice(seed, corpus, utt.speaker, utt.gender)
    rng = rng_for(seed, corpus, utt.uid, "audio")
    style = utterance_style(voice, utt.style, rng)
    speech, mask = render_speech(voice, style, utt.num_samples, utt.rate, rng)
    if corpus == "msp-improv":
        recorded = msp_channel(speech, mask, utt.rate, rng)
    else:
        recorded = iemocap_channel(speech, utt.rate, rng)
    write_wav(Path(root) / utt.relpath, recorded, utt.rate)
    return utt.num_samples


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """Writes mono 16-bit PCM; samples beyond full scale are clipped."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


# ---------------------------------------------------------------------------------------------
# IEMOCAP layout
# ---------------------------------------------------------------------------------------------

CATEGORIES = {  # summary label -> evaluator category, as the release spells them
    "neu": "Neutral", "hap": "Happiness", "sad": "Sadness", "ang": "Anger", "exc": "Excited",
    "fru": "Frustration", "sur": "Surprise", "fea": "Fear", "dis": "Disgust", "oth": "Other",
}
VAD_MEANS = {  # (valence, activation, dominance) an evaluator tends to give, 1-5 scale
    "neu": (3, 2, 3), "hap": (4, 3, 3), "exc": (4, 4, 3), "ang": (2, 4, 4), "sad": (2, 2, 2),
    "fru": (2, 3, 3), "sur": (3, 4, 3), "fea": (2, 3, 2), "dis": (2, 3, 3), "oth": (3, 3, 3), "xxx": (3, 3, 3),
}
APPLE_DOUBLE = (  # an AppleDouble header (magic 0x00051607, version 2), as macOS copies leave behind
    b"\x00\x05\x16\x07\x00\x02\x00\x00" + b"Mac OS X        " + b"\x00\x01\x00\x00\x00\x09\x00\x00\x00\x32"
    + b"\x00\x00\x00\x00" + bytes(48)
)
EMPTY_PICKLE = b"\x80\x04}\x94."  # pickle.dumps({}, protocol=4): the `.pk` strays
NOTES = ("()", "()", "()", "()", "(tense)", "(mildly annoyed)", "(a bit flat)", "(laughing)", "(sarcastic)")


def iemocap_label_counts(total: int, improvised_share: float | None) -> tuple[dict[str, int], dict[str, int]]:
    """Returns (improvised, scripted) label counts for `total` wavs."""
    share = IEMOCAP_IMPROVISED_WAVS / sum(IEMOCAP_LABELS.values()) if improvised_share is None else improvised_share
    rest = {k: v for k, v in IEMOCAP_LABELS.items() if k not in IEMOCAP_IMPROVISED_MAIN}
    # The improvised wavs beyond the five main classes take the rare labels in their corpus-wide proportions.
    others = apportion(rest, IEMOCAP_IMPROVISED_WAVS - sum(IEMOCAP_IMPROVISED_MAIN.values()))
    improvised = {**IEMOCAP_IMPROVISED_MAIN, **others}
    scripted = {k: IEMOCAP_LABELS[k] - improvised[k] for k in IEMOCAP_LABELS}
    n_improvised = int(round(total * share))
    return apportion(improvised, n_improvised), apportion(scripted, total - n_improvised)


def plan_iemocap(seed: int, scale: float, improvised_share: float | None) -> dict[str, list[Utterance]]:
    """Returns dialog name -> its utterances in time order, for every one of the 151 dialogs."""
    layout = rng_for(seed, "iemocap", "layout")
    total = int(round(sum(IEMOCAP_LABELS.values()) * scale))
    plan: dict[str, list[Utterance]] = {d: [] for s in IEMOCAP_DIALOGS for d in IEMOCAP_DIALOGS[s]}
    for mode_counts, kind in zip(iemocap_label_counts(total, improvised_share), ("impro", "script")):
        labels = np.array([k for k, v in mode_counts.items() for _ in range(v)])
        layout.shuffle(labels)
        per_session = apportion({str(s): w for s, w in zip(IEMOCAP_DIALOGS, IEMOCAP_SESSION_WAVS)}, len(labels))
        taken = 0
        for session, dialogs in IEMOCAP_DIALOGS.items():
            names = [d for d in dialogs if d.split("_")[1].startswith(kind)]
            per_dialog = apportion(dict.fromkeys(names, 1.0), per_session[str(session)])
            for name in names:
                chunk = labels[taken: taken + per_dialog[name]]
                taken += per_dialog[name]
                plan[name] = dialog_utterances(seed, session, name, chunk.tolist(), layout)
    return plan


def dialog_utterances(seed: int, session: int, dialog: str, labels: list[str], layout: np.random.Generator) -> list[Utterance]:
    """Returns a dialog's utterances: the two actors alternate, each numbered from 000 by their own letter."""
    speaker, numbers, out = dialog[5], {"F": 0, "M": 0}, []
    for label in labels:
        uid = f"{dialog}_{speaker}{numbers[speaker]:03d}"
        numbers[speaker] += 1
        num_samples = log_normal_samples(rng_for(seed, "iemocap", uid, "length"), IEMOCAP_RATE)
        out.append(Utterance(uid, f"Session{session}/sentences/wav/{dialog}/{uid}.wav",
                             f"Ses0{session}_{speaker}", speaker, label, label, num_samples, IEMOCAP_RATE))
        # Turns mostly alternate; a quarter of the time the same actor speaks again.
        speaker = speaker if layout.random() < 0.25 else ("M" if speaker == "F" else "F")
    return out


def evaluations(label: str, rng: np.random.Generator) -> tuple[list[tuple[str, str, str]], list[tuple[str, tuple, str]]]:
    """Returns (categorical [(evaluator, categories, note)], attribute [(evaluator, (v, a, d), note)])."""
    raters = sorted(rng.choice(6, size=3 + int(rng.random() < 0.3), replace=False) + 1)
    names = list(CATEGORIES)
    if label == "xxx":  # no majority: every evaluator a different category
        picks = [names[i] for i in rng.choice(len(names), size=len(raters), replace=False)]
    else:
        majority = len(raters) // 2 + 1
        picks = [label] * majority + [names[i] for i in rng.integers(len(names), size=len(raters) - majority)]
        rng.shuffle(picks)
    categorical = []
    for rater, pick in zip(raters, picks):
        cats = CATEGORIES[pick] + ";"
        if rng.random() < 0.15:  # some evaluators tick a second category
            cats += " " + CATEGORIES[names[rng.integers(len(names))]] + ";"
        categorical.append((f"E{rater}", cats, NOTES[rng.integers(len(NOTES))]))
    attribute = []
    for rater in sorted(rng.choice(6, size=2 + int(rng.random() < 0.5), replace=False) + 1):
        vad = tuple(int(np.clip(m + rng.integers(-1, 2), 1, 5)) for m in VAD_MEANS[label])
        attribute.append((f"E{rater}", vad, NOTES[rng.integers(len(NOTES))]))
    return categorical, attribute


def write_iemocap(root: Path, seed: int, plan: dict[str, list[Utterance]]) -> int:
    """Writes the 151 label files with their Categorical/ and Attribute/ files and a few strays; returns strays written."""
    strays = 0
    for session, dialogs in IEMOCAP_DIALOGS.items():
        evaluation = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        (evaluation / "Categorical").mkdir(parents=True, exist_ok=True)
        (evaluation / "Attribute").mkdir(parents=True, exist_ok=True)
        for position, dialog in enumerate(dialogs):
            timeline = rng_for(seed, "iemocap", dialog, "timeline")
            t = timeline.uniform(1.5, 8.0)
            blocks, per_rater_cat, per_rater_atr = [], {}, {}
            for utt in plan[dialog]:
                start, end = t, t + utt.num_samples / IEMOCAP_RATE
                t = end + timeline.uniform(0.1, 3.0)
                categorical, attribute = evaluations(utt.label, rng_for(seed, "iemocap", utt.uid, "evaluation"))
                vad = np.mean([a[1] for a in attribute], axis=0)
                lines = [f"[{start:.4f} - {end:.4f}]\t{utt.uid}\t{utt.label}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]"]
                lines += [f"C-{rater}:\t{cats}\t{note}" for rater, cats, note in categorical]
                lines += [f"A-{rater}:\tval {v}; act {a}; dom  {d};\t{note}" for rater, (v, a, d), note in attribute]
                blocks.append("\n".join(lines))
                for rater, cats, note in categorical:
                    per_rater_cat.setdefault(rater, []).append(f"{utt.uid} :{cats.replace('Neutral;', 'Neutral state;')} {note}")
                for rater, (v, a, d), note in attribute:
                    per_rater_atr.setdefault(rater, []).append(f"{utt.uid} :act {a}; val {v}; dom  {d}; {note}")
            text = IEMOCAP_HEADER + "\n\n" + "".join(block + "\n\n" for block in blocks)
            (evaluation / f"{dialog}.txt").write_text(text, encoding="utf-8")
            for rater, lines in per_rater_cat.items():
                (evaluation / "Categorical" / f"{dialog}_{rater.lower()}_cat.txt").write_text("\n".join(lines) + "\n")
            for rater, lines in per_rater_atr.items():
                (evaluation / "Attribute" / f"{dialog}_{rater.lower()}_atr.txt").write_text("\n".join(lines) + "\n")
            strays += write_iemocap_strays(root, position, dialog, plan[dialog], evaluation)
    return strays


def write_iemocap_strays(root: Path, position: int, dialog: str, utts: list[Utterance], evaluation: Path) -> int:
    """Writes the stray files a real copy carries for some dialogs; returns how many."""
    written = 0
    if position % 9 == 0:  # macOS resource forks beside a label file and a wav
        (evaluation / f"._{dialog}.txt").write_bytes(APPLE_DOUBLE)
        written += 1
        if utts:
            (root / Path(utts[0].relpath).with_name(f"._{utts[0].uid}.wav")).write_bytes(APPLE_DOUBLE)
            written += 1
    if position % 11 == 5 and utts:  # pickles some tool left in the wav folders
        (root / Path(utts[0].relpath).parent / f"{dialog}.pk").write_bytes(EMPTY_PICKLE)
        written += 1
    return written



# ---------------------------------------------------------------------------------------------
# MSP-IMPROV layout
# ---------------------------------------------------------------------------------------------

MSP_STYLES = {"A": "ang", "H": "hap", "N": "neu", "S": "sad", "O": "oth", "X": "xxx"}
MSP_NAMES = {"A": "Angry", "H": "Happy", "N": "Neutral", "S": "Sad", "O": "Other"}
MSP_SECONDARY = ("Calm", "Frustrated", "Excited", "Bored", "Annoyed", "Concerned", "Amused", "Disappointed", "Surprised")
MSP_VAD = {"A": (4, 2, 4), "H": (3, 4, 3), "N": (2, 3, 3), "S": (2, 2, 2), "O": (3, 3, 3), "X": (3, 3, 3)}  # A, V, D
SEPARATORS = ("; ", ";", " ; ", ";  ", " ;")


def plan_msp_improv(seed: int, scale: float) -> list[Utterance]:
    """Returns every utterance, sorted by id: session, speaker, scenario, condition, target and consensus."""
    layout = rng_for(seed, "msp-improv", "layout")
    total = int(round(sum(MSP_CONDITIONS.values()) * scale))
    drafts = [(cond, target) for cond, count in apportion(MSP_CONDITIONS, total).items()
              for target, n in apportion(dict.fromkeys("AHNS", 1.0), count).items() for _ in range(n)]
    drafts = [drafts[i] for i in layout.permutation(total)]
    # Consensus labels are drawn without replacement from the corpus-wide counts, so every scale keeps
    # them (rare ones included); each draw is bent towards the target per MSP_TARGET_AGREEMENT.
    letters = list(MSP_CONSENSUS)
    pool = np.array(list(apportion(MSP_CONSENSUS, total).values()), dtype=float)
    consensus = []
    for cond, target in drafts:
        weights = pool * np.array([MSP_TARGET_AGREEMENT[cond] if letter == target else 1.0 for letter in letters])
        pick = layout.choice(len(letters), p=weights / weights.sum())
        pool[pick] -= 1
        consensus.append(letters[pick])
    sessions = apportion(dict.fromkeys(range(1, MSP_SESSIONS + 1), 1.0), total)
    session_of = layout.permutation([s for s, n in sessions.items() for _ in range(n)])
    numbers: dict[tuple, int] = {}
    out = []
    for (cond, target), letter, session in zip(drafts, consensus, session_of):
        gender = "F" if layout.random() < 0.5 else "M"
        scenario = f"S{layout.integers(1, MSP_SCENARIOS + 1):02d}{target}"
        lead = "FM" if layout.random() < 0.5 else "MF"
        speaker = f"{gender}{session:02d}"
        key = (scenario, speaker, cond, lead)
        numbers[key] = numbers.get(key, 0) + 1
        uid = f"MSP-IMPROV-{scenario}-{speaker}-{cond}-{lead}{numbers[key]:02d}"
        # Evaluators hear the consensus; the actor still aimed at the target, which leaves a trace.
        if not letter or letter == target:
            style = MSP_STYLES[target]
        else:
            style = f"{MSP_STYLES[letter]}+{MSP_STYLES[target]}" if letter != "X" else "xxx"
        num_samples = log_normal_samples(rng_for(seed, "msp-improv", uid, "length"), MSP_RATE)
        out.append(Utterance(uid, f"Audio/session{session}/{scenario}/{cond}/{uid}.wav", speaker, gender, letter, style,
                             num_samples, MSP_RATE))
    return sorted(out, key=lambda u: u.uid)


def msp_block(utt: Utterance, rng: np.random.Generator) -> str:
    """Returns one Evalution.txt block: the consensus line, then one line per evaluator."""
    raters = int(rng.integers(5, 8))
    names = list(MSP_NAMES)
    if utt.label == "X":  # no agreement: cycling through the five categories, none reaches a majority
        order = rng.permutation(len(names))
        picks = [names[order[i % len(names)]] for i in range(raters)]
    else:
        majority = raters // 2 + 1
        picks = [utt.label] * majority + [names[i] for i in rng.integers(len(names), size=raters - majority)]
        rng.shuffle(picks)
    lines, scores = [], []
    for pick in picks:
        score = [int(np.clip(m + rng.integers(-1, 2), 1, 5)) for m in MSP_VAD[pick]] + [int(rng.integers(2, 6))]
        scores.append(score)
        extra = ",".join(MSP_SECONDARY[i] for i in sorted(rng.choice(len(MSP_SECONDARY), rng.integers(0, 3), replace=False)))
        lines.append(f"{MSP_NAMES[pick]}; {extra}; A:{score[0]:.6f}; V:{score[1]:.6f}; D:{score[2]:.6f}; N:{score[3]:.6f};")
    mean = np.mean(scores, axis=0)
    fields = [utt.uid.replace("MSP-IMPROV-", "UTD-IMPROV-") + ".avi", utt.label,
              f"A:{mean[0]:.6f}", f"V:{mean[1]:.6f}", f"D:{mean[2]:.6f}", f"N:{mean[3]:.6f}"]
    # The release's spacing around ';' varies from line to line; parsers must read fields, not spaces.
    head = "".join(f + SEPARATORS[rng.integers(len(SEPARATORS))] for f in fields).rstrip()
    return "\n".join([head, *lines])


def write_msp_improv(root: Path, seed: int, plan: list[Utterance]) -> int:
    """Writes Evalution.txt (the release's spelling); returns the number of evaluated utterances."""
    blocks = [msp_block(u, rng_for(seed, "msp-improv", u.uid, "evaluation")) for u in plan if u.label]
    (root / "Evalution.txt").write_text("".join(b + "\n\n" for b in blocks), encoding="utf-8")
    return len(blocks)


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------

def render_all(root: Path, corpus: str, seed: int, utts: list[Utterance], workers: int) -> int:
    """Renders every wav (in `workers` processes); returns the total sample count."""
    jobs = [(str(root), corpus, seed, u) for u in utts]
    progress = dict(total=len(jobs), desc=f"synth {corpus}", unit="wav", disable=None)
    if workers <= 1:
        return sum(tqdm(map(render_file, jobs), **progress))
    # spawn: workers import only numpy/scipy, never inherit a parent's torch threads.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return sum(tqdm(pool.map(render_file, jobs, chunksize=8), **progress))


def fix_mtimes(root: Path) -> None:
    """Sets every file's and folder's mtime under root (and root's) to EPOCH."""
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in sorted(files) + sorted(dirs):
            os.utime(Path(folder) / name, (EPOCH, EPOCH))
    os.utime(root, (EPOCH, EPOCH))


def write_marker(root: Path, what: str) -> None:
    """Writes root/MARKER, which lets a later synth run replace the folder."""
    (root / MARKER).write_text(
        f"{MARKER_HEAD}: {what}\n"
        "synth replaces this folder whole on its next run; it refuses any folder without this file.\n",
        encoding="utf-8",
    )


def check_replaceable(out: Path) -> None:
    """Raises unless `out` is absent, an empty folder, or a folder synth wrote (one holding MARKER)."""
    if out.is_symlink():
        raise SdcaffError(f"{out}: is a symbolic link; synth writes only a folder of its own, choose another --out")
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise SdcaffError(f"{out}: is the working directory or one above it; synth would replace it whole")
    if not out.exists():
        return
    if not out.is_dir():
        raise SdcaffError(f"{out}: exists and is not a folder; synth replaces only a folder it wrote itself")
    if not any(out.iterdir()):
        return
    marker = out / MARKER
    if marker.is_file() and not marker.is_symlink():
        with open(marker, encoding="utf-8", errors="replace") as stream:
            if stream.readline(len(MARKER_HEAD) + 1).startswith(MARKER_HEAD):
                return
    raise SdcaffError(
        f"{out}: folder exists, is not empty and was not written by `sdcaff synth` (it holds no {MARKER}); "
        "refusing to replace it: move it away or choose another --out"
    )


def check_outside_corpora(out: Path, roots: list[tuple[str, Path]]) -> None:
    """Raises if `out` is, lies in or holds a configured corpus root: synth replaces `out` whole."""
    for source, root in roots:
        ensure_outside(out, root, "synth's output", f"set by {source}; keep the licensed copy elsewhere")
        if root.resolve().is_relative_to(out.resolve()):
            raise SdcaffError(
                f"refusing to replace {out}: it holds the corpus directory {root} (set by {source})"
            )


def synthesize(corpus: str, out: str | os.PathLike, seed: int, scale: float,
               improvised_share: float | None = None, workers: int = 1) -> dict[str, int]:
    """Writes one synthetic corpus to `out` atomically; returns counts (wavs, samples, label files, strays)."""
    corpora.check_corpus(corpus)
    if scale <= 0:
        raise SdcaffError(f"synth: scale must be positive, got {scale}")
    if improvised_share is not None and not 0.0 < improvised_share < 1.0:
        raise SdcaffError(f"synth: iemocap_improvised_share must lie in (0, 1), got {improvised_share}")
    check_replaceable(Path(out))
    with atomic_dir(out) as tmp:
        if corpus == "iemocap":
            plan = plan_iemocap(seed, scale, improvised_share)
            utts = [u for dialog in plan.values() for u in dialog]
            samples = render_all(tmp, corpus, seed, utts, workers)
            strays = write_iemocap(tmp, seed, plan)
            counts = {"wavs": len(utts), "samples": samples, "label_files": len(plan), "strays": strays}
        else:
            utts = plan_msp_improv(seed, scale)
            samples = render_all(tmp, corpus, seed, utts, workers)
            counts = {"wavs": len(utts), "samples": samples, "evaluated": write_msp_improv(tmp, seed, utts)}
        write_marker(tmp, f"synthetic {corpus} corpus, seed {seed}, scale {scale:g}")
        fix_mtimes(tmp)
    return counts


def write_note(out: str | os.PathLike, corpus: str, real: Path) -> None:
    """Writes out/NOTE.txt saying the licensed copy at `real` is in use (DVC needs the out to exist)."""
    check_replaceable(Path(out))
    with atomic_dir(out) as tmp:
        (tmp / "NOTE.txt").write_text(
            f"The licensed {corpus} corpus at {real} is in use; no synthetic corpus was written here.\n",
            encoding="utf-8",
        )
        write_marker(tmp, f"stand-in for the licensed {corpus} corpus")
        fix_mtimes(tmp)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --corpus, --out, --seed and --scale to the verb's parser."""
    parser.add_argument("--corpus", required=True, choices=corpora.CORPORA)
    parser.add_argument("--out", type=Path, help="default: artifacts/corpora/<corpus>")
    parser.add_argument("--seed", type=int, help="default: params synth.seed")
    parser.add_argument("--scale", type=float, help="fraction of the real corpus size; default: params synth.<corpus>_scale")


def run(args: argparse.Namespace) -> int:
    """Returns 0 after writing the synthetic corpus, or NOTE.txt when a licensed copy is configured."""
    params = params_module.load("synth", SynthParams)
    out = args.out or corpora.synthetic_root(args.corpus)
    corpora_params = corpora.load_params()
    real = corpora.real_root(args.corpus, corpora_params)
    # Every configured root, not only this corpus's: --out may point into the other licensed copy.
    check_outside_corpora(out, corpora.configured_roots(corpora_params))
    if real is not None:
        log.info("read corpora.%s: licensed copy at %s", args.corpus, real)
        write_note(out, args.corpus, real)
        log.info("wrote %s/NOTE.txt only: the real corpus is in use", out)
        return 0
    seed = params.seed if args.seed is None else args.seed
    default_scale = params.iemocap_scale if args.corpus == "iemocap" else params.msp_improv_scale
    scale = default_scale if args.scale is None else args.scale
    share = f", improvised share {params.iemocap_improvised_share}" if args.corpus == "iemocap" else ""
    log.info("read params synth: corpus %s, seed %d, scale %g%s, %d workers", args.corpus, seed, scale, share, params.workers)
    counts = synthesize(args.corpus, out, seed, scale, params.iemocap_improvised_share, params.workers)
    rate = IEMOCAP_RATE if args.corpus == "iemocap" else MSP_RATE
    log.info("wrote %s: %s (%.1f hours of audio)", out,
             ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()), counts["samples"] / rate / 3600)
    return 0

"""Features on the same audio three ways: the suite's batched torch path, the authors' librosa path, plain torchaudio.

Groups: features-dsp (MFCC + delta + delta-delta of ready 6 s clips), features-silence (the authors' detector,
suite vs a per-file numpy reading), features-pipeline (silence removal, pad/cut, MFCC and deltas, end to end).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference
from sdcaff import features, mfcc, silence
from sdcaff.bench import EAGER, Variant

LIBROSA = Variant("librosa", "eager", "fp32")
TORCHAUDIO = Variant("torchaudio", "eager", "fp32")
NUMPY = Variant("reference", "eager", "fp32")


def info(harness, waves: list[np.ndarray]) -> dict:
    """Returns the extra_info every feature case carries: utterances, clip seconds, audio seconds, suite batch."""
    return {"utterances": len(waves), "seconds": harness.settings.params.clip_seconds,
            "audio_seconds": sum(len(y) for y in waves) / mfcc.SAMPLE_RATE,
            "feature_batch": harness.settings.feature_batch}


def suite_extract(harness, clips: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    """Returns the suite's (mfcc, delta, delta-delta), each (N, 60, frames) on the CPU, in features.batch_size batches."""
    size = harness.settings.feature_batch
    parts = []
    with torch.inference_mode():
        for first in range(0, len(clips), size):
            batch = torch.from_numpy(np.stack(clips[first : first + size])).to(harness.device)
            parts.append([t.cpu() for t in mfcc.extract(batch)])
    return tuple(torch.cat(columns) for columns in zip(*parts))


@pytest.mark.benchmark(group="features-dsp")
@pytest.mark.parametrize("variant", [EAGER, LIBROSA, TORCHAUDIO], ids=lambda v: v.impl)
def test_features_dsp(benchmark, harness, variant):
    clips = harness.waves()  # already clip_seconds long: no pad/cut needed
    if variant.impl == "suite":
        def run():
            return suite_extract(harness, clips)
    elif variant.impl == "librosa":
        def run():
            return [reference.librosa_features(y, mfcc.SAMPLE_RATE, mfcc.PAD_MODE) for y in clips]
    else:
        transform = reference.torchaudio_transform(mfcc.SAMPLE_RATE, mfcc.PAD_MODE).to(harness.device)

        def run():
            with torch.inference_mode():
                return [tuple(t.cpu() for t in reference.torchaudio_features(torch.from_numpy(y).to(harness.device),
                                                                             transform)) for y in clips]

    out = harness.time(benchmark, run, kernel="features-dsp", variant=variant, heavy=False, **info(harness, clips))
    frames = harness.frames(harness.settings.params.clip_seconds)
    first = out[0] if variant.impl == "suite" else out[0][0]
    assert tuple(first.shape[-2:]) == (mfcc.N_MFCC, frames)


@pytest.mark.benchmark(group="features-silence")
@pytest.mark.parametrize("variant", [EAGER, NUMPY], ids=lambda v: v.impl)
def test_features_silence(benchmark, harness, variant):
    waves = harness.waves()
    detector = silence.remove_silence if variant.impl == "suite" else reference.remove_silence

    def run():
        return [detector(y) for y in waves]

    out = harness.time(benchmark, run, kernel="features-silence", variant=variant, heavy=False, **info(harness, waves))
    # The synthetic utterances hold pauses: the detector must have cut something from each.
    assert all(len(speech) < len(y) for speech, y in zip(out, waves))


@pytest.mark.benchmark(group="features-pipeline")
@pytest.mark.parametrize("variant", [EAGER, LIBROSA], ids=lambda v: v.impl)
def test_features_pipeline(benchmark, harness, variant):
    waves = harness.waves()
    length = harness.settings.clip_samples
    if variant.impl == "suite":
        def run():
            # sdcaff.features.compute's order: per-file silence removal and pad/cut, then one batched transform.
            return suite_extract(harness, [features.fix_length(silence.remove_silence(y), length) for y in waves])
    else:
        def run():
            return [reference.librosa_features(reference.pad_or_cut(reference.remove_silence(y), length),
                                               mfcc.SAMPLE_RATE, mfcc.PAD_MODE) for y in waves]

    out = harness.time(benchmark, run, kernel="features-pipeline", variant=variant, heavy=False,
                       **info(harness, waves))
    count = out[0].shape[0] if variant.impl == "suite" else len(out)
    assert count == len(waves)

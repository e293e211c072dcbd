"""Time and peak memory as the batch and the clip grow: SD-CAFF forward, the suite's features, a training step (CUDA).

Peak memory is the CUDA allocator's peak on GPU and the rise of the resident set on CPU (extra_info peak_mib).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdcaff import mfcc
from sdcaff.bench import EAGER
from sdcaff.model import build


def forward(harness, batch: int, seconds: float):
    """Returns the timed case for an eval-mode SD-CAFF forward over (batch, seconds) inputs."""
    model = build(harness.settings.model).to(harness.device).eval()
    static, dynamic, _, _ = harness.model_batch(batch, seconds)

    def run():
        with torch.inference_mode():
            return model(static, dynamic)

    return run


@pytest.mark.benchmark(group="scaling-forward-batch")
def test_forward_by_batch(benchmark, harness, scaling_batch):
    seconds = harness.settings.params.clip_seconds
    out = harness.time(benchmark, forward(harness, scaling_batch, seconds), kernel="scaling-forward", heavy=True,
                       batch=scaling_batch, seconds=seconds)
    assert out.emotion.shape[0] == scaling_batch


@pytest.mark.benchmark(group="scaling-forward-length")
def test_forward_by_length(benchmark, harness, scaling_seconds):
    batch = harness.settings.params.scaling_length_batch
    out = harness.time(benchmark, forward(harness, batch, scaling_seconds), kernel="scaling-forward", heavy=True,
                       batch=batch, seconds=scaling_seconds)
    assert out.emotion.shape[0] == batch


@pytest.mark.benchmark(group="scaling-features-batch")
def test_features_by_batch(benchmark, harness, scaling_batch):
    clips = torch.from_numpy(np.stack(harness.waves(scaling_batch)))

    def run():
        with torch.inference_mode():
            return tuple(t.cpu() for t in mfcc.extract(clips.to(harness.device)))

    seconds = harness.settings.params.clip_seconds
    out = harness.time(benchmark, run, kernel="scaling-features", heavy=False, batch=scaling_batch, seconds=seconds,
                       utterances=scaling_batch, audio_seconds=scaling_batch * seconds)
    assert out[0].shape[0] == scaling_batch


@pytest.mark.gpu
@pytest.mark.benchmark(group="scaling-train-step-batch")
def test_train_step_by_batch(benchmark, harness, scaling_batch):
    # CUDA only: on 2 CPU cores one paper-shape step costs tens of seconds, past the stage's budget.
    loss = harness.time(benchmark, harness.train_step(EAGER, scaling_batch), kernel="scaling-train-step",
                        heavy=True, batch=scaling_batch, seconds=harness.settings.params.clip_seconds)
    assert torch.isfinite(loss)

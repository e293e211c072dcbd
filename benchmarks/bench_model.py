"""Model kernels at the paper's shapes (batch 32, 60 x 251, LSTM 1024): Cross AFF, CNN, LSTM, SD-CAFF, a training step.

Each kernel's variants share a group, so a group reads as a comparison: eager vs torch.compile, fp32 vs bf16
autocast (CUDA), and for Cross AFF the formula-as-written reference vs the suite's module.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

import reference
from sdcaff.bench import SUITE_VARIANTS, Variant
from sdcaff.model import build
from sdcaff.model.fusion import CrossAFF
from sdcaff.model.sdcaff import static_shape

REFERENCE = Variant("reference", "eager", "fp32")
CROSS_AFF_VARIANTS = [*SUITE_VARIANTS, REFERENCE]


def variant_ids(variant: Variant) -> str:
    """Returns the pytest id of a variant (eager-fp32, compile-bf16, reference)."""
    return variant.id


def cross_aff_case(harness) -> tuple[CrossAFF, torch.Tensor, torch.Tensor]:
    """Returns the suite's Cross AFF for the profile, a static map (B, Cs, H, W) and a dynamic map (B, Cd, 1, T)."""
    p = harness.settings.model
    frames = harness.frames(harness.settings.params.clip_seconds)
    channels, height, width = static_shape(dataclasses.replace(p, frames=frames))
    module = CrossAFF(channels, p.lstm_pooled, p.aff_inner).to(harness.device)
    generator = torch.Generator().manual_seed(0)
    static = torch.randn(harness.settings.batch, channels, height, width, generator=generator)
    dynamic = torch.randn(harness.settings.batch, p.lstm_pooled, 1, frames, generator=generator)
    return module, static.to(harness.device), dynamic.to(harness.device)


def fusion(harness, variant: Variant, module: CrossAFF, training: bool):
    """Returns the callable that fuses (static, dynamic) for `variant`: the module (maybe compiled) or the reference."""
    module.train(training)
    if variant.impl == "reference":
        # The module's own parameters and buffers, so both compute the same numbers with the same weights.
        weights = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        return functools.partial(reference.cross_aff, weights, training=training)
    return harness.build(variant, module, heavy=False)


@pytest.mark.benchmark(group="cross_aff-forward")
@pytest.mark.parametrize("variant", CROSS_AFF_VARIANTS, ids=variant_ids)
def test_cross_aff_forward(benchmark, harness, variant):
    module, static, dynamic = cross_aff_case(harness)
    fuse = fusion(harness, variant, module, training=False)

    def run():
        with torch.inference_mode(), harness.autocast(variant):
            return fuse(static, dynamic)

    out = harness.time(benchmark, run, kernel="cross_aff-forward", variant=variant, heavy=False,
                       batch=harness.settings.batch)
    assert out.shape == (harness.settings.batch, module.out_features)


@pytest.mark.benchmark(group="cross_aff-backward")
@pytest.mark.parametrize("variant", CROSS_AFF_VARIANTS, ids=variant_ids)
def test_cross_aff_forward_backward(benchmark, harness, variant):
    module, static, dynamic = cross_aff_case(harness)
    static.requires_grad_(True)
    dynamic.requires_grad_(True)
    fuse = fusion(harness, variant, module, training=True)

    def run():
        with harness.autocast(variant):
            out = fuse(static, dynamic)
        out.float().sum().backward()
        return out

    harness.time(benchmark, run, kernel="cross_aff-backward", variant=variant, heavy=False,
                 batch=harness.settings.batch)
    assert static.grad is not None and torch.isfinite(static.grad).all()


def branch_case(harness, variant: Variant, branch: str):
    """Returns the eval-mode branch `branch` of the profile's model (maybe compiled) and its input."""
    model = build(harness.settings.model).to(harness.device).eval()
    static, dynamic, _, _ = harness.model_batch()
    if branch == "cnn":
        return harness.build(variant, model.cnn, heavy=True), (static,)
    if branch == "lstm":
        return harness.build(variant, model.lstm, heavy=True), (dynamic,)
    return harness.build(variant, model, heavy=True), (static, dynamic)


def time_inference(benchmark, harness, variant: Variant, branch: str, kernel: str):
    """Returns the output of timing `branch`'s eval-mode forward for `variant`."""
    forward, inputs = branch_case(harness, variant, branch)

    def run():
        with torch.inference_mode(), harness.autocast(variant):
            return forward(*inputs)

    return harness.time(benchmark, run, kernel=kernel, variant=variant, heavy=True, batch=harness.settings.batch,
                        seconds=harness.settings.params.clip_seconds)


@pytest.mark.benchmark(group="cnn-forward")
@pytest.mark.parametrize("variant", SUITE_VARIANTS, ids=variant_ids)
def test_cnn_forward(benchmark, harness, variant):
    out = time_inference(benchmark, harness, variant, "cnn", "cnn-forward")
    assert out.shape[:2] == (harness.settings.batch, harness.settings.model.cnn_channels[-1])


@pytest.mark.benchmark(group="lstm-forward")
@pytest.mark.parametrize("variant", SUITE_VARIANTS, ids=variant_ids)
def test_lstm_forward(benchmark, harness, variant):
    benchmark.extra_info["cudnn"] = harness.device.type == "cuda" and torch.backends.cudnn.enabled
    out = time_inference(benchmark, harness, variant, "lstm", "lstm-forward")
    assert out.shape[:2] == (harness.settings.batch, harness.settings.model.lstm_pooled)


@pytest.mark.benchmark(group="model-forward")
@pytest.mark.parametrize("variant", SUITE_VARIANTS, ids=variant_ids)
def test_model_forward(benchmark, harness, variant):
    out = time_inference(benchmark, harness, variant, "model", "model-forward")
    assert out.emotion.shape == (harness.settings.batch, harness.settings.model.n_classes)


@pytest.mark.benchmark(group="train-step")
@pytest.mark.parametrize("variant", SUITE_VARIANTS, ids=variant_ids)
def test_train_step(benchmark, harness, variant):
    loss = harness.time(benchmark, harness.train_step(variant), kernel="train-step", variant=variant, heavy=True,
                        batch=harness.settings.batch, seconds=harness.settings.params.clip_seconds)
    assert torch.isfinite(loss)

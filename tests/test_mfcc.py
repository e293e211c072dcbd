"""Batched MFCC and deltas against librosa, per-utterance dB floor, batch invariance."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from sdcaff import mfcc

CLIP = 96000
# Measured on the clips below: max |ours - librosa| 6.3e-4 and at most 1.2e-6 of the clip's largest
# |coefficient| (float32 torch against float64 librosa). The bounds leave about 10x headroom.
MAX_ABS = 1e-2
MAX_REL = 1e-5
# Batch invariance and stage-vs-function equality. Bitwise equality holds only for one CPU kind and
# thread count: here (AMD EPYC, AVX-512) a row is bit-identical alone or in a batch under every
# emulated kind (ATEN_CPU_CAPABILITY avx2/default, ONEDNN_MAX_CPU_ISA=AVX2, MKL_CBWR=AVX2, 1 thread),
# but on an Intel Xeon MKL sums the batched mel and DCT matmuls in another order and the bits differ.
# Any two summation orders are bounded by each one's distance from exact: on the clips below and a
# 3.2-peak tone, float32 extract() is at most 6.1e-4 from float64, and at rtol 1e-5 the largest
# remainder is 1.8e-4 (mfcc; 2.4e-5 delta, 7.8e-6 delta-delta), so two orders need at most 3.6e-4.
# atol 1e-3 leaves ~3x over that; a batch-wide dB floor or a row mix-up moves values by whole dB.
BATCH_RTOL = 1e-5
BATCH_ATOL = 1e-3


def clips() -> dict[str, np.ndarray]:
    """Returns named 6 s test clips, float32."""
    rng = np.random.default_rng(987654)
    t = np.arange(CLIP) / 16000
    voiced = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(CLIP)
    return {
        "noise": 0.1 * rng.standard_normal(CLIP),
        "tone": 0.5 * np.sin(2 * np.pi * 440 * t),
        "zero-padded": np.concatenate([voiced[:40000], np.zeros(CLIP - 40000)]),
        "quiet": 1e-4 * rng.standard_normal(CLIP),
    }


def librosa_mfcc(y: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
    """Returns the authors' call, with the pad mode of their librosa made explicit: (60, 251) float64."""
    return librosa.feature.mfcc(
        y=y.astype(np.float64), sr=16000, n_mfcc=60, win_length=768, hop_length=384, pad_mode=pad_mode
    )


def assert_close(ours: np.ndarray, ref: np.ndarray) -> None:
    diff = np.abs(ours - ref).max()
    assert diff < MAX_ABS and diff / np.abs(ref).max() < MAX_REL, f"max diff {diff}, scale {np.abs(ref).max()}"


def test_shapes():
    batch = torch.zeros(3, CLIP)
    assert mfcc.mfcc(batch).shape == (3, 60, 251)
    static, first, second = mfcc.extract(batch)
    assert static.shape == first.shape == second.shape == (3, 60, 251)
    assert static.dtype == torch.float32


@pytest.mark.parametrize("name", list(clips()))
def test_mfcc_matches_librosa_reflect(name):
    y = clips()[name].astype(np.float32)
    ours = mfcc.mfcc(torch.from_numpy(y)[None])[0].double().numpy()
    assert_close(ours, librosa_mfcc(y))


def test_pad_mode_constant_matches_librosa_default():
    y = clips()["zero-padded"].astype(np.float32)
    ours = mfcc.mfcc(torch.from_numpy(y)[None], pad_mode="constant")[0].double().numpy()
    assert_close(ours, librosa_mfcc(y, pad_mode="constant"))
    # The two pad modes differ at the edge frames, which is why the mode is a parameter.
    reflect = mfcc.mfcc(torch.from_numpy(y)[None])[0].double().numpy()
    assert np.abs(reflect[:, 0] - ours[:, 0]).max() > 1.0


def test_top_db_floor_is_per_utterance():
    loud, quiet = clips()["tone"], clips()["quiet"]
    batch = torch.from_numpy(np.stack([loud, quiet]).astype(np.float32))
    together = mfcc.mfcc(batch)
    # A batch-wide floor would lift the quiet clip to the loud clip's maximum - 80 dB.
    assert_close(together[1].double().numpy(), librosa_mfcc(quiet.astype(np.float32)))


def test_batch_gives_the_same_numbers_as_one_by_one():
    batch = torch.from_numpy(np.stack(list(clips().values())).astype(np.float32))
    together = mfcc.extract(batch)
    for i in range(len(batch)):
        alone = mfcc.extract(batch[i : i + 1])
        for a, b in zip(together, alone):
            torch.testing.assert_close(a[i], b[0], rtol=BATCH_RTOL, atol=BATCH_ATOL)


@pytest.mark.parametrize("axis", [-2, -1])
@pytest.mark.parametrize("width", [9, 5])
def test_delta_matches_librosa(axis, width):
    x = np.random.default_rng(width).standard_normal((2, 60, 251)) * 50
    ours = mfcc.delta(torch.from_numpy(x), axis, width).numpy()
    ref = librosa.feature.delta(x, width=width, axis=axis)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    second = mfcc.delta(torch.from_numpy(ours), axis, width).numpy()
    np.testing.assert_allclose(second, librosa.feature.delta(ref, width=width, axis=axis), rtol=0, atol=1e-9)


@pytest.mark.parametrize("delta_axis, axis", [("coefficient", -2), ("time", -1)])
def test_extract_deltas_follow_the_axis(delta_axis, axis):
    y = clips()["zero-padded"].astype(np.float32)
    static, first, second = mfcc.extract(torch.from_numpy(y)[None], delta_axis=delta_axis)
    ref_first = librosa.feature.delta(static[0].double().numpy(), axis=axis)
    np.testing.assert_allclose(first[0].double().numpy(), ref_first, rtol=0, atol=1e-3)
    np.testing.assert_allclose(
        second[0].double().numpy(), librosa.feature.delta(ref_first, axis=axis), rtol=0, atol=1e-3
    )


def test_delta_rejects_a_bad_width():
    with pytest.raises(ValueError, match="delta width must be odd"):
        mfcc.delta(torch.zeros(4, 60, 8), -1, 9)
    with pytest.raises(ValueError, match="delta width must be odd"):
        mfcc.delta(torch.zeros(4, 60, 251), -1, 4)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    batch = torch.from_numpy(np.stack(list(clips().values())).astype(np.float32))
    on_cpu = mfcc.extract(batch)
    on_gpu = mfcc.extract(batch.cuda())
    for a, b in zip(on_cpu, on_gpu):
        assert_close(b.cpu().double().numpy(), a.double().numpy())


# Measured (reflect vs constant padding, float32 mfcc()): only frames 0 and 250 differ, because the
# 768-sample window sits centred in the 2048-point frame and reaches 384 samples past the signal only
# there. Their largest |difference| (always coefficient 0) was 16-71 over 24 synthetic utterances (2-12 s,
# raw and silence-removed) and the clips above, 0 where a clip ends in zero padding (reflected zeros are
# zeros); frames 1-249 were bit-identical. EDGE_MIN is half the smallest edge difference measured.
EDGE_MIN = 8.0


def synthetic_utterance() -> np.ndarray:
    """Returns an IEMOCAP-like synthetic utterance, 6 s, silent lead and tail: (CLIP,) float32."""
    from sdcaff.data import synthetic

    seed, corpus = 987654, "iemocap"
    voice = synthetic.speaker_voice(seed, corpus, "Ses01F", "F")
    rng = synthetic.rng_for(seed, corpus, "utt", "audio")
    speech, _ = synthetic.render_speech(voice, synthetic.utterance_style(voice, "neu", rng), CLIP, 16000, rng)
    return synthetic.iemocap_channel(speech, 16000, rng).astype(np.float32)


@pytest.mark.reliability("fidelity")
@pytest.mark.parametrize("name", [*clips(), "synthetic-utterance"])
def test_pad_modes_differ_only_in_the_edge_frames(name):
    y = synthetic_utterance() if name == "synthetic-utterance" else clips()[name].astype(np.float32)
    batch = torch.from_numpy(y)[None]
    reflect, constant = (mfcc.mfcc(batch, pad_mode=mode)[0] for mode in ("reflect", "constant"))
    # Interior frames see no padding: equal up to a summation order (bitwise on the machine measured).
    torch.testing.assert_close(reflect[:, 1:-1], constant[:, 1:-1], rtol=BATCH_RTOL, atol=BATCH_ATOL)
    assert (reflect[:, 0] - constant[:, 0]).abs().max() > EDGE_MIN
    last = (reflect[:, -1] - constant[:, -1]).abs().max()
    if name == "zero-padded":
        assert last <= BATCH_ATOL
    else:
        assert last > EDGE_MIN

"""Feature kind ssl: tiny random upstreams (no download) -> pooled hidden states, masks, order, identity, stage."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model, WavLMConfig, WavLMModel,
    WhisperConfig, WhisperFeatureExtractor, WhisperModel,
)

from sdcaff import cli, features, upstream
from sdcaff.data.loader import load_features
from sdcaff.errors import ManifestError
from test_features import manifest_row, voiced, write_manifest, write_wav

RATE = 16000
LAYERS, WIDTH = 2, 32  # -> L + 1 = 3 pooled hidden states of 32
# The wav2vec 2.0 family at toy size: a 2-layer conv front end (kernels 10, 3; strides 5, 2: 10 samples per frame,
# 1,600 frames per second where real checkpoints have 50), so the audio here stays under 1.5 s.
WAVEFORM_SIZES = dict(
    num_hidden_layers=LAYERS, hidden_size=WIDTH, num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32),
    conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)
# Masked: layer-norm front ends whose extractor asks for an attention mask (WavLM, HuBERT Large style).
MASKED = ("wavlm", "hubert", "whisper")
ALL = (*MASKED, "wav2vec2")


def build(kind: str, seed: int) -> tuple[torch.nn.Module, object]:
    """Returns a randomly initialised toy upstream of `kind` and its feature extractor."""
    torch.manual_seed(seed)
    if kind == "whisper":
        config = WhisperConfig(d_model=WIDTH, encoder_layers=LAYERS, decoder_layers=1, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                               max_source_positions=1500, max_target_positions=32)
        return WhisperModel(config), WhisperFeatureExtractor(feature_size=80)
    if kind == "wavlm":
        model = WavLMModel(WavLMConfig(**WAVEFORM_SIZES, feat_extract_norm="layer"))
    elif kind == "hubert":
        model = HubertModel(HubertConfig(**WAVEFORM_SIZES, feat_extract_norm="layer", do_stable_layer_norm=True))
    else:
        # wav2vec 2.0 Base style: group-norm front end, trained on unpadded input, no mask.
        model = Wav2Vec2Model(Wav2Vec2Config(**WAVEFORM_SIZES, feat_extract_norm="group"))
    return model, Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=kind != "wav2vec2")


@pytest.fixture(scope="session")
def offline():
    """Keeps transformers off the hub for the session: every checkpoint here is a local folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def checkpoints(offline, tmp_path_factory) -> dict[str, Path]:
    """Returns the saved toy checkpoints: one per model type, and `wavlm-other` (wavlm, another seed)."""
    root = tmp_path_factory.mktemp("upstreams")
    folders = {}
    for name, kind, seed in [(k, k, 0) for k in ALL] + [("wavlm-other", "wavlm", 1)]:
        model, extractor = build(kind, seed)
        model.save_pretrained(root / name)
        extractor.save_pretrained(root / name)
        folders[name] = root / name
    return folders


@pytest.fixture(scope="session")
def upstreams(checkpoints) -> dict[str, upstream.Upstream]:
    """Returns each toy checkpoint loaded on the CPU."""
    return {name: upstream.load(str(folder), None, "cpu") for name, folder in checkpoints.items()}


def waves(*seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Returns noise bursts of the given durations at 16 kHz, float32."""
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * RATE))).astype(np.float32) for s in seconds]


@pytest.mark.parametrize("name", ALL)
def test_every_hidden_state_pooled(upstreams, name):
    up = upstreams[name]
    assert (up.model.training, any(p.requires_grad for p in up.model.parameters()), up.amp) == (False, False, False)
    pooled = up.pooled_hidden_states(waves(0.3, 1.0, 0.001))  # 16 samples: shorter than one conv frame
    assert pooled.shape == (3, LAYERS + 1, WIDTH) and pooled.dtype == torch.float32 and pooled.device.type == "cpu"
    assert torch.isfinite(pooled).all()
    identity = up.identity()
    assert identity == {"name": identity["name"], "revision": identity["revision"], "model_type": name,
                        "hidden_layers": LAYERS, "hidden_size": WIDTH}
    assert identity["revision"].startswith("sha256:") and identity["name"].endswith(name)


def test_valid_frames_follow_the_front_end(upstreams):
    lengths = torch.tensor([RATE, 1, 1000 * RATE])
    # Conv front end: (16,000 - 10) // 5 + 1 = 3,199, then (3,199 - 3) // 2 + 1 = 1,599 frames.
    assert upstreams["wavlm"].valid_frames(torch.tensor([RATE])).tolist() == [1599]
    assert upstreams["wavlm"].min_samples() == 20
    # Whisper: 160-sample log-mel hop, 2 mel frames per encoder frame, at least 1, at most 1,500 (30 s).
    assert upstreams["whisper"].valid_frames(lengths).tolist() == [50, 1, 1500]


@pytest.mark.parametrize("name", MASKED)
def test_padding_is_masked(upstreams, name):
    up = upstreams[name]
    short, long = waves(0.2, 1.5, seed=1)
    alone = up.pooled_hidden_states([short])[0]
    batched = up.pooled_hidden_states([short, long])
    # 0.2 s padded to 1.5 s: with the mask (Whisper: its own 30 s padding) the padding changes nothing.
    torch.testing.assert_close(batched[0], alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched[1], up.pooled_hidden_states([long])[0], atol=1e-4, rtol=1e-4)


def test_unmasked_wav2vec2_shifts_padded_utterances_only(upstreams):
    # What holds without a mask: the longest utterance of a batch (no padding) is unchanged, and the padding
    # is kept out of the pooling, but a padded utterance's frames still see it (group norm over time,
    # attention): its vector shifts. Length batching keeps that padding small; batch_size 1 removes it.
    up = upstreams["wav2vec2"]
    short, long = waves(0.2, 1.5, seed=1)
    batched = up.pooled_hidden_states([short, long])
    torch.testing.assert_close(batched[1], up.pooled_hidden_states([long])[0], atol=1e-4, rtol=1e-4)
    assert (batched[0] - up.pooled_hidden_states([short])[0]).abs().max() > 1e-3
    one_by_one = up.encode([short, long], batch_size=1)
    torch.testing.assert_close(one_by_one[0], up.pooled_hidden_states([short])[0], atol=1e-4, rtol=1e-4)


def test_bf16_autocast_path_returns_float32(upstreams):
    # No GPU here: the autocast branch runs on the CPU's bf16 autocast (load() itself never switches it on there).
    up = upstreams["wavlm"]
    given = waves(0.3, 0.6, seed=4)
    reference = up.pooled_hidden_states(given)
    autocast = dataclasses.replace(up, amp=True).pooled_hidden_states(given)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, reference, atol=0.05, rtol=0.05)  # bf16: 8 mantissa bits


@pytest.mark.reliability("determinism")
@pytest.mark.parametrize("name", ALL)
def test_same_tensors_twice(upstreams, name):
    given = waves(0.5, 0.2, 0.9, seed=2)
    assert torch.equal(upstreams[name].encode(given, batch_size=2), upstreams[name].encode(given, batch_size=2))


def test_length_batches_longest_first_within_limits():
    lengths = [3, 9, 1, 9, 5]
    assert upstream.length_batches(lengths, 2) == [[1, 3], [4, 0], [2]]
    # At most 12 padded samples: each 9 goes alone, 5 + 3 pads to 10.
    assert upstream.length_batches(lengths, 2, max_batch_samples=12) == [[1], [3], [4, 0], [2]]
    assert upstream.length_batches(lengths, 10, max_batch_samples=4) == [[1], [3], [4], [0], [2]]
    assert upstream.length_batches([], 4) == []


def test_encode_restores_the_original_order(upstreams):
    up = upstreams["wavlm"]
    given = waves(0.1, 0.5, 0.25, 0.4, 0.15, seed=3)  # batches by length: (0.5), (0.4, 0.25), (0.15, 0.1)
    encoded = up.encode(given, batch_size=2, max_batch_seconds=0.9)
    for i, wave in enumerate(given):
        torch.testing.assert_close(encoded[i], up.pooled_hidden_states([wave])[0], atol=1e-4, rtol=1e-4)


def test_identity_tells_checkpoints_apart(checkpoints, upstreams, tmp_path):
    same, other = upstreams["wavlm"].identity(), upstreams["wavlm-other"].identity()
    # Same config, other weights: only the content digest differs.
    assert same["revision"] != other["revision"]
    assert {k: v for k, v in same.items() if k not in ("name", "revision")} == \
        {k: v for k, v in other.items() if k not in ("name", "revision")}
    # The digest is the files' content, wherever the folder lies.
    copy = shutil.copytree(checkpoints["wavlm"], tmp_path / "copy")
    assert upstream.folder_digest(copy) == same["revision"]
    with pytest.raises(ValueError, match="applies to hub ids only"):
        upstream.load(str(copy), "main", "cpu")


PARAMS = """\
env:
  threads: 2
  deterministic: true
  device: cpu
features:
  batch_size: 2
feature_sets:
  tiny-ssl:
    corpus: iemocap
    labels: [neu, ang, exc]
    kind: ssl
"""


@pytest.fixture
def stage(in_tmp, monkeypatch):
    """Returns tmp_path holding params.yaml (set tiny-ssl, no upstream), three wavs (one at 44.1 kHz) and a manifest."""
    monkeypatch.delenv("SDCAFF_PARAMS", raising=False)
    (in_tmp / "params.yaml").write_text(PARAMS)
    wavs = in_tmp / "corpus"
    rows = [
        manifest_row("Ses01F_impro01_F002", wavs / "c.wav", "exc", write_wav(wavs / "c.wav", voiced(0.8, 44100, 3), 44100)),
        manifest_row("Ses01F_impro01_F000", wavs / "a.wav", "neu", write_wav(wavs / "a.wav", voiced(0.5, RATE, 1), RATE)),
        manifest_row("Ses01F_impro01_F001", wavs / "b.wav", "ang", write_wav(wavs / "b.wav", voiced(1.2, RATE, 2), RATE)),
    ]
    write_manifest(in_tmp, rows)
    return in_tmp


def test_without_checkpoint_writes_both_files_and_the_loader_refuses(stage, caplog):
    reason = "no upstream checkpoint configured (feature_sets.tiny-ssl.upstream)"
    with caplog.at_level(logging.INFO):
        assert cli.main(["features", "--set", "tiny-ssl"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("sdcaff")]
    assert lines == [f"feature set tiny-ssl: not run: {reason}"]
    pt_path = stage / "artifacts/features/tiny-ssl.pt"
    payload = torch.load(pt_path)
    assert (payload["utt_ids"], payload["not_run"]) == ([], reason)
    assert all(payload[k].shape == (0, 0, 0) for k in ("mfcc", "delta", "delta_delta"))
    assert payload["params"]["kind"] == "ssl" and payload["params"]["upstream"] is None
    summary = json.loads((stage / "results/features/tiny-ssl.json").read_text())
    assert (summary["not_run"], summary["utterances"]) == (reason, 0)
    with pytest.raises(ManifestError, match=f"{pt_path}: .*did not run.*{reason.replace('(', '.').replace(')', '.')}"):
        load_features([pt_path])


def test_stage_writes_pooled_layers(stage, checkpoints, upstreams):
    folder = checkpoints["wavlm"]
    (stage / "params.yaml").write_text(
        PARAMS + f"    upstream: {folder}\n"
        f"  tiny-ssl-clip:\n    corpus: iemocap\n    labels: [neu, ang, exc]\n    kind: ssl\n"
        f"    ssl_input: clip\n    upstream: {checkpoints['whisper']}\n"
    )
    assert cli.main(["features", "--set", "tiny-ssl"]) == 0
    payload = torch.load(stage / "artifacts/features/tiny-ssl.pt")
    assert payload["utt_ids"] == [f"iemocap/Ses01F_impro01_F00{i}" for i in range(3)]
    assert payload["mfcc"].shape == (3, LAYERS + 1, WIDTH) and payload["delta"].shape == (3, 0, WIDTH)
    assert payload["params"]["upstream_identity"] == upstreams["wavlm"].identity()
    summary = json.loads((stage / "results/features/tiny-ssl.json").read_text())
    assert summary["params"]["upstream_identity"] == upstreams["wavlm"].identity()
    # The stored vectors are the whole silence-removed utterances', each as if alone.
    p, _ = features.load_params("tiny-ssl")
    rows = features.read_manifest(stage / "artifacts/manifest/iemocap.csv", "iemocap", ["neu", "ang", "exc"])
    speech = features.read_speech(rows.iloc[0], stage / "artifacts/manifest/iemocap.csv", p)
    assert payload["speech_samples"][0] == len(speech)
    expected = upstreams["wavlm"].pooled_hidden_states([speech])[0]
    torch.testing.assert_close(payload["mfcc"][0], expected, atol=1e-4, rtol=1e-4)
    assert load_features([stage / "artifacts/features/tiny-ssl.pt"]).mfcc.shape == (3, LAYERS + 1, WIDTH)

    assert cli.main(["features", "--set", "tiny-ssl-clip"]) == 0
    clip = torch.load(stage / "artifacts/features/tiny-ssl-clip.pt")
    assert clip["mfcc"].shape == (3, LAYERS + 1, WIDTH) and clip["params"]["ssl_input"] == "clip"
    assert clip["params"]["upstream_identity"] == upstreams["whisper"].identity()
    # The 6 s clip the MFCCs see, zero padding included: 300 Whisper frames.
    expected = upstreams["whisper"].pooled_hidden_states([features.fix_length(speech, 96000)])[0]
    torch.testing.assert_close(clip["mfcc"][0], expected, atol=1e-4, rtol=1e-4)


def test_unloadable_checkpoint_names_the_setting_and_writes_nothing(stage, capsys):
    (stage / "params.yaml").write_text(PARAMS + f"    upstream: {stage / 'missing'}\n")
    assert cli.main(["features", "--set", "tiny-ssl"]) == 1
    assert "params.yaml: feature_sets.tiny-ssl.upstream = " in capsys.readouterr().err
    assert not (stage / "artifacts/features/tiny-ssl.pt").exists()


@pytest.mark.parametrize("name", ALL)
def test_frame_level_hidden_states_are_zero_padded_and_pool_to_the_pooled_ones(upstreams, name):
    up = upstreams[name]
    given = waves(0.3, 1.0, 0.6, seed=3)
    frames = up.encode(given, batch_size=2, frame_level=True)
    counts = up.frame_counts(given)
    assert frames.shape == (3, LAYERS + 1, WIDTH, int(counts.max())) and frames.dtype == torch.float32
    pooled = up.encode(given, batch_size=2)
    for i, valid in enumerate(counts.tolist()):
        assert frames[i, :, :, valid:].abs().max() == 0 if valid < frames.shape[3] else True
        assert frames[i, :, :, :valid].abs().sum(1).min() > 0  # every valid frame holds a vector
        torch.testing.assert_close(frames[i, :, :, :valid].mean(2), pooled[i], atol=1e-5, rtol=1e-4)


def test_ssl_layers_keep_the_chosen_hidden_states(upstreams):
    up = upstreams["hubert"]
    given = waves(0.4, 0.7)
    every = up.encode(given, batch_size=2)
    torch.testing.assert_close(up.encode(given, batch_size=2, layers=[2, 0]), every[:, [2, 0]])
    assert up.encode(given, batch_size=1, layers=[1], frame_level=True).shape[1] == 1
    for wrong in ([3], [-1], [], [1, 1]):
        with pytest.raises(ValueError, match="0..2"):
            up.check_layers(wrong)


def test_stage_writes_frame_level_layers_with_their_mask(stage, checkpoints, upstreams):
    (stage / "params.yaml").write_text(PARAMS + f"    upstream: {checkpoints['wavlm']}\n    ssl_cache: frames\n"
                                       f"    ssl_layers: [0, 2]\n")
    assert cli.main(["features", "--set", "tiny-ssl"]) == 0
    payload = torch.load(stage / "artifacts/features/tiny-ssl.pt")
    mfcc, mask = payload["mfcc"], payload["delta"]
    frames = mfcc.shape[2]
    assert mfcc.shape == (3, 2 * WIDTH, frames) and mask.shape == (3, 1, frames)
    assert payload["delta_delta"].shape == (3, 0, frames)
    assert payload["params"]["ssl_cache"] == "frames" and payload["params"]["ssl_layers"] == [0, 2]
    p, _ = features.load_params("tiny-ssl")
    rows = features.read_manifest(stage / "artifacts/manifest/iemocap.csv", "iemocap", ["neu", "ang", "exc"])
    waves_read = [features.read_speech(rows.iloc[i], stage / "artifacts/manifest/iemocap.csv", p) for i in range(3)]
    counts = upstreams["wavlm"].frame_counts(waves_read)
    assert mask.sum((1, 2)).long().tolist() == counts.tolist() and int(counts.max()) == frames
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # Layer after layer: rows 0-31 hidden state 0, rows 32-63 hidden state 2; pooled over the mask, the vectors.
    expected = upstreams["wavlm"].pooled_hidden_states([waves_read[0]], layers=[0, 2])[0]
    valid = int(counts[0])
    got = mfcc[0, :, :valid].reshape(2, WIDTH, valid).mean(2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    loaded = load_features([stage / "artifacts/features/tiny-ssl.pt"])
    assert loaded.mfcc.shape == (3, 2 * WIDTH, frames) and loaded.delta.shape == (3, 1, frames)


def test_a_frame_level_cache_above_its_limit_is_refused_before_the_upstream_runs(stage, checkpoints, capsys):
    (stage / "params.yaml").write_text(PARAMS + f"    upstream: {checkpoints['wavlm']}\n    ssl_cache: frames\n"
                                       f"    ssl_frames_max_gb: 1.0e-6\n")
    assert cli.main(["features", "--set", "tiny-ssl"]) == 1
    err = capsys.readouterr().err
    assert "a frame-level cache of 3 utterances x 3 hidden states x 32 x" in err and "ssl_frames_max_gb" in err
    assert not (stage / "artifacts/features/tiny-ssl.pt").exists()
    assert not (stage / "results/features/tiny-ssl.json").exists()


def test_out_of_range_ssl_layers_name_the_setting(stage, checkpoints, capsys):
    (stage / "params.yaml").write_text(PARAMS + f"    upstream: {checkpoints['wavlm']}\n    ssl_layers: [0, 5]\n")
    assert cli.main(["features", "--set", "tiny-ssl"]) == 1
    assert "feature_sets.tiny-ssl.ssl_layers: layers [0, 5] must be distinct hidden-state indices in 0..2" in \
        capsys.readouterr().err
    assert not (stage / "artifacts/features/tiny-ssl.pt").exists()


PROFILES = """\
profiles:
  quick: {}
  paper: {}
"""


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_the_upstream_is_chosen_per_profile(stage, checkpoints, upstreams, profile, caplog):
    (stage / "params.yaml").write_text(PARAMS + f"    upstream:\n      quick: {checkpoints['wavlm']}\n"
                                       f"      paper: null\n" + PROFILES)
    (stage / "profile.yaml").write_text(f"profile: {profile}\n")
    with caplog.at_level(logging.INFO):
        assert cli.main(["features", "--set", "tiny-ssl"]) == 0
    payload = torch.load(stage / "artifacts/features/tiny-ssl.pt")
    if profile == "quick":
        assert payload["params"]["upstream"] == str(checkpoints["wavlm"])
        assert payload["params"]["upstream_identity"] == upstreams["wavlm"].identity()
        assert payload["mfcc"].shape == (3, LAYERS + 1, WIDTH)
    else:
        reason = "no upstream checkpoint configured for profile paper (feature_sets.tiny-ssl.upstream.paper)"
        assert payload["not_run"] == reason
        assert f"feature set tiny-ssl: not run: {reason}" in caplog.text

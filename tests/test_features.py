"""Stage features: params and sets, pad/cut, the stage end to end on tiny wavs, determinism, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
import torchaudio
from speechbrain.lobes.features import Fbank

from sdcaff import cli, features
from test_mfcc import BATCH_ATOL, BATCH_RTOL
from sdcaff import params as params_module
from sdcaff.data.loader import load_features
from sdcaff.errors import ParamsError

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
MANIFEST_HEADER = [
    "utt_id", "corpus", "path", "session", "speaker", "gender", "label", "mode", "sample_rate", "num_samples", "target",
]
PARAMS = """\
env:
  threads: 2
  deterministic: true
  device: cpu
features:
  batch_size: 2
feature_sets:
  tiny:
    corpus: iemocap
    labels: [neu, ang, exc]
  tiny-time:
    corpus: iemocap
    labels: [neu, ang, exc]
    delta_axis: time
    silence: none
  tiny-fbank:
    corpus: iemocap
    labels: [neu, ang, exc]
    kind: fbank
"""


def voiced(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Returns faint hiss around a loud vowel-like middle: (seconds * rate,) float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    y = 1e-3 * rng.standard_normal(n)
    middle = slice(n // 4, 3 * n // 4)
    y[middle] += 0.4 * np.sin(2 * np.pi * (150 + 20 * seed) * t[middle])
    return y.astype(np.float32)


def write_wav(path: Path, y: np.ndarray, rate: int) -> dict:
    """Writes 16-bit PCM and returns the header facts a manifest row carries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, y, rate, subtype="PCM_16")
    return {"sample_rate": rate, "num_samples": len(y) if y.ndim == 1 else y.shape[0]}


def manifest_row(utt: str, path: Path, label: str, facts: dict) -> dict:
    return {
        "utt_id": f"iemocap/{utt}", "corpus": "iemocap", "path": str(path), "session": 1, "speaker": "Ses01_F",
        "gender": "F", "label": label, "mode": "improvised", "target": "", **facts,
    }


@pytest.fixture
def stage(in_tmp, monkeypatch):
    """Returns tmp_path holding params.yaml, four wavs (one at 44.1 kHz, one longer than 6 s) and a manifest."""
    monkeypatch.delenv("SDCAFF_PARAMS", raising=False)
    (in_tmp / "params.yaml").write_text(PARAMS)
    wavs = in_tmp / "corpus"
    rows = [
        # Written out of utt_id order: the stage sorts.
        manifest_row("Ses01F_impro01_F002", wavs / "c.wav", "exc", write_wav(wavs / "c.wav", voiced(3.0, 44100, 3), 44100)),
        manifest_row("Ses01F_impro01_F000", wavs / "a.wav", "neu", write_wav(wavs / "a.wav", voiced(2.5, 16000, 1), 16000)),
        manifest_row("Ses01F_impro01_F001", wavs / "b.wav", "ang", write_wav(wavs / "b.wav", voiced(7.5, 16000, 2), 16000)),
        manifest_row("Ses01F_impro01_F003", wavs / "d.wav", "fru", write_wav(wavs / "d.wav", voiced(1.0, 16000, 4), 16000)),
    ]
    write_manifest(in_tmp, rows)
    return in_tmp


def write_manifest(root: Path, rows: list[dict]) -> Path:
    path = root / "artifacts" / "manifest" / "iemocap.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=MANIFEST_HEADER).to_csv(path, index=False)
    return path


def outputs(root: Path) -> list[str]:
    """Returns every file under the stage's output folders (temporary files included)."""
    found = []
    for folder in ("artifacts/features", "results/features"):
        found += sorted(p.name for p in (root / folder).glob("*")) if (root / folder).exists() else []
    return found


def test_fix_length_pads_and_cuts_at_the_end():
    y = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(features.fix_length(y, 8), [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(features.fix_length(y, 3), [1, 2, 3])
    np.testing.assert_array_equal(features.fix_length(y, 5), y)
    assert features.fix_length(y.astype(np.float64), 4).dtype == np.float32


def test_repo_params_reproduce_the_authors_and_every_set_loads():
    # The committed features section must equal the defaults, which carry the authors' values.
    assert params_module.load("features", features.FeaturesParams, REPO_PARAMS) == features.FeaturesParams()
    defaults = features.FeaturesParams()
    assert (defaults.clip_samples, defaults.frames) == (96000, 251)
    data, _ = params_module.read(REPO_PARAMS)
    for name in data["feature_sets"]:
        p, feature_set = features.load_params(name, REPO_PARAMS)
        assert feature_set.corpus in ("iemocap", "msp-improv")
    assert features.load_params("iemocap", REPO_PARAMS)[1].labels == ["neu", "hap", "exc", "sad", "ang"]
    assert features.load_params("msp-improv", REPO_PARAMS)[1].labels is None


def test_set_overrides_and_bad_sets(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS + "  typo:\n    corpus: iemocap\n    delta_axes: time\n"
                    "  wide:\n    corpus: iemocap\n    delta_width: 61\n")
    p, feature_set = features.load_params("tiny-time", path)
    assert (p.delta_axis, p.silence, p.batch_size, feature_set.corpus) == ("time", "none", 2, "iemocap")
    with pytest.raises(ParamsError, match=r"params.yaml:22: unknown key 'feature_sets.typo.delta_axes'"):
        features.load_params("typo", path)
    with pytest.raises(ParamsError, match=r"params.yaml:25: feature set 'wide': 'delta_width' must be odd.*at most 60"):
        features.load_params("wide", path)
    with pytest.raises(ParamsError, match="unknown feature set 'nope'; feature_sets has tiny, tiny-time"):
        features.load_params("nope", path)


def test_stage_end_to_end(stage):
    assert cli.main(["features", "--set", "tiny", "--device", "cpu"]) == 0
    payload = torch.load(stage / "artifacts/features/tiny.pt")
    # No versions, commit or times: the file's bytes depend on the audio and the settings only.
    assert set(payload) == {"utt_ids", "mfcc", "delta", "delta_delta", "speech_samples", "params"}
    assert payload["utt_ids"] == [f"iemocap/Ses01F_impro01_F00{i}" for i in range(3)]  # sorted; fru dropped
    for key in ("mfcc", "delta", "delta_delta"):
        assert payload[key].shape == (3, 60, 251) and payload[key].dtype == torch.float32
    assert payload["speech_samples"].dtype == torch.int64
    assert payload["params"]["corpus"] == "iemocap" and payload["params"]["delta_axis"] == "coefficient"

    # The stage's numbers are the pure functions' numbers, file by file, to within the summation-order
    # tolerance of tests/test_mfcc.py: the stage runs batches of 2, the call here one clip, and bitwise
    # equality across batch shapes holds on one CPU kind only.
    for i, name in enumerate("abc"):
        y, rate = soundfile.read(stage / "corpus" / f"{name}.wav", dtype="float32")
        if rate != 16000:
            y = torchaudio.functional.resample(torch.from_numpy(y), rate, 16000).numpy()
        speech = features.remove_silence(y)
        assert payload["speech_samples"][i] == len(speech)
        expected = features.extract(torch.from_numpy(features.fix_length(speech, 96000))[None])
        for key, tensor in zip(("mfcc", "delta", "delta_delta"), expected):
            torch.testing.assert_close(payload[key][i], tensor[0], rtol=BATCH_RTOL, atol=BATCH_ATOL)
    # a.wav is 2.5 s with one loud run of 20,000 samples: the authors' detector keeps it twice, widened
    # by less than a frame before and by a hop to a frame + hop after.
    assert 2 * (20000 + 512) <= payload["speech_samples"][0] < 2 * (20000 + 2048 + 2048 + 512)

    summary = json.loads((stage / "results/features/tiny.json").read_text())
    assert set(summary) == {"set", "corpus", "utterances", "audio_seconds", "device", "params"}
    provenance = json.loads((stage / "artifacts/provenance/features/tiny.json").read_text())
    assert provenance["wall_seconds"] > 0 and provenance["commit"] and provenance["times_realtime"] > 0
    assert (summary["set"], summary["utterances"], summary["device"]) == ("tiny", 3, "cpu")
    assert summary["audio_seconds"] == pytest.approx(2.5 + 7.5 + 3.0)


def test_set_override_reaches_the_file(stage):
    assert cli.main(["features", "--set", "tiny-time"]) == 0
    payload = torch.load(stage / "artifacts/features/tiny-time.pt")
    assert payload["params"]["delta_axis"] == "time" and payload["params"]["silence"] == "none"
    assert payload["speech_samples"].tolist() == [40000, 120000, 48000]  # none: 2.5 s, 7.5 s, 3 s at 16 kHz
    static = payload["mfcc"][:1]
    # Bitwise on any CPU: delta is elementwise (IEEE multiplies and adds, each rounded once), no matmul.
    assert torch.equal(payload["delta"][:1], features.delta(static, -1))


def test_fbank_set_holds_speechbrain_filterbanks_and_empty_deltas(stage):
    assert cli.main(["features", "--set", "tiny-fbank"]) == 0
    payload = torch.load(stage / "artifacts/features/tiny-fbank.pt")
    # SpeechBrain Fbank defaults (the ECAPA recipe's): 10 ms hop, centred -> 601 frames per 6 s clip.
    assert payload["mfcc"].shape == (3, 80, 601) and payload["delta"].shape == (3, 0, 601)
    assert payload["params"]["kind"] == "fbank"
    loaded = load_features([stage / "artifacts/features/tiny-fbank.pt"])
    assert loaded.mfcc.shape == (3, 80, 601)
    # The stored maps are SpeechBrain's own filterbanks of the stage's clips (no MFCC settings apply).
    rows = features.read_manifest(stage / "artifacts/manifest/iemocap.csv", "iemocap", ["neu", "ang", "exc"])
    p, _ = features.load_params("tiny-fbank")
    clip, _ = features.prepare(rows.iloc[0], stage / "artifacts/manifest/iemocap.csv", p)
    expected = Fbank(n_mels=80)(torch.from_numpy(clip)[None])[0].T
    torch.testing.assert_close(payload["mfcc"][0], expected)


@pytest.mark.reliability("determinism")
def test_same_bytes_twice(stage):
    assert cli.main(["features", "--set", "tiny"]) == 0
    first = (stage / "artifacts/features/tiny.pt").read_bytes()
    assert cli.main(["features", "--set", "tiny"]) == 0
    assert (stage / "artifacts/features/tiny.pt").read_bytes() == first


def corrupt(stage: Path, how: str) -> str:
    """Damages the stage's input one way; returns a fragment the error message must hold."""
    rows = pd.read_csv(stage / "artifacts/manifest/iemocap.csv", dtype=str, keep_default_na=False)
    if how == "missing wav":
        (stage / "corpus" / "b.wav").unlink()
        return "b.wav: file not found"
    if how == "truncated wav":
        path = stage / "corpus" / "a.wav"
        path.write_bytes(path.read_bytes()[:20000])
        return "a.wav: truncated"
    if how == "stereo":
        y = voiced(1.0, 16000, 5)
        facts = write_wav(stage / "corpus" / "c.wav", np.stack([y, y], 1), 16000)
        rows.loc[0, ["sample_rate", "num_samples"]] = [str(facts["sample_rate"]), str(facts["num_samples"])]
        write_manifest(stage, rows.to_dict("records"))
        return "c.wav: 2 channels"
    if how == "stale manifest":
        rows.loc[1, "num_samples"] = "123"
        write_manifest(stage, rows.to_dict("records"))
        return "iemocap.csv:3: " + str(stage / "corpus" / "a.wav") + " holds 40000 samples"
    if how == "missing manifest":
        (stage / "artifacts/manifest/iemocap.csv").unlink()
        return "iemocap.csv: manifest not found"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing wav", "truncated wav", "stereo", "stale manifest", "missing manifest"])
@pytest.mark.reliability("audio", by_param={"stale manifest": "manifest", "missing manifest": "manifest"})
def test_bad_input_names_the_file_and_writes_nothing(stage, capsys, how):
    fragment = corrupt(stage, how)
    assert cli.main(["features", "--set", "tiny"]) == 1
    assert fragment in capsys.readouterr().err
    assert outputs(stage) == []


def test_unknown_set_writes_nothing(stage, capsys):
    assert cli.main(["features", "--set", "iemocap-typo"]) == 1
    assert "unknown feature set 'iemocap-typo'" in capsys.readouterr().err
    assert outputs(stage) == []

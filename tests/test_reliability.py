"""Issue #7's bad-input cases no other test file covers: wav defects, odd sample rates, NaN, clipping, paths.

Each case runs the real code path (audio header checks, the manifest and features stages) on files it
writes into tmp_path, and checks for a clear error naming the file, or for correct numbers when the
input is usable. `make reliability` runs these with every other test marked `reliability`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from corpus_builders import write_iemocap
from test_mfcc import BATCH_ATOL, BATCH_RTOL
from sdcaff import cli, features
from sdcaff.data import audio
from sdcaff.errors import AudioError

MANIFEST_HEADER = [
    "utt_id", "corpus", "path", "session", "speaker", "gender", "label", "mode", "sample_rate", "num_samples", "target",
]
# silence `none` keeps every sample, so a clip's length after resampling is visible in speech_samples.
PARAMS = """\
corpora:
  iemocap: {root: null}
  msp-improv: {root: null}
fingerprint:
  out_dir: results/corpora
manifest:
  out_dir: artifacts/manifest
  allow_missing: false
env:
  threads: 2
  deterministic: true
  device: cpu
features:
  batch_size: 4
feature_sets:
  tiny:
    corpus: iemocap
  tiny-kept:
    corpus: iemocap
    silence: none
"""


def tone(seconds: float, rate: int) -> np.ndarray:
    """Returns two sines (220 Hz, 1.3 kHz, both below 4 kHz so any rate here holds them): float32."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1300 * t)).astype(np.float32)


def write_wav(path: Path, y: np.ndarray, rate: int, subtype: str = "PCM_16", container: str = "WAV") -> Path:
    """Returns `path` after writing `y` there in the given soundfile subtype (WAVEX: the extensible header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, y, rate, subtype=subtype, format=container)
    return path


def manifest_row(index: int, path: Path) -> dict:
    """Returns a manifest row for `path` whose header facts come from the file itself."""
    info = audio.inspect(path)
    return {
        "utt_id": f"iemocap/Ses01F_impro01_F{index:03d}", "corpus": "iemocap", "path": str(path), "session": 1,
        "speaker": "Ses01_F", "gender": "F", "label": "neu", "mode": "improvised", "sample_rate": info.sample_rate,
        "num_samples": info.num_samples, "target": "",
    }


@pytest.fixture
def stage(in_tmp, monkeypatch):
    """Returns tmp_path holding the features stage's params.yaml; write the manifest with `manifest()`."""
    monkeypatch.delenv("SDCAFF_PARAMS", raising=False)
    for var in ("SDCAFF_IEMOCAP", "SDCAFF_MSP_IMPROV"):
        monkeypatch.delenv(var, raising=False)
    (in_tmp / "params.yaml").write_text(PARAMS)
    return in_tmp


def manifest(root: Path, paths: list[Path]) -> Path:
    """Returns the manifest written for `paths` (utt ids F000, F001, ... in this order)."""
    out = root / "artifacts" / "manifest" / "iemocap.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([manifest_row(i, p) for i, p in enumerate(paths)], columns=MANIFEST_HEADER).to_csv(out, index=False)
    return out


def run_features(feature_set: str = "tiny") -> int:
    return cli.main(["features", "--set", feature_set, "--device", "cpu"])


def outputs(root: Path) -> list[str]:
    """Returns every file under the features stage's output folders (temporary files included)."""
    return sorted(p.name for folder in ("artifacts/features", "results/features") for p in (root / folder).glob("*"))


# ---- wav headers: every defect is an AudioError naming the file -------------------------------------------


def riff(fmt: bytes | None, data: bytes | None, data_declared: int | None = None) -> bytes:
    """Returns RIFF/WAVE bytes with the given fmt body and data payload (either may be left out)."""
    body = b"WAVE"
    if fmt is not None:
        body += b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if data is not None:
        size = len(data) if data_declared is None else data_declared
        body += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


PCM16_MONO = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
HEADER_DEFECTS = {
    "empty file": (b"", "empty file (0 bytes)"),
    "not RIFF": (b"ID3\x04" + bytes(60), "not a RIFF/WAVE file"),
    "cut inside the header": (b"RIFF\x00\x00", "not a RIFF/WAVE file"),
    "no data chunk": (riff(PCM16_MONO, None), "truncated: no data chunk found"),
    "data before fmt": (riff(None, bytes(64)) + b"fmt " + struct.pack("<I", 16) + PCM16_MONO, "data chunk before fmt"),
    "short fmt chunk": (riff(PCM16_MONO[:10], bytes(64)), "truncated fmt chunk"),
    "zero channels": (riff(struct.pack("<HHIIHH", 1, 0, 16000, 0, 2, 16), bytes(64)), "corrupt fmt chunk"),
    "data shorter than declared": (riff(PCM16_MONO, bytes(64), data_declared=6400), "truncated: header declares 6400"),
    "empty data chunk": (riff(PCM16_MONO, b""), "no audio samples (empty data chunk)"),
}


@pytest.mark.reliability("audio")
@pytest.mark.parametrize("defect", list(HEADER_DEFECTS))
def test_wav_header_defects_name_the_file(tmp_path, defect):
    content, message = HEADER_DEFECTS[defect]
    path = tmp_path / "dir é" / "utt 1.wav"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(AudioError, match="utt 1.wav: " + message.replace("(", r"\(").replace(")", r"\)")):
        audio.inspect(path)


@pytest.mark.reliability("audio")
@pytest.mark.parametrize("container, subtype, tag", [
    ("WAV", "ULAW", 7), ("WAV", "ALAW", 6), ("WAV", "MS_ADPCM", 2), ("WAV", "IMA_ADPCM", 17), ("WAV", "GSM610", 49),
    ("WAVEX", "ULAW", 7), ("WAVEX", "ALAW", 6),  # the tag hides in the extensible header's sub-format
])
def test_compressed_wavs_are_refused_naming_the_encoding(tmp_path, container, subtype, tag):
    path = write_wav(tmp_path / f"{subtype}.wav", tone(0.5, 8000), 8000, subtype, container)
    with pytest.raises(AudioError, match=rf"{subtype}\.wav: unsupported wav encoding \(format tag {tag}\)"):
        audio.read(path)


@pytest.mark.reliability("audio")
@pytest.mark.parametrize("make, message", [
    (lambda path: None, "file not found"),
    (lambda path: path.mkdir(), "is a directory, not a wav file"),
])
def test_a_wav_path_that_is_missing_or_a_folder_names_it(tmp_path, make, message):
    path = tmp_path / "a.wav"
    make(path)
    with pytest.raises(AudioError, match=f"a.wav: {message}"):
        audio.read(path)


@pytest.mark.reliability("audio")
@pytest.mark.parametrize("container, subtype, tolerance", [
    ("WAV", "PCM_U8", 1 / 128), ("WAV", "PCM_24", 2.0**-23), ("WAV", "PCM_32", 2.0**-31), ("WAV", "FLOAT", 0.0),
    ("WAV", "DOUBLE", 0.0), ("WAVEX", "PCM_16", 2.0**-15), ("WAVEX", "FLOAT", 0.0),
])
def test_other_pcm_and_float_encodings_read_the_same_samples(tmp_path, container, subtype, tolerance):
    y = tone(0.5, 16000)
    samples, rate = audio.read(write_wav(tmp_path / "a.wav", y, 16000, subtype, container))
    assert rate == 16000 and samples.dtype == np.float32 and samples.shape == y.shape
    np.testing.assert_allclose(samples, y, rtol=0, atol=tolerance + 1e-7)  # quantisation step of the encoding


# ---- samples: NaN refused, clipping accepted ----------------------------------------------------------------


@pytest.mark.reliability("audio")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_samples_stop_the_stage_naming_the_wav(stage, capsys, bad):
    good = write_wav(stage / "corpus" / "good.wav", tone(1.0, 16000), 16000)
    y = tone(1.0, 16000)
    y[1234] = bad
    broken = write_wav(stage / "corpus" / "broken.wav", y, 16000, "FLOAT")
    manifest(stage, [good, broken])
    assert run_features() == 1
    assert f"{broken}: contains NaN or infinite samples" in capsys.readouterr().err
    assert outputs(stage) == []


@pytest.mark.reliability("audio")
def test_clipped_out_of_range_and_silent_audio_give_finite_features(stage):
    # Clipping is accepted as it is: the real corpora hold clipped shouting, the authors' pipeline keeps
    # it, and a clipped clip is still a valid signal. Digital silence hits the MFCC's log floor, not -inf.
    loud = 8.0 * tone(2.0, 16000)  # peaks at 3.2
    paths = [
        write_wav(stage / "corpus" / "clipped.wav", np.clip(loud, -1.0, 1.0), 16000),  # int16 full scale
        write_wav(stage / "corpus" / "over.wav", loud, 16000, "FLOAT"),  # float beyond [-1, 1], kept unclipped
        write_wav(stage / "corpus" / "zeros.wav", np.zeros(32000, np.float32), 16000),
    ]
    manifest(stage, paths)
    assert run_features() == 0
    payload = torch.load(stage / "artifacts/features/tiny.pt")
    for key in ("mfcc", "delta", "delta_delta"):
        assert torch.isfinite(payload[key]).all(), key
    # Read as they are: the float file's samples reach the MFCC unclipped, and differ from the clipped ones.
    over, _ = audio.read(paths[1])
    assert np.abs(over).max() > 3.0
    speech = features.remove_silence(over)
    expected = features.extract(torch.from_numpy(features.fix_length(speech, 96000))[None])[0][0]
    # Within the summation-order tolerance of tests/test_mfcc.py: the stage's batch against one clip.
    torch.testing.assert_close(payload["mfcc"][1], expected, rtol=BATCH_RTOL, atol=BATCH_ATOL)
    assert not torch.equal(payload["mfcc"][0], payload["mfcc"][1])


# ---- sample rate and channels -------------------------------------------------------------------------------


@pytest.mark.reliability("audio")
def test_other_sample_rates_are_resampled_to_16k(stage):
    rates = [16000, 22050, 44100, 48000]
    manifest(stage, [write_wav(stage / "corpus" / f"{r}.wav", tone(3.0, r), r) for r in rates])
    assert run_features("tiny-kept") == 0
    payload = torch.load(stage / "artifacts/features/tiny-kept.pt")
    # 3 s at any rate is 48,000 samples at 16 kHz; a file read at its own rate would be 3 s x rate / 16 kHz.
    assert payload["speech_samples"].tolist() == [48000] * len(rates)
    reference = payload["mfcc"][0]
    scale = reference.abs().max()
    for i, rate in enumerate(rates[1:], start=1):
        # Measured: at most 1 % of the largest coefficient apart (resampling filters), mean 0.004.
        assert (payload["mfcc"][i] - reference).abs().max() < 0.02 * scale, rate
    # The check bites: a 48 kHz file taken as 16 kHz (pitch a third) is far from the reference.
    y = soundfile.read(stage / "corpus" / "48000.wav", dtype="float32")[0][:96000]
    wrong = features.extract(torch.from_numpy(y)[None])[0][0]
    assert (wrong - reference).abs().max() > 0.1 * scale


@pytest.mark.reliability("audio")
def test_a_stereo_wav_passes_the_manifest_and_stops_features_by_name(stage, capsys):
    corpus = write_iemocap(stage / "c", [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_F001", "sad")])
    stereo = corpus.wavs["Ses01F_impro01_F001"]
    y = tone(0.5, 16000)
    write_wav(stereo, np.stack([y, 0.5 * y], axis=1), 16000)
    assert cli.main(["manifest", "--corpus", "iemocap", "--root", str(corpus.root)]) == 0
    rows = pd.read_csv(stage / "artifacts/manifest/iemocap.csv", dtype=str)
    assert rows["num_samples"].tolist() == ["800", "8000"]  # per channel, from the header
    assert run_features() == 1
    assert f"{stereo}: 2 channels; the corpora are mono" in capsys.readouterr().err
    assert outputs(stage) == []


# ---- manifests and corpus paths -----------------------------------------------------------------------------


@pytest.mark.reliability("manifest")
def test_a_duplicated_utterance_in_the_manifest_stops_features_naming_the_line(stage, capsys):
    paths = [write_wav(stage / "corpus" / f"{i}.wav", tone(1.0, 16000), 16000) for i in range(3)]
    path = manifest(stage, paths)
    rows = pd.read_csv(path, dtype=str)
    rows.loc[2, "utt_id"] = rows.loc[0, "utt_id"]
    rows.to_csv(path, index=False)
    assert run_features() == 1
    message = "artifacts/manifest/iemocap.csv:4: duplicated utt_id: 'iemocap/Ses01F_impro01_F000'"
    assert message in capsys.readouterr().err
    assert outputs(stage) == []


@pytest.mark.reliability("corpus path")
@pytest.mark.parametrize("verb", ["fingerprint", "manifest"])
@pytest.mark.parametrize("make, message", [
    (lambda root: root.write_text("not a folder"), "corpus root is a file, not a directory"),
    (lambda root: None, "corpus root does not exist"),
])
def test_a_corpus_path_from_the_environment_that_is_a_file_or_missing(stage, monkeypatch, capsys, verb, make, message):
    root = stage / "IEMOCAP é"
    make(root)
    monkeypatch.setenv("SDCAFF_IEMOCAP", str(root))
    assert cli.main([verb, "--corpus", "iemocap"]) == 1
    assert f"{root}: iemocap {message}" in capsys.readouterr().err
    assert not (stage / "artifacts").exists() and not (stage / "results").exists()


@pytest.mark.reliability("paths")
def test_spaces_and_non_ascii_paths_through_the_features_stage(stage):
    y = tone(2.0, 16000)
    plain = write_wav(stage / "corpus" / "plain.wav", y, 16000)
    odd = write_wav(stage / "my corpus é" / "Sess 情" / "utt ü 1.wav", y, 16000)
    manifest(stage, [plain, odd])
    assert run_features() == 0
    payload = torch.load(stage / "artifacts/features/tiny.pt")
    assert torch.equal(payload["speech_samples"][0], payload["speech_samples"][1])
    # Two rows of one batch: MKL may give rows of a batched matmul different kernel paths on another CPU kind.
    for key in ("mfcc", "delta", "delta_delta"):
        torch.testing.assert_close(payload[key][0], payload[key][1], rtol=BATCH_RTOL, atol=BATCH_ATOL, msg=key)

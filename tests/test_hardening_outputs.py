"""Issue #12, "never destroy, never half-write": synth's folder, splits and features, a full disk, empty paths.

Each case runs a stage command the way a user would and checks what is left on disk afterwards: the
previous outputs byte for byte (or the complete new ones), no hidden temporary, and a message naming the
path. `make reliability` counts them with every other test marked `reliability`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from test_splits import REPO_PARAMS, iemocap_frame, msp_frame, write_manifest
from sdcaff import cli
from sdcaff.data import splits, synthetic
from sdcaff.errors import ManifestError

PARAMS = """\
synth:
  seed: 5
  iemocap_scale: 0.004
  iemocap_improvised_share: null
  msp_improv_scale: 0.003
  workers: 1
corpora:
  iemocap: {root: null}
  msp-improv: {root: null}
fingerprint:
  out_dir: results/corpora
env:
  threads: 2
  deterministic: true
  device: cpu
features:
  batch_size: 2
feature_sets:
  tiny:
    corpus: iemocap
"""
MANIFEST_HEADER = [
    "utt_id", "corpus", "path", "session", "speaker", "gender", "label", "mode", "sample_rate", "num_samples", "target",
]
SYNTH_MSP = ["synth", "--corpus", "msp-improv", "--seed", "5", "--scale", "0.003"]


@pytest.fixture
def stage(in_tmp, monkeypatch):
    """Returns tmp_path, the working directory, holding PARAMS as params.yaml and no corpus path in the environment."""
    for var in ("SDCAFF_IEMOCAP", "SDCAFF_MSP_IMPROV", "SDCAFF_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    (in_tmp / "params.yaml").write_text(PARAMS)
    return in_tmp


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Returns relative path -> (content, inode) of every file under root, hidden ones included."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_ino)
            for p in sorted(root.rglob("*")) if p.is_file()}


def licensed_copy(root: Path) -> Path:
    """Returns `root` after writing a stand-in licensed corpus there, synth's marker included (copied with it)."""
    (root / "Session1" / "dialog").mkdir(parents=True)
    (root / "Session1" / "dialog" / "Ses01F_impro01.txt").write_text("the only copy\n")
    (root / synthetic.MARKER).write_text(f"{synthetic.MARKER_HEAD}: synthetic iemocap corpus, seed 1, scale 1\n")
    return root


# ---- synth destroys nothing it did not write ------------------------------------------------------------


def _user_folder(root: Path) -> Path:
    (root / "mine").mkdir()
    (root / "mine" / "thesis.tex").write_text("years of work")
    return root / "mine"


def _user_file(root: Path) -> Path:
    (root / "mine").write_text("a file, not a folder")
    return root / "mine"


def _foreign_marker(root: Path) -> Path:
    folder = _user_folder(root)
    (folder / synthetic.MARKER).write_text("")  # the name alone is not synth's marker
    return folder


@pytest.mark.reliability("destroy")
@pytest.mark.parametrize("make", [_user_folder, _user_file, _foreign_marker], ids=["folder", "file", "empty marker"])
def test_synth_refuses_an_existing_output_it_did_not_write(stage, capsys, make):
    out = make(stage)
    before = snapshot(stage)
    assert cli.main([*SYNTH_MSP, "--out", "mine"]) == 1
    err = capsys.readouterr().err
    assert "mine: " in err and ("not written by `sdcaff synth`" in err or "is not a folder" in err)
    assert snapshot(stage) == before and out.exists()


@pytest.mark.reliability("destroy")
def test_synth_refuses_the_working_directory(stage, capsys):
    before = snapshot(stage)
    assert cli.main([*SYNTH_MSP, "--out", "."]) == 1
    assert "working directory" in capsys.readouterr().err
    assert snapshot(stage) == before


@pytest.mark.reliability("destroy")
def test_synth_replaces_its_own_stand_in_and_corpus(stage, monkeypatch):
    out = stage / "artifacts" / "corpora" / "msp-improv"
    monkeypatch.setenv("SDCAFF_MSP_IMPROV", str(stage / "elsewhere"))
    assert cli.main(["synth", "--corpus", "msp-improv"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [synthetic.MARKER, "NOTE.txt"]
    monkeypatch.delenv("SDCAFF_MSP_IMPROV")
    assert cli.main(["synth", "--corpus", "msp-improv"]) == 0
    assert (out / "Evalution.txt").is_file() and not (out / "NOTE.txt").exists()
    marker = (out / synthetic.MARKER).read_text()
    assert marker.startswith(synthetic.MARKER_HEAD) and "msp-improv" in marker and "seed 5" in marker
    assert cli.main(["synth", "--corpus", "msp-improv", "--seed", "6"]) == 0
    assert "seed 6" in (out / synthetic.MARKER).read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["msp-improv"]  # nothing moved aside is left


def _env_at_default_out(stage: Path, monkeypatch) -> list[str]:
    monkeypatch.setenv("SDCAFF_IEMOCAP", "artifacts/corpora/iemocap")  # where the synth stage writes
    return ["synth", "--corpus", "iemocap"]


def _params_at_out(stage: Path, monkeypatch) -> list[str]:
    root = "iemocap: {root: artifacts/corpora/iemocap}"
    (stage / "params.yaml").write_text(PARAMS.replace("iemocap: {root: null}", root))
    return ["synth", "--corpus", "msp-improv", "--out", "artifacts/corpora/iemocap/x"]


def _other_corpus_inside_out(stage: Path, monkeypatch) -> list[str]:
    monkeypatch.setenv("SDCAFF_MSP_IMPROV", "artifacts/corpora/iemocap/Session1")
    return ["synth", "--corpus", "iemocap"]


@pytest.mark.reliability("destroy")
@pytest.mark.parametrize("configure", [_env_at_default_out, _params_at_out, _other_corpus_inside_out],
                         ids=["env var is the output", "params root holds the output", "output holds a root"])
def test_synth_never_writes_at_a_configured_corpus_root(stage, monkeypatch, capsys, configure):
    licensed_copy(stage / "artifacts" / "corpora" / "iemocap")
    argv = configure(stage, monkeypatch)
    before = snapshot(stage)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "artifacts/corpora/iemocap" in err and "corpus directory" in err
    assert ("SDCAFF_" in err) or ("corpora.iemocap.root" in err)
    assert snapshot(stage) == before


# ---- splits: every protocol's files together, or none -------------------------------------------------


def splits_stage(root: Path, monkeypatch) -> Path:
    """Returns the splits folder after writing both manifests and pointing SDCAFF_PARAMS at the repo's params."""
    iemocap = iemocap_frame({"neu": 40, "sad": 30, "ang": 20, "exc": 25, "hap": 10}, {"neu": 15, "ang": 10})
    write_manifest(iemocap, root / "artifacts/manifest/iemocap.csv")
    write_manifest(msp_frame(12), root / "artifacts/manifest/msp-improv.csv")
    monkeypatch.setenv("SDCAFF_PARAMS", str(REPO_PARAMS))
    return root / "artifacts" / "splits"


@pytest.mark.reliability("half-written")
def test_splits_failing_on_the_fifth_protocol_writes_none(stage, monkeypatch, capsys):
    out = splits_stage(stage, monkeypatch)
    assert cli.main(["splits", "--protocol", "iemocap-authors"]) == 0
    before = snapshot(out)
    names = list(splits.load_params(REPO_PARAMS).protocols)
    assert len(names) == 7
    build = splits.build

    def fail_fifth(name, *args):
        if name == names[4]:
            raise ManifestError(f"{name}: broken on purpose")
        return build(name, *args)

    monkeypatch.setattr(splits, "build", fail_fifth)
    assert cli.main(["splits"]) == 1
    assert f"{names[4]}: broken on purpose" in capsys.readouterr().err
    assert snapshot(out) == before  # the old pair, untouched; no new file and no temporary


@pytest.mark.reliability("disk full")
def test_splits_on_a_full_disk_names_the_folder_and_writes_none(stage, monkeypatch, capsys):
    out = splits_stage(stage, monkeypatch)
    assert cli.main(["splits", "--protocol", "iemocap-authors"]) == 0
    before = snapshot(out)
    to_csv, calls = pd.DataFrame.to_csv, []

    def fill_up(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return to_csv(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", fill_up)
    assert cli.main(["splits"]) == 1
    assert "artifacts/splits (writing 14 files): no space left on device" in capsys.readouterr().err
    assert len(calls) == 5 and snapshot(out) == before


# ---- features: stale temporaries, an unwritable results folder, a full disk -----------------------------


@pytest.fixture
def features_stage(stage):
    """Returns tmp_path after writing two wavs and their manifest for feature set `tiny`."""
    rows = []
    for i, seconds in enumerate((1.5, 2.0)):
        path = stage / "corpus" / f"{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(seconds * 16000)) / 16000
        soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000, subtype="PCM_16")
        rows.append({"utt_id": f"iemocap/Ses01F_impro01_F{i:03d}", "corpus": "iemocap", "path": str(path),
                     "session": 1, "speaker": "Ses01_F", "gender": "F", "label": "neu", "mode": "improvised",
                     "sample_rate": 16000, "num_samples": len(t), "target": ""})
    manifest = stage / "artifacts" / "manifest" / "iemocap.csv"
    manifest.parent.mkdir(parents=True)
    pd.DataFrame(rows, columns=MANIFEST_HEADER).to_csv(manifest, index=False)
    return stage


def run_features() -> int:
    return cli.main(["features", "--set", "tiny", "--device", "cpu"])


def outputs(root: Path) -> dict[str, tuple[bytes, int]]:
    """Returns snapshot() of the features stage's two output folders."""
    return {f"{folder}/{k}": v for folder in ("artifacts/features", "results/features")
            if (root / folder).is_dir() for k, v in snapshot(root / folder).items()}


@pytest.mark.reliability("half-written")
def test_features_removes_its_own_stale_temporaries_only(features_stage):
    tensors, results = features_stage / "artifacts" / "features", features_stage / "results" / "features"
    tensors.mkdir(parents=True)
    results.mkdir(parents=True)
    stale = [tensors / ".tiny.pt.k3_x9q0a.tmp", results / ".tiny.json.abcdefgh.tmp"]
    kept = [tensors / ".other.pt.k3_x9q0a.tmp", tensors / ".tiny.pt.short.tmp", tensors / "tiny.pt.k3_x9q0a.tmp",
            tensors / ".tiny.pt.k3_x9q0a.tmp.keep"]
    for path in stale + kept:
        path.write_bytes(bytes(1024))
    assert run_features() == 0
    assert sorted(p.name for p in tensors.iterdir()) == sorted([p.name for p in kept] + ["tiny.pt"])
    assert sorted(p.name for p in results.iterdir()) == ["tiny.json"]


@pytest.mark.reliability("half-written")
def test_features_unwritable_results_folder_keeps_the_previous_tensor_file(features_stage, capsys):
    assert run_features() == 0
    tensor_file = features_stage / "artifacts" / "features" / "tiny.pt"
    before = snapshot(tensor_file.parent)
    results = features_stage / "results" / "features"
    for path in results.iterdir():
        path.unlink()
    results.rmdir()
    results.write_text("a file where the results folder should be")
    assert run_features() == 1
    assert "results/features: cannot write tiny.json there" in capsys.readouterr().err
    assert snapshot(tensor_file.parent) == before  # same inode: the old file was never replaced


@pytest.mark.reliability("disk full")
def test_features_on_a_full_disk_keeps_both_previous_outputs(features_stage, monkeypatch, capsys):
    assert run_features() == 0
    before = outputs(features_stage)

    def fill_up(obj, stream, *args, **kwargs):
        stream.write(b"x" * 4096)  # part of the archive made it to disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fill_up)
    assert run_features() == 1
    err = capsys.readouterr().err
    assert "artifacts/features, results/features (writing 2 files): no space left on device" in err
    assert outputs(features_stage) == before


# ---- an empty corpus variable is an error, never the synthetic corpus -----------------------------------


@pytest.mark.reliability("paths")
@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
@pytest.mark.parametrize("corpus,var", [("iemocap", "SDCAFF_IEMOCAP"), ("msp-improv", "SDCAFF_MSP_IMPROV")])
def test_an_empty_corpus_variable_is_an_error(stage, monkeypatch, capsys, corpus, var, value):
    monkeypatch.setenv(var, value)
    for verb in ("synth", "fingerprint"):
        assert cli.main([verb, "--corpus", corpus]) == 1
        assert f"${var} is set but empty" in capsys.readouterr().err
    assert not (stage / "artifacts").exists() and not (stage / "results").exists()


@pytest.mark.reliability("destroy")
def test_dvc_repro_of_synth_leaves_a_licensed_copy_at_its_output(tmp_path):
    # DVC deletes a stage's outputs before its command unless they persist; synth's outputs do, so a real
    # corpus a user put where synth writes (and pointed SDCAFF_IEMOCAP at) survives `dvc repro`.
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    for name in ("dvc.yaml", "params.yaml", "profile.yaml"):
        shutil.copy(repo / name, tmp_path / name)
    shutil.copytree(repo / "sdcaff", tmp_path / "sdcaff", ignore=shutil.ignore_patterns("__pycache__"))  # deps
    corpus = tmp_path / "artifacts" / "corpora" / "iemocap"
    (corpus / "Session1" / "dialog").mkdir(parents=True)
    (corpus / "Session1" / "dialog" / "Ses01F_impro01.txt").write_text("the only copy\n")
    before = snapshot(corpus)
    venv_bin = Path(sys.executable).parent
    environ = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
               "SDCAFF_IEMOCAP": str(corpus)}
    environ.pop("SDCAFF_PARAMS", None)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([str(venv_bin / "dvc"), "init", "-q"], cwd=tmp_path, check=True, env=environ)
    run = subprocess.run([str(venv_bin / "dvc"), "repro", "synth@iemocap"], cwd=tmp_path, env=environ,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "corpus" in (run.stdout + run.stderr)
    assert snapshot(corpus) == before

import logging
import os
import re
import stat

import pandas as pd
import pytest
import soundfile

from corpus_builders import (
    IEMOCAP_UTTERANCES, MSP_IMPROV_UTTERANCES, rewrite_header, write_iemocap, write_msp_improv,
)
from sdcaff import cli
from sdcaff.data import manifest, splits

PARAMS = """\
corpora:
  iemocap: {root: null}
  msp-improv: {root: null}
manifest:
  out_dir: artifacts/manifest
  allow_missing: %s
"""


@pytest.fixture
def stage(in_tmp, monkeypatch):
    """Runs in tmp_path with its own params.yaml and no corpus paths from the environment."""
    for var in ("SDCAFF_IEMOCAP", "SDCAFF_MSP_IMPROV", "SDCAFF_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    (in_tmp / "params.yaml").write_text(PARAMS % "false")
    return in_tmp


def read_csv(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def snapshot(root):
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_iemocap_manifest_follows_the_contract(stage):
    corpus = write_iemocap(stage / "IEMOCAP_full_release")
    assert cli.main(["manifest", "--corpus", "iemocap", "--root", str(corpus.root), "--out", "m.csv"]) == 0
    frame = read_csv(stage / "m.csv")
    assert tuple(frame.columns) == manifest.COLUMNS + ("dialog", "start_s", "end_s", "valence", "activation", "dominance")
    assert frame["utt_id"].tolist() == sorted(f"iemocap/{u}" for u, _ in IEMOCAP_UTTERANCES)
    trap = frame.set_index("utt_id").loc["iemocap/Ses01F_impro01_M000"]
    assert (trap["session"], trap["speaker"], trap["gender"], trap["sample_rate"], trap["target"]) == (
        "1", "Ses01_M", "M", "16000", "",
    )
    assert len(splits.read_manifest(stage / "m.csv", "iemocap").frame) == len(IEMOCAP_UTTERANCES)


def test_msp_improv_manifest_keeps_empty_labels_and_integer_columns(stage):
    corpus = write_msp_improv(stage / "MSP-IMPROV")
    assert cli.main(["manifest", "--corpus", "msp-improv", "--root", str(corpus.root), "--out", "m.csv"]) == 0
    frame = read_csv(stage / "m.csv").set_index("utt_id")
    assert len(frame) == len(MSP_IMPROV_UTTERANCES)
    row = frame.loc["msp-improv/MSP-IMPROV-S20N-M06-P-MF10"]
    assert (row["label"], row["target"], row["mode"], row["scenario"], row["valence"]) == ("", "N", "P", "20", "")
    assert frame.loc["msp-improv/MSP-IMPROV-S01A-F01-P-FM01", "num_samples"] == "2205"
    assert len(splits.read_manifest(stage / "m.csv", "msp-improv").frame) == len(MSP_IMPROV_UTTERANCES)


@pytest.mark.reliability("determinism")
def test_same_corpus_gives_the_same_bytes(stage):
    corpus = write_iemocap(stage / "c")
    for out in ("a.csv", "b.csv"):
        assert cli.main(["manifest", "--corpus", "iemocap", "--root", str(corpus.root), "--out", out]) == 0
    assert (stage / "a.csv").read_bytes() == (stage / "b.csv").read_bytes()


def test_defaults_come_from_environment_and_params(stage, monkeypatch):
    corpus = write_msp_improv(stage / "licensed" / "MSP-IMPROV")
    monkeypatch.setenv("SDCAFF_MSP_IMPROV", str(corpus.root))
    assert cli.main(["manifest", "--corpus", "msp-improv"]) == 0
    assert len(read_csv(stage / "artifacts" / "manifest" / "msp-improv.csv")) == len(MSP_IMPROV_UTTERANCES)


def test_count_differences_warn_on_a_real_copy_only(stage, caplog):
    write_iemocap(stage / "artifacts" / "corpora" / "iemocap")  # where the synthetic default lives
    real = write_iemocap(stage / "real")
    with caplog.at_level(logging.INFO, logger="sdcaff.data.manifest"):
        assert cli.main(["manifest", "--corpus", "iemocap"]) == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "synthetic corpus: smaller by design" in caplog.text
        caplog.clear()
        assert cli.main(["manifest", "--corpus", "iemocap", "--root", str(real.root), "--out", "real.csv"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(manifest.PARSERS["iemocap"].KNOWN_COUNTS)
    assert "wav files per session differs from the full release: Session1 4 vs 1819 (-1815)" in warnings[0]


def test_compare_counts_is_silent_on_the_full_release_counts(caplog):
    found = {name: dict(known) for name, known in manifest.PARSERS["msp-improv"].KNOWN_COUNTS.items()}
    with caplog.at_level(logging.INFO, logger="sdcaff.data.manifest"):
        assert manifest.compare_counts("msp-improv", found, synthetic=False) == 0
    assert "total 7798; full release 7798" in caplog.text and "differs" not in caplog.text


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "corpus root does not exist; set params corpora.iemocap.root or $SDCAFF_IEMOCAP"),
    (lambda root: root.write_text("not a folder"), "corpus root is a file, not a directory"),
])
@pytest.mark.reliability("corpus path")
def test_bad_root_is_a_clear_error(stage, capsys, make, message):
    make(stage / "corpus")
    assert cli.main(["manifest", "--corpus", "iemocap", "--root", "corpus", "--out", "m.csv"]) == 1
    assert f"sdcaff manifest: error: corpus: iemocap {message}" in capsys.readouterr().err
    assert not (stage / "m.csv").exists()


@pytest.mark.reliability("read-only corpus")
def test_output_inside_the_corpus_is_refused(stage, capsys):
    corpus = write_iemocap(stage / "c")
    before = snapshot(corpus.root)
    out = corpus.root / "Session1" / "manifest.csv"
    assert cli.main(["manifest", "--corpus", "iemocap", "--root", str(corpus.root), "--out", str(out)]) == 1
    assert "refusing to write the manifest" in capsys.readouterr().err
    assert snapshot(corpus.root) == before


@pytest.mark.reliability("manifest")
def test_missing_wav_stops_unless_allowed(stage, capsys):
    corpus = write_iemocap(stage / "c", without_wav=["Ses04F_impro02_F003"])
    args = ["manifest", "--corpus", "iemocap", "--root", str(corpus.root), "--out", "m.csv"]
    assert cli.main(args) == 1
    assert "Ses04F_impro02_F003.wav: wav not found, named by" in capsys.readouterr().err
    assert cli.main(args + ["--allow-missing"]) == 0
    assert len(read_csv(stage / "m.csv")) == len(IEMOCAP_UTTERANCES) - 1
    (stage / "params.yaml").write_text(PARAMS % "true")
    (stage / "m.csv").unlink()
    assert cli.main(args) == 0
    assert len(read_csv(stage / "m.csv")) == len(IEMOCAP_UTTERANCES) - 1


@pytest.mark.reliability("labels")
def test_bad_label_line_reaches_the_user_with_file_and_line(stage, capsys):
    corpus = write_msp_improv(stage / "c")
    with open(corpus.label_files["Evaluation.txt"], "a") as f:
        f.write("UTD-IMPROV-S01A-F01-P-FM01.avi; N; A:2.0;\n")
    assert cli.main(["manifest", "--corpus", "msp-improv", "--root", str(corpus.root), "--out", "m.csv"]) == 1
    assert "Evaluation.txt:25: MSP-IMPROV-S01A-F01-P-FM01.wav already has a block at" in capsys.readouterr().err


@pytest.mark.reliability("corpus path")
def test_corpus_without_utterances_is_an_error(stage, capsys):
    (stage / "c" / "Session1" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    assert cli.main(["manifest", "--corpus", "iemocap", "--root", "c", "--out", "m.csv"]) == 1
    assert "c: no iemocap utterances found" in capsys.readouterr().err


@pytest.mark.reliability("read-only corpus")
def test_read_only_corpus_parses_and_is_left_untouched(stage):
    corpus = write_msp_improv(stage / "ro")
    paths = [corpus.root, *corpus.root.rglob("*")]
    before = snapshot(corpus.root)
    for path in paths:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        assert cli.main(["manifest", "--corpus", "msp-improv", "--root", str(corpus.root), "--out", "m.csv"]) == 0
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert snapshot(corpus.root) == before
    assert len(read_csv(stage / "m.csv")) == len(MSP_IMPROV_UTTERANCES)


@pytest.mark.reliability("paths")
def test_paths_with_spaces_and_non_ascii_characters(stage):
    corpus = write_iemocap(stage / "my corpora" / "IEMOCAP é 情")
    out = stage / "out dir ü" / "manifest é.csv"
    assert cli.main(["manifest", "--corpus", "iemocap", "--root", str(corpus.root), "--out", str(out)]) == 0
    frame = read_csv(out)
    assert frame["path"].tolist() == [str(corpus.wavs[u.split("/", 1)[1]]) for u in frame["utt_id"]]
    assert all(os.path.isfile(p) for p in frame["path"])


def test_unknown_corpus_is_refused_by_the_parser(stage, capsys):
    with pytest.raises(SystemExit):
        cli.main(["manifest", "--corpus", "ravdess"])
    assert "invalid choice: 'ravdess'" in capsys.readouterr().err


# Headers libsndfile opens with "Unspecified internal error" or "No 'data' chunk marker", or reads with another frame
# count than the header gives: each must stop the manifest stage naming the wav and the cause.
HEADER_DEFECTS = {
    "block align 3 for mono 16-bit": (dict(block=3), "block align 3 does not fit 1 channel\\(s\\) of 16-bit samples"),
    "block align 4 for mono 16-bit": (dict(block=4), "block align 4 does not fit .*\\(expected 2\\)"),
    "float tag on 16-bit data": (dict(tag=3), "float format \\(tag 3\\) with 16-bit samples"),
    "PCM with 0-bit samples": (dict(bits=0), "PCM with 0-bit samples"),
    "fact chunk of 2 bytes": (dict(fact=b"\x00\x00"), "malformed fact chunk \\(2 bytes"),
    "empty fact chunk": (dict(fact=b""), "malformed fact chunk \\(0 bytes"),
    "fact chunk past the end": (dict(fact=b"\x20\x03\x00\x00"), None),  # its size is set below
    "data chunk beyond the file": (dict(data_bytes=10**6), "truncated: header declares 1000000 data bytes"),
}


@pytest.mark.parametrize("defect", sorted(HEADER_DEFECTS))
@pytest.mark.reliability("audio")
def test_inconsistent_wav_header_stops_the_manifest_naming_wav_and_cause(stage, capsys, defect):
    corpus = write_iemocap(stage / "c")
    wav = corpus.wavs["Ses04F_impro02_F003"]
    fields, cause = HEADER_DEFECTS[defect]
    rewrite_header(wav, **fields)
    if cause is None:  # a fact chunk whose size field runs past the end of the file
        raw = bytearray(wav.read_bytes())
        raw[40:44] = (10**6).to_bytes(4, "little")
        wav.write_bytes(bytes(raw))
        cause = "truncated or corrupt: 'fact' chunk declares 1000000 bytes"
    assert cli.main(["manifest", "--corpus", "iemocap", "--root", str(corpus.root), "--out", "m.csv"]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"{re.escape(str(wav))}: .*{cause}", err), err
    assert not (stage / "m.csv").exists()


@pytest.mark.reliability("audio")
def test_a_well_formed_fact_chunk_passes_and_reads(stage):
    corpus = write_iemocap(stage / "c")
    wav = rewrite_header(corpus.wavs["Ses04F_impro02_F003"], fact=(800).to_bytes(4, "little"))
    assert cli.main(["manifest", "--corpus", "iemocap", "--root", str(corpus.root), "--out", "m.csv"]) == 0
    row = read_csv(stage / "m.csv").set_index("utt_id").loc["iemocap/Ses04F_impro02_F003"]
    assert row["num_samples"] == "800" and len(soundfile.read(wav)[0]) == 800


@pytest.mark.reliability("labels")
def test_empty_evaluation_txt_beside_a_good_evalution_txt_keeps_every_label(stage, caplog):
    corpus = write_msp_improv(stage / "c", label_file="Evalution.txt")
    args = ["manifest", "--corpus", "msp-improv", "--root", str(corpus.root)]
    assert cli.main(args + ["--out", "one.csv"]) == 0
    (corpus.root / "Evaluation.txt").write_bytes(b"\xef\xbb\xbf")
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.msp_improv"):
        assert cli.main(args + ["--out", "both.csv"]) == 0
    assert (stage / "both.csv").read_bytes() == (stage / "one.csv").read_bytes()
    assert "reading Evalution.txt (Evaluation.txt holds no evaluation block)" in caplog.text

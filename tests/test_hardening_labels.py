"""Issue #12, "never a silent wrong label": label files as real copies hold them after Windows and macOS tools.

Each case damages one label file of a corpus from corpus_builders the way a tool would (a byte-order mark, UTF-16,
CR line ends, indentation, a second spelling of the MSP-IMPROV file, NaN scores, another folder layout) and checks
that the parse gives the same rows as the untouched corpus, or stops naming the file, or warns with counts.
"""

from __future__ import annotations

import logging

import pytest

from corpus_builders import (
    IEMOCAP_UTTERANCES, MSP_IMPROV_UTTERANCES, msp_improv_header, reencode, write_iemocap, write_msp_improv, write_wav,
)
from sdcaff.data import iemocap, msp_improv
from sdcaff.errors import CorpusFormatError

DIALOG = "Ses01F_impro01"  # three summary lines, the gender trap among them
STEM = "MSP-IMPROV-S01A-F01-P-FM01"  # consensus A in the builder


@pytest.fixture
def iemocap_corpus(tmp_path):
    return write_iemocap(tmp_path / "IEMOCAP_full_release")


@pytest.fixture
def msp_corpus(tmp_path):
    return write_msp_improv(tmp_path / "MSP-IMPROV")


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# The builder's session6 holds one wav and no block: the untouched corpus already warns about it.
SESSION6 = "session6 has no evaluated utterance: none of its 1 wavs has a block in {}"


def drop_header(path):
    """Returns `path` after removing the `%` header and the blank line, so a summary line comes first."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("%") and lines[1] == "" and lines[2].startswith("[")
    path.write_text("\n".join(lines[2:]), encoding="utf-8")
    return path


# --- IEMOCAP label files ---------------------------------------------------------------------------


def summary_first_with_bom(path):
    reencode(drop_header(path), "utf-8", bom=True)


def indent_one_summary_line(path):
    text = path.read_text(encoding="utf-8")
    first = next(line for line in text.split("\n") if line.startswith("["))
    path.write_text(text.replace(first, " " + first), encoding="utf-8")


def pad_every_line(path):
    path.write_text("\n".join(f"  {line} \t" for line in path.read_text(encoding="utf-8").split("\n")), encoding="utf-8")


def cp1252_comment(path):
    # An evaluator's note saved by a Windows tool: en dash and curly quotes in cp1252, invalid as UTF-8.
    text = path.read_text(encoding="utf-8").replace("(tense)", "(tense \u2013 \u201cshouting\u201d)")
    path.write_bytes(text.encode("cp1252"))


def latin1_undefined_byte(path):
    # 0x81 is undefined in cp1252 too: only Latin-1 decodes it.
    path.write_bytes(path.read_bytes().replace(b"(tense)", b"(tense \x81\xe9)"))


def joined_files(path):
    # Two files concatenated by a tool that kept each one's byte-order mark: one lands mid-file.
    text = path.read_text(encoding="utf-8")
    cut = text.index("\n[", text.index("\n[") + 1) + 1  # the second summary line's start
    path.write_bytes(b"\xef\xbb\xbf" + text[:cut].encode() + b"\xef\xbb\xbf" + text[cut:].encode())


@pytest.mark.parametrize("damage", [
    summary_first_with_bom,
    lambda p: reencode(p, "utf-8", bom=True),
    indent_one_summary_line,
    pad_every_line,
    lambda p: reencode(p, "utf-16", "\r\n"),  # Notepad's "Unicode": UTF-16 LE with a mark, CRLF
    lambda p: reencode(drop_header(p), "utf-16-be", bom=True),
    lambda p: reencode(p, "utf-8", "\r"),  # classic macOS line ends
    lambda p: reencode(p, "utf-8", "\r\n", bom=True),
    cp1252_comment,
    latin1_undefined_byte,
    joined_files,
], ids=[
    "summary line first after a UTF-8 BOM", "UTF-8 BOM", "summary line indented by one space",
    "whitespace around every line", "UTF-16 LE BOM CRLF", "UTF-16 BE BOM, summary line first", "CR line ends",
    "UTF-8 BOM CRLF", "cp1252 byte in a comment", "Latin-1 byte in a comment", "BOM mid-file",
])
@pytest.mark.reliability("encoding")
def test_iemocap_label_file_as_a_tool_rewrote_it_gives_the_same_rows(iemocap_corpus, damage, caplog):
    before = iemocap.parse(iemocap_corpus.root)[0]
    caplog.clear()
    damage(iemocap_corpus.label_files[DIALOG])
    with caplog.at_level(logging.INFO, logger="sdcaff.data.iemocap"):
        after = iemocap.parse(iemocap_corpus.root)[0]
    assert after == before
    assert not warnings(caplog)


@pytest.mark.reliability("encoding")
def test_iemocap_encodings_other_than_utf8_are_logged(iemocap_corpus, caplog):
    reencode(iemocap_corpus.label_files[DIALOG], "utf-16")
    cp1252_comment(iemocap_corpus.label_files["Ses02M_impro03"])
    with caplog.at_level(logging.INFO, logger="sdcaff.data.iemocap"):
        iemocap.parse(iemocap_corpus.root)
    assert "label files by encoding: cp1252 x1, utf-16 x1, utf-8 x4" in caplog.text


@pytest.mark.reliability("encoding")
def test_iemocap_utf16_without_a_bom_is_refused_naming_the_file(iemocap_corpus):
    path = reencode(iemocap_corpus.label_files[DIALOG], "utf-16-le")
    with pytest.raises(CorpusFormatError, match=rf"{path}: holds NUL bytes and no byte-order mark"):
        iemocap.parse(iemocap_corpus.root)


@pytest.mark.reliability("encoding")
def test_iemocap_bom_decoded_twice_is_refused_naming_file_and_line(iemocap_corpus):
    # A UTF-8 file read as cp1252 and saved as UTF-8 again: the mark becomes visible text before the `[`.
    path = drop_header(iemocap_corpus.label_files[DIALOG])
    path.write_bytes(b"\xef\xbb\xbf".decode("cp1252").encode("utf-8") + path.read_bytes())
    with pytest.raises(CorpusFormatError, match=rf"{path}:1: text before a summary line's '\[start - end\]'"):
        iemocap.parse(iemocap_corpus.root)


@pytest.mark.reliability("labels")
def test_iemocap_label_file_without_a_summary_line_warns_with_counts(iemocap_corpus, caplog):
    path = iemocap_corpus.label_files["Ses02M_impro03"]
    path.write_text("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\nC-E1:\tNeutral;\t()\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.iemocap"):
        rows, _ = iemocap.parse(iemocap_corpus.root)
    assert len(rows) == len(IEMOCAP_UTTERANCES) - 1
    said = warnings(caplog)
    assert f"1 of 6 label files hold no summary line, so none of their utterances is labelled: {path}" in said
    # Session2 had only this dialog: the session, and its one wav, are reported too.
    assert "Session2 has no labelled utterance: 1 label files, 0 summary lines, 1 wavs" in said
    assert any(m.startswith("1 wav files have no summary line and are left out (Session2 1)") for m in said)


@pytest.mark.reliability("labels")
def test_iemocap_empty_label_file_warns(iemocap_corpus, caplog):
    iemocap_corpus.label_files["Ses04F_impro02"].write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.iemocap"):
        rows, _ = iemocap.parse(iemocap_corpus.root)
    assert "iemocap/Ses04F_impro02_F003" not in {r["utt_id"] for r in rows}
    assert any("Session4 has no labelled utterance" in m for m in warnings(caplog))


@pytest.mark.reliability("layout")
def test_iemocap_upper_case_extensions_are_read(iemocap_corpus):
    before = {r["utt_id"]: r for r in iemocap.parse(iemocap_corpus.root)[0]}
    label = iemocap_corpus.label_files[DIALOG]
    label.rename(label.with_suffix(".TXT"))
    wav = iemocap_corpus.wavs["Ses01F_impro01_M000"]
    wav.rename(wav.with_suffix(".WAV"))
    after = {r["utt_id"]: r for r in iemocap.parse(iemocap_corpus.root)[0]}
    assert after["iemocap/Ses01F_impro01_M000"]["path"] == str(wav.with_suffix(".WAV"))
    after["iemocap/Ses01F_impro01_M000"]["path"] = str(wav)
    assert after == before


@pytest.mark.reliability("layout")
def test_iemocap_wav_in_both_extension_cases_is_refused(iemocap_corpus):
    wav = iemocap_corpus.wavs["Ses01F_impro01_M000"]
    write_wav(wav.with_suffix(".WAV"))
    with pytest.raises(CorpusFormatError, match=r"both Ses01F_impro01_M000\.WAV and Ses01F_impro01_M000\.wav exist"):
        iemocap.parse(iemocap_corpus.root)


# --- MSP-IMPROV label file ---------------------------------------------------------------------------


def evaluation(corpus):
    return corpus.label_files["Evaluation.txt"]


@pytest.mark.parametrize("damage", [
    lambda p: reencode(p, "utf-8", bom=True),
    lambda p: reencode(p, "utf-8", "\r\n", bom=True),
    lambda p: reencode(p, "utf-16", "\r\n"),
    lambda p: reencode(p, "utf-8", "\r"),
    lambda p: p.write_text("\n".join(f" {line}  " for line in p.read_text().split("\n"))),
], ids=["UTF-8 BOM", "UTF-8 BOM CRLF", "UTF-16 LE BOM CRLF", "CR line ends", "indented, padded lines"])
@pytest.mark.reliability("encoding")
def test_msp_label_file_as_a_tool_rewrote_it_gives_the_same_rows(msp_corpus, damage, caplog):
    before = msp_improv.parse(msp_corpus.root)[0]
    caplog.clear()
    damage(evaluation(msp_corpus))
    with caplog.at_level(logging.INFO, logger="sdcaff.data.msp_improv"):
        after = msp_improv.parse(msp_corpus.root)[0]
    assert after == before
    assert {r["label"] for r in after} == {label or "" for _, label in MSP_IMPROV_UTTERANCES}
    assert warnings(caplog) == [SESSION6.format("Evaluation.txt")]


@pytest.mark.reliability("encoding")
def test_msp_bom_decoded_twice_is_refused_naming_file_and_line(msp_corpus):
    path = evaluation(msp_corpus)
    path.write_bytes(b"\xef\xbb\xbf".decode("cp1252").encode("utf-8") + path.read_bytes())
    with pytest.raises(CorpusFormatError, match=rf"{path}:1: text before a block header's UTD-IMPROV-"):
        msp_improv.parse(msp_corpus.root)


@pytest.mark.parametrize("empty", [b"", b"\xef\xbb\xbf\r\n", b"Evaluator01; Neutral; A:2.0; V:3.0; D:2.0;\n"],
                         ids=["empty", "BOM and a blank line", "no block header"])
@pytest.mark.reliability("labels")
def test_msp_label_file_without_blocks_beside_the_other_spelling_is_not_read(tmp_path, caplog, empty):
    corpus = write_msp_improv(tmp_path / "c", label_file="Evalution.txt")
    before = msp_improv.parse(corpus.root)[0]
    caplog.clear()
    (corpus.root / "Evaluation.txt").write_bytes(empty)
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.msp_improv"):
        assert msp_improv.parse(corpus.root)[0] == before
    assert warnings(caplog) == [
        f"{corpus.root}: both Evaluation.txt and Evalution.txt exist; reading Evalution.txt "
        "(Evaluation.txt holds no evaluation block)",
        SESSION6.format("Evalution.txt"),
    ]


@pytest.mark.reliability("labels")
def test_msp_label_files_without_blocks_warn_that_every_label_is_empty(msp_corpus, caplog):
    evaluation(msp_corpus).write_text("")
    (msp_corpus.root / "Evalution.txt").write_text("\n")
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.msp_improv"):
        rows, _ = msp_improv.parse(msp_corpus.root)
    assert {r["label"] for r in rows} == {""}
    said = warnings(caplog)
    assert "reading Evaluation.txt (neither holds an evaluation block)" in said[0]
    assert f"{evaluation(msp_corpus)} holds no evaluation block: all 7 wavs get an empty label" in said


@pytest.mark.reliability("labels")
def test_msp_single_label_file_without_blocks_warns(msp_corpus, caplog):
    evaluation(msp_corpus).write_bytes(b"\xef\xbb\xbf")  # an editor's "save as UTF-8" of an empty file
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.msp_improv"):
        msp_improv.parse(msp_corpus.root)
    assert any("holds no evaluation block: all 7 wavs get an empty label" in m for m in warnings(caplog))


@pytest.mark.reliability("labels")
def test_msp_session_without_an_evaluated_utterance_warns(tmp_path, caplog):
    utterances = [(stem, None if "-F03-" in stem else label) for stem, label in MSP_IMPROV_UTTERANCES]
    corpus = write_msp_improv(tmp_path / "c", utterances)
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.msp_improv"):
        msp_improv.parse(corpus.root)
    assert warnings(caplog) == [
        "session3 has no evaluated utterance: none of its 1 wavs has a block in Evaluation.txt",
        SESSION6.format("Evaluation.txt"),
    ]


@pytest.mark.parametrize("scores", [
    "A:2.2; V:3.0; D:NaN; N:NaN;", "A:NaN; V:nan; D:2.4; N:3.2", "A: NaN ;V:3.0;D:NAN;",
])
@pytest.mark.reliability("labels")
def test_msp_nan_attribute_scores_keep_the_label_and_are_counted(msp_corpus, caplog, scores):
    path = evaluation(msp_corpus)
    header = msp_improv_header(STEM, "A")
    path.write_text(path.read_text().replace(header, f"UTD-IMPROV-{STEM[len('MSP-IMPROV-'):]}.avi; H; {scores}"))
    with caplog.at_level(logging.INFO, logger="sdcaff.data.msp_improv"):
        row = {r["utt_id"]: r for r in msp_improv.parse(msp_corpus.root)[0]}[f"msp-improv/{STEM}"]
    nans = scores.upper().count("NAN")
    assert row["label"] == "H"
    assert sum(row[k] is None for k in ("activation", "valence", "dominance", "naturalness")) >= nans
    assert f"{nans} attribute scores are NaN" in caplog.text
    assert warnings(caplog) == [SESSION6.format("Evaluation.txt")]


@pytest.mark.reliability("labels")
def test_msp_unknown_consensus_label_is_kept_counted_and_warned(msp_corpus, caplog):
    path = evaluation(msp_corpus)
    text = path.read_text().replace(msp_improv_header(STEM, "A"), msp_improv_header(STEM, "Q"))
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.msp_improv"):
        row = {r["utt_id"]: r for r in msp_improv.parse(msp_corpus.root)[0]}[f"msp-improv/{STEM}"]
    assert row["label"] == "Q"  # the label map drops it, and counts it
    assert warnings(caplog) == [
        f"1 block headers carry a consensus label outside A/H/N/S/O/X ('Q' x1), kept as written, e.g. {path}:1",
        SESSION6.format("Evaluation.txt"),
    ]


# --- MSP-IMPROV layout -------------------------------------------------------------------------------


def without_paths(rows):
    return [{k: v for k, v in r.items() if k != "path"} for r in rows]


@pytest.mark.reliability("layout")
def test_msp_sessions_beside_the_label_file_parse_like_the_release_tree(tmp_path, caplog):
    release = msp_improv.parse(write_msp_improv(tmp_path / "release").root)[0]
    flat = write_msp_improv(tmp_path / "flat", layout="flat")
    assert not (flat.root / "Audio").exists()
    with caplog.at_level(logging.INFO, logger="sdcaff.data.msp_improv"):
        rows = msp_improv.parse(flat.root)[0]
    assert without_paths(rows) == without_paths(release)
    assert [r["path"] for r in rows] == [str(flat.wavs[r["utt_id"].split("/", 1)[1]]) for r in rows]
    assert rows[0]["path"].startswith(str(flat.root / "session1" / "S01A"))
    assert "wavs under ./" in caplog.text and f"skipped {len(flat.stray)} stray entries" in caplog.text


@pytest.mark.reliability("layout")
def test_msp_both_layouts_at_once_are_refused(msp_corpus):
    write_wav(msp_corpus.root / "session1" / "S01A" / "P" / f"{STEM}.wav")
    with pytest.raises(CorpusFormatError, match=rf"{msp_corpus.root}: session folders in both layouts"):
        msp_improv.parse(msp_corpus.root)


@pytest.mark.reliability("layout")
def test_msp_no_session_folders_names_the_root_and_both_layouts(msp_corpus):
    (msp_corpus.root / "Audio").rename(msp_corpus.root / "audio files")
    root = msp_corpus.root
    with pytest.raises(CorpusFormatError, match=rf"{root}: no session1..session6 folders in either layout: "
                                                rf"{root}/Audio/session<k>/.*\(the release's\) or {root}/session<k>/"):
        msp_improv.parse(root)


@pytest.mark.reliability("layout")
def test_msp_upper_case_extensions_are_read(msp_corpus):
    before = msp_improv.parse(msp_corpus.root)[0]
    wav = msp_corpus.wavs[STEM]
    wav.rename(wav.with_suffix(".WAV"))
    path = evaluation(msp_corpus)
    path.write_text(path.read_text().replace(f"{STEM[len('MSP-IMPROV-'):]}.avi", f"{STEM[len('MSP-IMPROV-'):]}.AVI"))
    after = msp_improv.parse(msp_corpus.root)[0]
    assert without_paths(after) == without_paths(before)
    assert str(wav.with_suffix(".WAV")) in {r["path"] for r in after}

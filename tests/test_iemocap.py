import logging

import pytest

from corpus_builders import IEMOCAP_UTTERANCES, write_iemocap, write_wav
from sdcaff.data import iemocap, manifest
from sdcaff.errors import AudioError, CorpusFormatError


@pytest.fixture
def corpus(tmp_path):
    return write_iemocap(tmp_path / "IEMOCAP_full_release")


def by_id(rows):
    return {r["utt_id"].split("/", 1)[1]: r for r in rows}


def append(path, line):
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def test_one_row_per_labelled_wav_with_contract_columns(corpus):
    rows, _ = iemocap.parse(corpus.root)
    assert [r["utt_id"] for r in rows] == sorted(f"iemocap/{u}" for u, _ in IEMOCAP_UTTERANCES)
    first = rows[0]
    assert tuple(first)[:11] == manifest.COLUMNS
    assert first["path"] == str(corpus.wavs["Ses01F_impro01_F000"])
    assert (first["sample_rate"], first["num_samples"]) == (16000, 800)
    assert (first["start_s"], first["end_s"], first["valence"], first["dominance"]) == (1.0, 3.1, 2.5, 2.5)
    assert {r["label"] for r in rows} == {label for _, label in IEMOCAP_UTTERANCES}


def test_gender_is_the_utterance_speaker_not_the_dialog_lead(corpus):
    rows = by_id(iemocap.parse(corpus.root)[0])
    trap = rows["Ses01F_impro01_M000"]
    assert (trap["gender"], trap["speaker"], trap["session"], trap["dialog"]) == ("M", "Ses01_M", 1, "Ses01F_impro01")
    assert rows["Ses05F_impro08a_M001"]["gender"] == "M"
    assert rows["Ses03M_script01_2b_F012"]["speaker"] == "Ses03_F"


def test_mode_comes_from_the_dialog_part(corpus):
    rows = by_id(iemocap.parse(corpus.root)[0])
    assert rows["Ses03M_script01_2b_F012"]["mode"] == "scripted"
    assert rows["Ses01F_script01_1_F000"]["mode"] == "scripted"
    assert rows["Ses05F_impro08a_M001"]["mode"] == "improvised"


@pytest.mark.reliability("labels")
def test_strays_and_per_evaluator_folders_are_skipped_and_counted(corpus, caplog):
    # The builder's Categorical/ and `._` files hold bracketed non-summary lines: reading one would raise.
    assert any(p.name.startswith("._") for p in corpus.stray) and any(p.suffix == ".pk" for p in corpus.stray)
    with caplog.at_level(logging.INFO, logger="sdcaff.data.iemocap"):
        rows, found = iemocap.parse(corpus.root)
    assert len(rows) == len(IEMOCAP_UTTERANCES)
    assert "Categorical x5" in caplog.text and "24 stray files" in caplog.text
    assert found["label files per session"] == {"Session1": 2, "Session2": 1, "Session3": 1, "Session4": 1, "Session5": 1}
    assert found["wav files per session"] == {"Session1": 4, "Session2": 1, "Session3": 1, "Session4": 1, "Session5": 1}


def test_found_counts_use_the_known_count_names(corpus):
    _, found = iemocap.parse(corpus.root)
    assert set(found) == set(iemocap.KNOWN_COUNTS)
    assert found["neu/hap/exc/ang/sad per session"] == {"Session1": 4, "Session4": 1, "Session5": 1}
    assert found["improvised neu/hap/exc/ang/sad"] == {"neu": 1, "ang": 1, "exc": 1, "hap": 1, "sad": 1}


@pytest.mark.parametrize("line", [
    "[1.0000 - 2.0000]\tSes02M_impro03_F002\tneu\t[2.0000, 2.0000]",  # two scores of three
    "[1.0000 - 2.0000]\tSes02M_impro03_F002\t[2.0000, 2.0000, 2.0000]",  # no label
    "[1.0000 - 2.0000]\tSes02M_impro03_F002\tneu\t[2.0000, 2.0000, 2.0000] extra",
])
@pytest.mark.reliability("labels")
def test_malformed_summary_line_names_file_and_line(corpus, line):
    path = corpus.label_files["Ses02M_impro03"]
    append(path, line)
    lineno = len(path.read_text().splitlines())
    with pytest.raises(CorpusFormatError, match=rf"{path}:{lineno}: not a summary line"):
        iemocap.parse(corpus.root)


@pytest.mark.reliability("labels")
def test_spaces_in_place_of_tabs_parse_to_the_same_fields(corpus):
    path = corpus.label_files["Ses02M_impro03"]
    write_wav(corpus.root / "Session2" / "sentences" / "wav" / "Ses02M_impro03" / "Ses02M_impro03_F002.wav")
    append(path, "[1.5 - 2.0]   Ses02M_impro03_F002 neu\t[ 2.0, 3.5,2.0 ]")  # an editor's tabs-to-spaces
    row = by_id(iemocap.parse(corpus.root)[0])["Ses02M_impro03_F002"]
    assert (row["label"], row["start_s"], row["end_s"], row["valence"], row["activation"]) == ("neu", 1.5, 2.0, 2.0, 3.5)


@pytest.mark.reliability("labels")
def test_unknown_label_is_kept_counted_and_warned_with_file_and_line(corpus, caplog):
    path = corpus.label_files["Ses04F_impro02"]
    write_wav(corpus.root / "Session4" / "sentences" / "wav" / "Ses04F_impro02" / "Ses04F_impro02_M004.wav")
    append(path, "[9.0000 - 9.5000]\tSes04F_impro02_M004\tjoy\t[2.0000, 2.0000, 2.0000]")
    lineno = len(path.read_text().splitlines())
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.iemocap"):
        rows, found = iemocap.parse(corpus.root)
    assert by_id(rows)["Ses04F_impro02_M004"]["label"] == "joy"  # the label map drops it and counts it
    assert found["labels"]["joy"] == 1
    assert "1 summary lines carry a label outside neu/hap" in caplog.text and "'joy' x1" in caplog.text
    assert f"{path}:{lineno}" in caplog.text


@pytest.mark.parametrize("utt", ["Ses04F_impro09_F001", "Ses04F_impro02_X001", "Ses04F_impro02_F01"])
@pytest.mark.reliability("labels")
def test_bad_utterance_id_names_file_and_line(corpus, utt):
    path = corpus.label_files["Ses04F_impro02"]
    append(path, f"[9.0000 - 9.5000]\t{utt}\tneu\t[2.0000, 2.0000, 2.0000]")
    lineno = len(path.read_text().splitlines())
    with pytest.raises(CorpusFormatError, match=rf"{path}:{lineno}: utterance id '{utt}'"):
        iemocap.parse(corpus.root)


@pytest.mark.reliability("labels")
def test_utterance_in_the_wrong_session_folder(corpus):
    path = corpus.label_files["Ses04F_impro02"]
    append(path, "[9.0000 - 9.5000]\tSes03F_impro02_F001\tneu\t[2.0000, 2.0000, 2.0000]")
    with pytest.raises(CorpusFormatError, match="belongs to session 3, found in Session4"):
        iemocap.parse(corpus.root)


@pytest.mark.reliability("labels")
def test_duplicated_utterance_names_both_places(corpus):
    first = corpus.label_files["Ses01F_impro01"]
    again = corpus.label_files["Ses01F_script01_1"]
    append(again, "[9.0000 - 9.5000]\tSes01F_impro01_M000\tang\t[2.0000, 2.0000, 2.0000]")
    lineno = len(again.read_text().splitlines())
    with pytest.raises(CorpusFormatError, match=rf"{again}:{lineno}: .*labelled twice \(first at {first}:8\)"):
        iemocap.parse(corpus.root)


@pytest.mark.reliability("manifest")
def test_missing_wav_is_an_error_naming_wav_and_label_line(tmp_path):
    corpus = write_iemocap(tmp_path / "c", without_wav=["Ses01F_impro01_M001"])
    with pytest.raises(AudioError, match=r"Ses01F_impro01_M001\.wav: wav not found, named by .*Ses01F_impro01\.txt:13"):
        iemocap.parse(corpus.root)


@pytest.mark.reliability("manifest")
def test_missing_wav_allowed_is_dropped_and_listed(tmp_path, caplog):
    corpus = write_iemocap(tmp_path / "c", without_wav=["Ses01F_impro01_M001", "Ses02M_impro03_M001"])
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.iemocap"):
        rows, found = iemocap.parse(corpus.root, allow_missing=True)
    assert len(rows) == len(IEMOCAP_UTTERANCES) - 2
    assert "2 wavs named by label files are missing" in caplog.text
    assert "Ses02M_impro03_M001.wav" in caplog.text
    assert "xxx" not in found["labels"]  # Ses02M_impro03_M001 was the only xxx


@pytest.mark.reliability("manifest")
def test_unlabelled_wav_is_counted_not_a_row(tmp_path, caplog):
    corpus = write_iemocap(tmp_path / "c", unlabelled=["Ses01F_impro01_F009"])
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.iemocap"):
        rows, found = iemocap.parse(corpus.root)
    assert "iemocap/Ses01F_impro01_F009" not in {r["utt_id"] for r in rows}
    assert "1 wav files have no summary line and are left out (Session1 1)" in caplog.text
    assert found["wav files per session"]["Session1"] == 5


@pytest.mark.reliability("audio")
def test_truncated_wav_names_the_wav(corpus):
    wav = corpus.wavs["Ses03M_script01_2b_F012"]
    wav.write_bytes(wav.read_bytes()[:100])
    with pytest.raises(AudioError, match=rf"{wav}: truncated"):
        iemocap.parse(corpus.root)


def test_sample_rate_and_length_come_from_each_header(corpus):
    write_wav(corpus.wavs["Ses04F_impro02_F003"], seconds=0.5, sample_rate=8000)
    row = by_id(iemocap.parse(corpus.root)[0])["Ses04F_impro02_F003"]
    assert (row["sample_rate"], row["num_samples"]) == (8000, 4000)


@pytest.mark.reliability("labels")
def test_windows_line_endings_parse(corpus):
    path = corpus.label_files["Ses01F_impro01"]
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert len(iemocap.parse(corpus.root)[0]) == len(IEMOCAP_UTTERANCES)


def test_subset_copy_with_some_sessions(tmp_path):
    corpus = write_iemocap(tmp_path / "c", [u for u in IEMOCAP_UTTERANCES if u[0].startswith("Ses01")])
    rows, found = iemocap.parse(corpus.root)
    assert {r["session"] for r in rows} == {1}
    assert found["wav files per session"] == {"Session1": 4}


@pytest.mark.reliability("corpus path")
def test_root_without_sessions_is_rejected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusFormatError, match="no Session1..Session5 folders"):
        iemocap.parse(tmp_path / "empty")


@pytest.mark.reliability("labels")
def test_session_without_label_folder_is_rejected(tmp_path):
    (tmp_path / "c" / "Session2" / "sentences").mkdir(parents=True)
    with pytest.raises(CorpusFormatError, match=r"Session2/dialog/EmoEvaluation: label folder missing"):
        iemocap.parse(tmp_path / "c")

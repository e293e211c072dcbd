import logging

import pytest

from corpus_builders import MSP_IMPROV_UTTERANCES, msp_improv_header, msp_improv_wav, write_msp_improv, write_wav
from sdcaff.data import msp_improv
from sdcaff.errors import AudioError, CorpusFormatError


@pytest.fixture
def corpus(tmp_path):
    return write_msp_improv(tmp_path / "MSP-IMPROV")


def by_id(rows):
    return {r["utt_id"].split("/", 1)[1]: r for r in rows}


def add_line(corpus, line):
    """Returns (label file, 1-based line number) after appending `line` to the corpus's label file."""
    (path,) = corpus.label_files.values()
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    return path, len(path.read_text().splitlines())


def test_one_row_per_wav_with_fields_from_name_folder_and_label_file(corpus):
    rows = by_id(msp_improv.parse(corpus.root)[0])
    assert sorted(rows) == sorted(stem for stem, _ in MSP_IMPROV_UTTERANCES)
    row = rows["MSP-IMPROV-S01A-M01-R-FM01"]
    assert {k: row[k] for k in ("corpus", "session", "speaker", "gender", "label", "mode", "target", "scenario")} == {
        "corpus": "msp-improv", "session": 1, "speaker": "M01", "gender": "M", "label": "N", "mode": "R",
        "target": "A", "scenario": 1,
    }
    assert row["path"] == str(corpus.wavs["MSP-IMPROV-S01A-M01-R-FM01"])
    assert (row["activation"], row["valence"], row["dominance"], row["naturalness"]) == (2.2, 3.0, 2.4, 3.2)
    assert rows["MSP-IMPROV-S20N-M06-P-MF10"]["session"] == 6


def test_every_spacing_of_the_header_parses_to_the_same_fields(corpus):
    rows = by_id(msp_improv.parse(corpus.root)[0])
    # The builder cycles three spacings; consensus and scores must not depend on which one a line got.
    assert [rows[stem]["label"] for stem, _ in MSP_IMPROV_UTTERANCES] == [
        label or "" for _, label in MSP_IMPROV_UTTERANCES
    ]
    assert {rows[stem]["activation"] for stem, label in MSP_IMPROV_UTTERANCES if label} == {2.2}


def test_sample_rate_is_read_from_each_header(corpus):
    write_wav(corpus.wavs["MSP-IMPROV-S02H-F02-S-MF01"], seconds=0.1, sample_rate=16000)
    rows = by_id(msp_improv.parse(corpus.root)[0])
    assert (rows["MSP-IMPROV-S02H-F02-S-MF01"]["sample_rate"], rows["MSP-IMPROV-S02H-F02-S-MF01"]["num_samples"]) == (
        16000, 1600,
    )
    assert rows["MSP-IMPROV-S01A-F01-P-FM01"]["sample_rate"] == 44100


@pytest.mark.reliability("labels")
def test_unevaluated_wav_has_empty_label_and_is_counted(corpus, caplog):
    with caplog.at_level(logging.INFO, logger="sdcaff.data.msp_improv"):
        rows, found = msp_improv.parse(corpus.root)
    unevaluated = by_id(rows)["MSP-IMPROV-S20N-M06-P-MF10"]
    assert unevaluated["label"] == "" and unevaluated["valence"] is None
    assert "1 wavs have no evaluation block" in caplog.text
    assert found == {"utterance wavs": {"all": 7}, "consensus labels A/H/N/S": {"A": 1, "N": 1, "H": 1, "S": 1}}


@pytest.mark.reliability("labels")
def test_strays_are_skipped_and_counted(corpus, caplog):
    with caplog.at_level(logging.INFO, logger="sdcaff.data.msp_improv"):
        rows, _ = msp_improv.parse(corpus.root)
    assert len(rows) == len(MSP_IMPROV_UTTERANCES)
    assert f"skipped {len(corpus.stray)} stray entries" in caplog.text


@pytest.mark.reliability("labels")
def test_misspelt_label_file_is_accepted(tmp_path):
    corpus = write_msp_improv(tmp_path / "c", label_file="Evalution.txt")
    assert by_id(msp_improv.parse(corpus.root)[0])["MSP-IMPROV-S01A-F01-P-FM01"]["label"] == "A"


@pytest.mark.reliability("labels")
def test_both_spellings_with_the_same_blocks_read_evaluation_txt_and_warn(corpus, caplog):
    (corpus.root / "Evalution.txt").write_bytes(corpus.label_files["Evaluation.txt"].read_bytes())
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.msp_improv"):
        rows = by_id(msp_improv.parse(corpus.root)[0])
    assert rows["MSP-IMPROV-S01A-F01-P-FM01"]["label"] == "A"
    assert "both Evaluation.txt and Evalution.txt exist; reading Evaluation.txt (both hold the same blocks)" in caplog.text


@pytest.mark.reliability("labels")
def test_both_spellings_with_different_blocks_are_refused(corpus):
    (corpus.root / "Evalution.txt").write_text(msp_improv_header("MSP-IMPROV-S01A-F01-P-FM01", "H") + "\n")
    with pytest.raises(CorpusFormatError, match=r"hold evaluation blocks and they differ at MSP-IMPROV-S01A-F01-P-FM01"
                                                r"\.wav \(.*Evaluation\.txt:1 says .*'A'.*Evalution\.txt:1 says .*'H'"):
        msp_improv.parse(corpus.root)


@pytest.mark.reliability("labels")
def test_no_label_file_is_an_error(corpus):
    (corpus.root / "Evaluation.txt").unlink()
    with pytest.raises(CorpusFormatError, match="neither Evaluation.txt nor Evalution.txt found"):
        msp_improv.parse(corpus.root)


@pytest.mark.parametrize(
    "line, message",
    [
        ("UTD-IMPROV-S01A-F01-P-FM09.avi", "expected '<file>.avi; <label>"),
        ("UTD-IMPROV-S01A-F01-P-FM09.mp4; N; A:2.0;", "expected a UTD-IMPROV-\\*.avi file name"),
        ("UTD-IMPROV-S01B-F01-P-FM09.avi; N; A:2.0;", ".*does not match UTD-IMPROV-S<nn>"),
        ("UTD-IMPROV-S01A-F01-P-FM09.avi; N; A:two;", ".*got 'A:two'"),
        ("UTD-IMPROV-S01A-F01-P-FM09.avi; N; A:;", ".*got 'A:'"),
        ("UTD-IMPROV-S01A-F01-P-FM09.avi; N; A=2.0;", "expected one each of A:, V:, D:, N:<number>, got 'A=2.0'"),
        ("UTD-IMPROV-S01A-F01-P-FM09.avi; N; A:2.0; A:3.0;", ".*got 'A:3.0'"),
    ],
)
@pytest.mark.reliability("labels")
def test_malformed_header_names_file_and_line(corpus, line, message):
    path, lineno = add_line(corpus, line)
    with pytest.raises(CorpusFormatError, match=rf"{path}:{lineno}: {message}"):
        msp_improv.parse(corpus.root)


@pytest.mark.reliability("labels")
def test_duplicated_block_names_both_places(corpus):
    path, lineno = add_line(corpus, msp_improv_header("MSP-IMPROV-S01A-F01-P-FM01", "N"))
    message = rf"{path}:{lineno}: MSP-IMPROV-S01A-F01-P-FM01.wav already has a block at {path}:1"
    with pytest.raises(CorpusFormatError, match=message):
        msp_improv.parse(corpus.root)


@pytest.mark.reliability("manifest")
def test_label_for_a_missing_wav_is_an_error(tmp_path):
    corpus = write_msp_improv(tmp_path / "c", without_wav=["MSP-IMPROV-S03S-F03-T-FM03"])
    with pytest.raises(AudioError, match=r"MSP-IMPROV-S03S-F03-T-FM03.wav not found .*, named by .*Evaluation.txt:17"):
        msp_improv.parse(corpus.root)


@pytest.mark.reliability("manifest")
def test_label_for_a_missing_wav_allowed_is_counted(tmp_path, caplog):
    corpus = write_msp_improv(tmp_path / "c", without_wav=["MSP-IMPROV-S03S-F03-T-FM03"])
    with caplog.at_level(logging.WARNING, logger="sdcaff.data.msp_improv"):
        rows, found = msp_improv.parse(corpus.root, allow_missing=True)
    assert len(rows) == len(MSP_IMPROV_UTTERANCES) - 1
    assert "1 evaluated utterances have no wav" in caplog.text and "Evaluation.txt:17" in caplog.text
    assert "S" not in found["consensus labels A/H/N/S"]


@pytest.mark.reliability("labels")
def test_speaker_in_the_wrong_session_names_the_file(corpus):
    wrong = corpus.root / "Audio" / "session2" / "S01A" / "P" / "MSP-IMPROV-S01A-F01-P-FM07.wav"
    write_wav(wrong, sample_rate=44100)
    with pytest.raises(CorpusFormatError, match=rf"{wrong}: speaker F01 recorded in session2; expected F02"):
        msp_improv.parse(corpus.root)


@pytest.mark.reliability("labels")
def test_name_disagreeing_with_its_folders_names_the_file(corpus):
    wrong = msp_improv_wav(corpus.root, "MSP-IMPROV-S01A-F01-R-FM07").with_name("MSP-IMPROV-S01A-F01-T-FM07.wav")
    write_wav(wrong, sample_rate=44100)
    with pytest.raises(CorpusFormatError, match=rf"{wrong}: name says S01A/T, folder says S01A/R"):
        msp_improv.parse(corpus.root)


@pytest.mark.reliability("labels")
def test_unparseable_wav_name_names_the_file(corpus):
    wrong = corpus.wavs["MSP-IMPROV-S01A-F01-P-FM01"].with_name("MSP-IMPROV-S01A-F01-P.wav")
    write_wav(wrong, sample_rate=44100)
    with pytest.raises(CorpusFormatError, match=rf"{wrong}: file name does not match"):
        msp_improv.parse(corpus.root)


@pytest.mark.reliability("labels")
def test_unexpected_folders_are_skipped_as_strays(corpus):
    # A name fixes its session, scenario and condition folders, so a copy elsewhere is never read.
    write_wav(corpus.root / "Audio" / "session1" / "S01A" / "P" / "old" / "MSP-IMPROV-S01A-F01-P-FM01.wav")
    write_wav(corpus.root / "Audio" / "Session1" / "S01A" / "P" / "MSP-IMPROV-S01A-F01-P-FM01.wav")
    assert len(msp_improv.parse(corpus.root)[0]) == len(MSP_IMPROV_UTTERANCES)


@pytest.mark.reliability("audio")
def test_truncated_wav_names_the_wav(corpus):
    wav = corpus.wavs["MSP-IMPROV-S05N-F04-R-FM01"]
    wav.write_bytes(wav.read_bytes()[:60])
    with pytest.raises(AudioError, match=rf"{wav}: truncated"):
        msp_improv.parse(corpus.root)


@pytest.mark.reliability("corpus path")
def test_missing_audio_folder_names_both_layouts(tmp_path):
    (tmp_path / "c" / "Audio").mkdir(parents=True)
    (tmp_path / "c" / "Evaluation.txt").write_text("")
    root = tmp_path / "c"
    message = rf"{root}: no session1..session6 folders in either layout: {root}/Audio/session<k>/.* or {root}/session<k>/"
    with pytest.raises(CorpusFormatError, match=message):
        msp_improv.parse(root)

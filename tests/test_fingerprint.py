import json
import os
import shutil

import pytest

from corpus_builders import write_iemocap, write_msp_improv
from sdcaff import cli
from sdcaff.data import fingerprint

FIXED_NS = 1_672_531_200 * 10**9  # one mtime for every file, as the synthetic generator sets


@pytest.fixture
def stage(in_tmp, monkeypatch):
    """Runs in tmp_path with its own params.yaml and no corpus paths from the environment."""
    for var in ("SDCAFF_IEMOCAP", "SDCAFF_MSP_IMPROV", "SDCAFF_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    (in_tmp / "params.yaml").write_text(
        "corpora:\n  iemocap: {root: null}\n  msp-improv: {root: null}\nfingerprint:\n  out_dir: results/corpora\n"
    )
    return in_tmp


def pin_mtimes(root):
    for path in sorted(root.rglob("*")):
        os.utime(path, ns=(FIXED_NS, FIXED_NS))


def test_record_counts_files_bytes_and_top_level_folders(tmp_path):
    corpus = write_msp_improv(tmp_path / "MSP-IMPROV")
    record = fingerprint.fingerprint("msp-improv", corpus.root, synthetic=False)
    files = [p for p in corpus.root.rglob("*") if p.is_file()]
    assert record["files"] == len(files)
    assert record["bytes"] == sum(p.stat().st_size for p in files)
    audio = sum(1 for p in files if p.relative_to(corpus.root).parts[0] == "Audio")
    assert record["files_per_top_level_folder"] == {".": 1, "Audio": audio}
    assert (record["corpus"], record["root"], record["synthetic"]) == ("msp-improv", str(corpus.root), False)


def test_same_tree_and_mtimes_give_the_same_hash_anywhere(tmp_path):
    first = write_iemocap(tmp_path / "a" / "IEMOCAP").root
    second = tmp_path / "elsewhere" / "copy"
    shutil.copytree(first, second)
    pin_mtimes(first)
    pin_mtimes(second)
    one = fingerprint.fingerprint("iemocap", first, synthetic=True)
    two = fingerprint.fingerprint("iemocap", second, synthetic=True)
    assert one["sha256"] == two["sha256"] and one["root"] != two["root"]


@pytest.mark.parametrize("change", ["resize", "touch", "add", "remove", "rename"])
def test_any_change_to_the_tree_changes_the_hash(tmp_path, change):
    corpus = write_iemocap(tmp_path / "c")
    pin_mtimes(corpus.root)
    before = fingerprint.fingerprint("iemocap", corpus.root, synthetic=False)["sha256"]
    wav = corpus.wavs["Ses02M_impro03_M001"]
    if change == "resize":
        wav.write_bytes(wav.read_bytes() + b"\0\0")
        os.utime(wav, ns=(FIXED_NS, FIXED_NS))
    elif change == "touch":
        os.utime(wav, ns=(FIXED_NS + 1, FIXED_NS + 1))
    elif change == "add":
        (corpus.root / "Session2" / "extra.txt").write_text("")
        os.utime(corpus.root / "Session2" / "extra.txt", ns=(FIXED_NS, FIXED_NS))
    elif change == "remove":
        wav.unlink()
    else:
        wav.rename(wav.with_name("Ses02M_impro03_M002.wav"))
    assert fingerprint.fingerprint("iemocap", corpus.root, synthetic=False)["sha256"] != before


def test_cli_writes_sorted_json_to_the_default_path_and_repeats_it(stage):
    root = write_iemocap(stage / "artifacts" / "corpora" / "iemocap").root
    pin_mtimes(root)
    assert cli.main(["fingerprint", "--corpus", "iemocap"]) == 0
    out = stage / "results" / "corpora" / "iemocap.json"
    text = out.read_text()
    record = json.loads(text)
    assert list(record) == sorted(record)
    assert (record["root"], record["synthetic"]) == ("artifacts/corpora/iemocap", True)
    assert sorted(record["files_per_top_level_folder"]) == [f"Session{n}" for n in range(1, 6)]
    assert cli.main(["fingerprint", "--corpus", "iemocap"]) == 0
    assert out.read_text() == text


def test_root_from_the_environment_is_not_synthetic(stage, monkeypatch):
    root = write_msp_improv(stage / "licensed MSP é").root
    monkeypatch.setenv("SDCAFF_MSP_IMPROV", str(root))
    assert cli.main(["fingerprint", "--corpus", "msp-improv", "--out", "fp.json"]) == 0
    record = json.loads((stage / "fp.json").read_text())
    assert (record["root"], record["synthetic"]) == (str(root), False)


@pytest.mark.reliability("paths")
def test_names_with_spaces_and_non_ascii_characters_hash(tmp_path):
    root = tmp_path / "c"
    (root / "Ses sion é").mkdir(parents=True)
    (root / "Ses sion é" / "情 a.wav").write_bytes(b"x")
    record = fingerprint.fingerprint("iemocap", root, synthetic=False)
    assert record["files_per_top_level_folder"] == {"Ses sion é": 1}
    assert json.loads(json.dumps(record)) == record


@pytest.mark.reliability("corpus path")
def test_missing_root_is_an_error(stage, capsys):
    assert cli.main(["fingerprint", "--corpus", "iemocap"]) == 1
    assert "artifacts/corpora/iemocap: iemocap corpus root does not exist" in capsys.readouterr().err
    assert not (stage / "results").exists()


@pytest.mark.reliability("read-only corpus")
def test_output_inside_the_corpus_is_refused(stage, capsys):
    root = write_iemocap(stage / "c").root
    assert cli.main(["fingerprint", "--corpus", "iemocap", "--root", str(root), "--out", str(root / "fp.json")]) == 1
    assert "refusing to write the fingerprint" in capsys.readouterr().err
    assert not (root / "fp.json").exists()


def test_describe_says_synthetic_complete_or_subset_with_counts(tmp_path):
    from sdcaff import digest

    manifests, prints = tmp_path / "manifest", tmp_path / "corpora"
    manifests.mkdir()
    prints.mkdir()
    (manifests / "iemocap.csv").write_text("utt_id,label\n" + "".join(f"u{i},neu\n" for i in range(600)))
    assert fingerprint.describe("iemocap", prints, manifests)["status"].startswith("unknown (no fingerprint")
    (prints / "iemocap.json").write_text(json.dumps({"corpus": "iemocap", "synthetic": True}))
    described = fingerprint.describe("iemocap", prints, manifests)
    assert described == {"manifest_md5": digest.file_md5(manifests / "iemocap.csv"), "synthetic": True,
                         "utterances": 600, "release_utterances": 10039, "status": "synthetic"}
    (prints / "iemocap.json").write_text(json.dumps({"corpus": "iemocap", "synthetic": False}))
    assert fingerprint.describe("iemocap", prints, manifests)["status"] == (
        "real subset (600 of the release's 10,039 utterances, 6.0 %)")
    (manifests / "msp-improv.csv").write_text("utt_id\n" + "".join(f"m{i}\n" for i in range(8438)))
    (prints / "msp-improv.json").write_text(json.dumps({"corpus": "msp-improv", "synthetic": False}))
    assert fingerprint.describe("msp-improv", prints, manifests)["status"] == "real, complete"
    assert fingerprint.describe("msp-improv", prints, tmp_path / "nowhere")["status"].startswith("unknown (no manifest")

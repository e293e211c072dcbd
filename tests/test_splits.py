"""Protocols -> split files: the authors' arithmetic, fold invariants, determinism, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sdcaff import cli
from sdcaff.data import splits
from sdcaff.errors import ManifestError, ParamsError

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
MANIFEST_HEADER = [
    "utt_id", "corpus", "path", "session", "speaker", "gender", "label", "mode",
    "sample_rate", "num_samples", "target",
]

# The real improvised IEMOCAP counts (spec corpora.md) plus labels the authors drop.
IEMOCAP_IMPROVISED = {"neu": 1099, "sad": 608, "ang": 289, "exc": 663, "hap": 284, "fru": 40, "xxx": 25}
IEMOCAP_SCRIPTED = {"neu": 60, "sad": 50, "ang": 70, "exc": 20, "hap": 30, "fru": 25}


def iemocap_frame(improvised: dict[str, int], scripted: dict[str, int]) -> pd.DataFrame:
    """Returns an IEMOCAP-shaped manifest: labels spread over 5 sessions and both speakers of each."""
    rows = []
    for mode, counts in (("improvised", improvised), ("scripted", scripted)):
        dialog = "impro01" if mode == "improvised" else "script01_1"
        for label, count in counts.items():
            for i in range(count):
                n = len(rows)
                session, gender = 1 + n % 5, "FM"[(n // 5) % 2]
                rows.append({
                    "utt_id": f"iemocap/Ses{session:02d}F_{dialog}_{gender}{n:05d}",
                    "corpus": "iemocap", "path": f"/c/{n}.wav", "session": session,
                    "speaker": f"Ses{session:02d}_{gender}", "gender": gender, "label": label, "mode": mode,
                    "sample_rate": 16000, "num_samples": 32000, "target": "",
                })
    return pd.DataFrame(rows, columns=MANIFEST_HEADER).sort_values("utt_id", ignore_index=True)


def msp_frame(per_speaker: int = 30) -> pd.DataFrame:
    """Returns an MSP-IMPROV-shaped manifest: 6 sessions x 2 speakers, every condition, O/X/empty labels."""
    rows = []
    consensus = ["A", "H", "N", "S", "N", "H", "O", "X", "", "N"]
    for session in range(1, 7):
        for gender in "FM":
            speaker = f"{gender}{session:02d}"
            for i in range(per_speaker):
                target = "AHNS"[i % 4]
                condition = "PRST"[(i // 4) % 4]
                stem = f"MSP-IMPROV-S{1 + i % 20:02d}{target}-{speaker}-{condition}-{gender}M{i:03d}"
                rows.append({
                    "utt_id": f"msp-improv/{stem}", "corpus": "msp-improv", "path": f"/m/{stem}.wav",
                    "session": session, "speaker": speaker, "gender": gender, "label": consensus[i % len(consensus)],
                    "mode": condition, "sample_rate": 44100, "num_samples": 88200, "target": target,
                })
    return pd.DataFrame(rows, columns=MANIFEST_HEADER).sort_values("utt_id", ignore_index=True)


def write_manifest(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def params() -> splits.SplitsParams:
    return splits.load_params(REPO_PARAMS)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict[str, splits.Manifest]:
    root = tmp_path_factory.mktemp("manifest")
    iemocap = write_manifest(iemocap_frame(IEMOCAP_IMPROVISED, IEMOCAP_SCRIPTED), root / "iemocap.csv")
    msp = write_manifest(msp_frame(), root / "msp-improv.csv")
    return {
        "iemocap": splits.read_manifest(iemocap, "iemocap"),
        "msp-improv": splits.read_manifest(msp, "msp-improv"),
    }


@pytest.fixture(scope="module")
def built(params, manifests) -> dict[str, tuple[pd.DataFrame, dict]]:
    return {name: splits.build(name, protocol, params, manifests) for name, protocol in params.protocols.items()}


def authors_reference_folds(n: int, seed: int) -> np.ndarray:
    """The authors' random_split, restated in its own straight-line form: fold of each index."""
    np.random.seed(seed)
    size = int(n * 0.2)
    c1 = list(np.random.choice(range(n), size, replace=False))
    rest = list(set(range(n)) - set(c1))
    c2 = list(np.random.choice(rest, size, replace=False))
    rest = list(set(rest) - set(c2))
    c3 = list(np.random.choice(rest, size, replace=False))
    rest = list(set(rest) - set(c3))
    c4 = list(np.random.choice(rest, size, replace=False))
    rest = list(set(rest) - set(c4))
    fold = np.empty(n, dtype=np.int64)
    for k, members in enumerate((c1, c2, c3, c4, rest)):
        fold[np.asarray(members, dtype=np.int64)] = k
    return fold


@pytest.mark.parametrize("n", [10039, 8438, 137])
def test_random_folds_are_the_authors_draws(n):
    got = splits.random_folds(n, 5, 987654)
    np.testing.assert_array_equal(got, authors_reference_folds(n, 987654))
    # The authors' sizes: four folds of int(n * 0.2), the remainder (up to 4 more) in the last.
    sizes = np.bincount(got, minlength=5)
    assert sizes[:4].tolist() == [int(n * 0.2)] * 4
    assert sizes[4] == n - 4 * int(n * 0.2)
    assert sizes.max() - sizes.min() == n % 5


def test_authors_protocol_holds_2948_rows(built):
    rows, sidecar = built["iemocap-authors"]
    test = rows[rows["role"] == "test"]
    assert len(test) == 2948  # 1099 + 608 + 2 * 289 + 663
    assert test["label"].value_counts().to_dict() == {"neutral": 1099, "happy": 663, "angry": 578, "sad": 608}
    for fold in range(5):
        in_fold = rows[rows["fold"] == fold]
        assert (in_fold["role"] != "valid").sum() == 2948
        # The test fold doubles as validation: the same rows, twice.
        valid, test = (in_fold[in_fold["role"] == r].drop(columns="role") for r in ("valid", "test"))
        valid, test = valid.reset_index(drop=True), test.reset_index(drop=True)
        pd.testing.assert_frame_equal(valid, test)
    assert sidecar["dropped"]["iemocap"]["label"] == {"fru": 40, "hap": 284, "xxx": 25}
    assert sidecar["dropped"]["iemocap"]["mode"] == {"scripted": sum(IEMOCAP_SCRIPTED.values())}
    assert sidecar["label_map"]["iemocap"]["map"] == {"neu": "neutral", "sad": "sad", "ang": "angry", "exc": "happy"}
    assert sidecar["selection"] == "test_max"
    assert sum(sidecar["per_fold"][k]["counts"]["test"]["angry"] for k in range(5)) == 578


def test_authors_folds_are_cut_before_filtering(params, manifests, built):
    rows, _ = built["iemocap-authors"]
    frame = manifests["iemocap"].frame
    draw = dict(zip(frame["utt_id"], splits.random_folds(len(frame), 5, 987654)))
    test = rows[rows["role"] == "test"]
    assert all(draw[u] == f for u, f in zip(test["utt_id"], test["fold"]))


@pytest.mark.parametrize(
    "name", ["iemocap-authors", "msp-improv-authors", "iemocap-loso", "iemocap-loso-full", "msp-improv-loso"]
)
def test_every_utterance_is_in_exactly_one_test_fold(built, name):
    rows, _ = built[name]
    test = rows[rows["role"] == "test"].drop_duplicates()
    assert not test["utt_id"].duplicated().any()
    everyone = set(rows["utt_id"])
    assert set(test["utt_id"]) == everyone
    for fold in sorted(rows["fold"].unique()):
        in_fold = rows[rows["fold"] == fold]
        # Within a fold every utterance of the protocol takes part, on one side only.
        train_valid = set(in_fold.loc[in_fold["role"] != "test", "utt_id"])
        in_test = set(in_fold.loc[in_fold["role"] == "test", "utt_id"])
        if name.endswith("authors"):
            train_valid = set(in_fold.loc[in_fold["role"] == "train", "utt_id"])
        assert train_valid.isdisjoint(in_test)
        assert train_valid | in_test == everyone


@pytest.mark.parametrize("name", ["iemocap-loso", "iemocap-loso-full", "msp-improv-loso"])
def test_loso_keeps_test_speakers_out_of_train_and_valid(built, manifests, name):
    rows, sidecar = built[name]
    corpus = sidecar["corpora"]["train"]
    speaker = dict(zip(manifests[corpus].frame["utt_id"], manifests[corpus].frame["speaker"]))
    assert sidecar["folds"] == {"iemocap": 5, "msp-improv": 6}[corpus]
    for info in sidecar["per_fold"]:
        in_fold = rows[rows["fold"] == info["fold"]]
        test_speakers = {speaker[u] for u in in_fold.loc[in_fold["role"] == "test", "utt_id"]}
        assert test_speakers == set(info["test_speakers"]) and len(test_speakers) == 2
        for role in ("train", "valid"):
            assert test_speakers.isdisjoint(speaker[u] for u in in_fold.loc[in_fold["role"] == role, "utt_id"])
        valid = set(in_fold.loc[in_fold["role"] == "valid", "utt_id"])
        assert valid and valid.isdisjoint(in_fold.loc[in_fold["role"] == "train", "utt_id"])


def test_duplicates_stay_on_their_own_side(built):
    rows, _ = built["iemocap-authors"]
    for (fold, role), part in rows[rows["role"] != "valid"].groupby(["fold", "role"]):
        times = part.groupby("utt_id").size()
        angry = set(part.loc[part["label"] == "angry", "utt_id"])
        assert (times[list(angry)] == 2).all() and (times.drop(list(angry)) == 1).all()
    rows, _ = built["iemocap-loso"]
    for role, expected in (("train", 2), ("valid", 1), ("test", 1)):
        part = rows[rows["role"] == role]
        times = part[part["label"] == "angry"].groupby(["fold", "utt_id"]).size()
        assert len(times) and (times == expected).all()
        assert (part[part["label"] != "angry"].groupby(["fold", "utt_id"]).size() == 1).all()


def test_oversampling_nowhere_when_no_classes(built):
    for name in ("msp-improv-authors", "msp-improv-loso", "iemocap-to-msp-improv"):
        rows, _ = built[name]
        assert not rows.duplicated().any()


@pytest.mark.reliability("labels")
def test_labels_outside_the_map_are_dropped_and_counted(built, manifests):
    rows, sidecar = built["msp-improv-loso"]
    # 12 speakers x 30 utterances over a 10-label cycle: O, X and empty 3 times each per speaker.
    assert sidecar["dropped"]["msp-improv"] == {"mode": {}, "label": {"<empty>": 36, "O": 36, "X": 36}}
    assert set(rows["label"]) == {"neutral", "sad", "angry", "happy"}
    # The authors label by file-name target, which every utterance has: nothing dropped.
    rows, sidecar = built["msp-improv-authors"]
    assert sidecar["dropped"]["msp-improv"] == {"mode": {}, "label": {}}
    assert len(rows[rows["role"] == "test"]) == len(manifests["msp-improv"].frame)


def test_cross_corpus_trains_on_one_and_tests_on_the_other(built, manifests):
    for name, train_corpus, test_corpus in (
        ("iemocap-to-msp-improv", "iemocap", "msp-improv"),
        ("msp-improv-to-iemocap", "msp-improv", "iemocap"),
    ):
        rows, sidecar = built[name]
        assert sidecar["folds"] == 1 and set(rows["fold"]) == {0}
        assert sidecar["corpora"] == {"train": train_corpus, "test": test_corpus}
        corpus_of = rows["utt_id"].str.split("/").str[0]
        assert set(corpus_of[rows["role"] != "test"]) == {train_corpus}
        assert set(corpus_of[rows["role"] == "test"]) == {test_corpus}
        train, valid = (set(rows.loc[rows["role"] == r, "utt_id"]) for r in ("train", "valid"))
        assert train.isdisjoint(valid)
        assert 0.08 < len(valid) / (len(train) + len(valid)) < 0.12  # share 0.1 per (speaker, class) group
        assert set(sidecar["label_map"]) == {"iemocap", "msp-improv"}


def test_loso_full_merges_hap_and_exc(built):
    rows, sidecar = built["iemocap-loso-full"]
    test = rows[rows["role"] == "test"]
    happy = sum(counts[label] for counts in (IEMOCAP_IMPROVISED, IEMOCAP_SCRIPTED) for label in ("hap", "exc"))
    assert (test["label"] == "happy").sum() == happy
    assert sidecar["dropped"]["iemocap"]["label"] == {"fru": 65, "xxx": 25}


def test_hold_out_takes_a_share_of_each_speaker_and_class():
    pool = pd.DataFrame({
        "utt_id": [f"u{i:03d}" for i in range(200)],
        "speaker": ["a" if i < 120 else "b" for i in range(200)],
        "class": ["neutral" if i % 4 else "angry" for i in range(200)],
    })
    mask = splits.hold_out(pool, 0.1, 987654, 0)
    held = pool[mask].groupby(["speaker", "class"]).size().to_dict()
    assert held == {("a", "angry"): 3, ("a", "neutral"): 9, ("b", "angry"): 2, ("b", "neutral"): 6}
    np.testing.assert_array_equal(mask, splits.hold_out(pool, 0.1, 987654, 0))
    assert not np.array_equal(mask, splits.hold_out(pool, 0.1, 987654, 1))


def test_hold_out_of_small_groups_still_takes_the_share_of_the_pool():
    # 8 groups of 3: no group reaches one row at 0.1, yet 0.1 of 24 rounds to 2 rows, from 2 groups.
    pool = pd.DataFrame({
        "utt_id": [f"u{i:02d}" for i in range(24)],
        "speaker": [f"s{i % 4}" for i in range(24)],
        "class": ["angry" if i % 8 < 4 else "sad" for i in range(24)],
    })
    masks = [splits.hold_out(pool, 0.1, 987654, fold) for fold in range(5)]
    for mask in masks:
        assert mask.sum() == 2 and pool[mask].groupby(["speaker", "class"]).ngroups == 2
    assert len({tuple(np.flatnonzero(m)) for m in masks}) > 1


def run_stage(tmp_path: Path, monkeypatch, params_path: Path, *argv: str) -> int:
    iemocap = iemocap_frame({"neu": 40, "sad": 30, "ang": 20, "exc": 25, "hap": 10}, {"neu": 15, "ang": 10})
    write_manifest(iemocap, tmp_path / "artifacts/manifest/iemocap.csv")
    write_manifest(msp_frame(12), tmp_path / "artifacts/manifest/msp-improv.csv")
    monkeypatch.setenv("SDCAFF_PARAMS", str(params_path))
    return cli.main(["splits", *argv])


def test_stage_writes_every_protocol_sorted_with_its_sidecar(in_tmp, monkeypatch, params):
    assert run_stage(in_tmp, monkeypatch, REPO_PARAMS) == 0
    written = sorted(p.name for p in (in_tmp / "artifacts/splits").iterdir())
    assert written == sorted(f"{n}.{ext}" for n in params.protocols for ext in ("csv", "json"))
    rows = pd.read_csv(in_tmp / "artifacts/splits/iemocap-loso.csv", dtype={"fold": int}, keep_default_na=False)
    assert list(rows.columns) == list(splits.SPLIT_COLUMNS)
    order = rows.sort_values(["fold", "role", "utt_id"], kind="mergesort", ignore_index=True)
    pd.testing.assert_frame_equal(rows, order)
    sidecar = json.loads((in_tmp / "artifacts/splits/iemocap-loso.json").read_text())
    assert sidecar["classes"] == ["neutral", "sad", "angry", "happy"]
    assert sidecar["selection"] == "valid" and sidecar["validation"] == {"rule": "share", "share": 0.1}
    for info in sidecar["per_fold"]:
        in_fold = rows[rows["fold"] == info["fold"]]
        train = in_fold[in_fold["role"] == "train"]
        assert info["counts"]["train"]["angry"] == (train["label"] == "angry").sum() > 0


@pytest.mark.reliability("determinism")
def test_same_seed_gives_identical_bytes(in_tmp, monkeypatch):
    out = in_tmp / "artifacts/splits"
    assert run_stage(in_tmp, monkeypatch, REPO_PARAMS) == 0
    first = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert run_stage(in_tmp, monkeypatch, REPO_PARAMS) == 0
    assert {p.name: p.read_bytes() for p in sorted(out.iterdir())} == first
    reseeded = in_tmp / "reseeded.yaml"
    reseeded.write_text(REPO_PARAMS.read_text().replace("seed: 987654", "seed: 1"))
    argv = ["--protocol", "iemocap-authors", "--protocol", "iemocap-loso"]
    assert run_stage(in_tmp, monkeypatch, reseeded, *argv) == 0
    for name in ("iemocap-authors.csv", "iemocap-loso.csv"):
        assert (out / name).read_bytes() != first[name]


def test_named_protocol_only_and_unknown_protocol_is_an_error(in_tmp, monkeypatch, capsys):
    assert run_stage(in_tmp, monkeypatch, REPO_PARAMS, "--protocol", "msp-improv-loso") == 0
    written = sorted(p.name for p in (in_tmp / "artifacts/splits").iterdir())
    assert written == ["msp-improv-loso.csv", "msp-improv-loso.json"]
    assert run_stage(in_tmp, monkeypatch, REPO_PARAMS, "--protocol", "iemocap-random") == 1
    assert "unknown protocol(s) iemocap-random" in capsys.readouterr().err


def test_named_protocol_reads_only_the_manifests_of_its_corpora(in_tmp, monkeypatch, capsys):
    # What lets dvc.yaml's splits@<protocol> depend on its own corpora only: no other manifest is opened.
    iemocap = iemocap_frame({"neu": 40, "sad": 30, "ang": 20, "exc": 25, "hap": 10}, {"neu": 15, "ang": 10})
    write_manifest(iemocap, in_tmp / "artifacts/manifest/iemocap.csv")
    monkeypatch.setenv("SDCAFF_PARAMS", str(REPO_PARAMS))
    assert cli.main(["splits", "--protocol", "iemocap-authors"]) == 0
    assert sorted(p.name for p in (in_tmp / "artifacts/splits").iterdir()) == ["iemocap-authors.csv", "iemocap-authors.json"]
    assert cli.main(["splits", "--protocol", "iemocap-to-msp-improv"]) == 1
    assert "sdcaff manifest --corpus msp-improv" in capsys.readouterr().err


def test_write_keeps_the_previous_pair_when_either_file_fails(tmp_path, monkeypatch):
    rows = pd.DataFrame({c: ["x"] for c in splits.SPLIT_COLUMNS})
    csv_path, json_path = splits.write(tmp_path, "p", rows, {"run": 1})
    before = {p.name: p.read_bytes() for p in (csv_path, json_path)}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # The CSV is complete by the time the sidecar fails: it must not replace the old CSV on its own.
    monkeypatch.setattr(splits.json, "dumps", fail)
    with pytest.raises(OSError, match="disk full"):
        splits.write(tmp_path, "p", rows.assign(fold="y"), {"run": 2})
    assert {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir())} == before  # no temporary file left


def test_dvc_splits_stages_depend_only_on_their_protocols_corpora(tmp_path, params):
    from dvc.repo import Repo

    repo_root = REPO_PARAMS.parent
    for name in ("dvc.yaml", "params.yaml", "profile.yaml"):
        (tmp_path / name).write_bytes((repo_root / name).read_bytes())
    Repo.init(str(tmp_path), no_scm=True).close()
    with Repo(str(tmp_path)) as repo:
        stages = {stage.name: stage for stage in repo.index.stages}
    made_by = {out.def_path: name for name, stage in stages.items() for out in stage.outs}
    assert sorted(n for n in stages if n.startswith("splits")) == sorted(f"splits@{n}" for n in params.protocols)
    for name, protocol in params.protocols.items():
        stage = stages[f"splits@{name}"]
        assert stage.cmd == f"sdcaff splits --protocol {name}"
        # Derived from source and test_source, not from `corpora`: the test checks what the stage reads.
        read = {s.corpus for s in (protocol.source, protocol.test_source) if s is not None}
        manifests = {d.def_path for d in stage.deps if d.def_path.startswith("artifacts/")}
        assert manifests == {f"artifacts/manifest/{c}.csv" for c in read}, name
        assert {made_by[m] for m in manifests} == {f"manifest@{c}" for c in read}
        assert sorted(o.def_path for o in stage.outs) == [f"artifacts/splits/{name}.{e}" for e in ("csv", "json")]
        (declared,) = [d.params for d in stage.deps if d.def_path == "params.yaml"]
        assert f"splits.protocols.{name}" in declared and "splits" not in declared
        assert not [p for p in declared if p.startswith("splits.protocols.") and p != f"splits.protocols.{name}"]
    # Downstream edges: each split file a stage reads is one splits@<protocol> writes.
    for name, stage in stages.items():
        for dep in stage.deps:
            if dep.def_path.startswith("artifacts/splits"):
                assert made_by.get(dep.def_path, "").startswith("splits@"), (name, dep.def_path)


@pytest.mark.reliability("manifest")
def test_duplicated_utt_id_names_file_and_line(tmp_path):
    frame = msp_frame(3)
    frame.loc[5, "utt_id"] = frame.loc[2, "utt_id"]
    path = write_manifest(frame, tmp_path / "msp-improv.csv")
    with pytest.raises(ManifestError, match=rf"{path}:7: duplicated utt_id .* \(first at line 4\)"):
        splits.read_manifest(path, "msp-improv")


@pytest.mark.reliability("manifest")
def test_missing_columns_name_the_file(tmp_path):
    path = write_manifest(msp_frame(3).drop(columns=["speaker", "target"]), tmp_path / "msp-improv.csv")
    with pytest.raises(ManifestError, match=rf"{path}:1: missing column\(s\) speaker, target"):
        splits.read_manifest(path, "msp-improv")


@pytest.mark.parametrize("column, value, message", [
    ("gender", "X", "gender is not one of F/M"),
    ("session", "one", "session is not a whole number"),
    ("corpus", "iemocap", "corpus is not 'msp-improv'"),
])
@pytest.mark.reliability("manifest")
def test_bad_manifest_cells_name_file_and_line(tmp_path, column, value, message):
    frame = msp_frame(3)
    frame[column] = frame[column].astype(str)
    frame.loc[4, column] = value
    path = write_manifest(frame, tmp_path / "msp-improv.csv")
    with pytest.raises(ManifestError, match=rf"{path}:6: {message}"):
        splits.read_manifest(path, "msp-improv")


@pytest.mark.reliability("manifest")
def test_missing_manifest_says_which_stage_writes_it(tmp_path):
    with pytest.raises(ManifestError, match="sdcaff manifest --corpus iemocap"):
        splits.read_manifest(tmp_path / "iemocap.csv", "iemocap")


def test_loso_refuses_a_speaker_in_two_sessions(tmp_path, params, manifests):
    frame = manifests["msp-improv"].frame.copy()
    frame.loc[frame["speaker"] == "F02", "speaker"] = "F01"
    moved = {**manifests, "msp-improv": splits.Manifest(tmp_path / "msp-improv.csv", frame)}
    with pytest.raises(ManifestError, match=r"msp-improv.csv: speaker 'F01' appears in sessions \[1, 2\]"):
        splits.build("msp-improv-loso", params.protocols["msp-improv-loso"], params, moved)


@pytest.mark.parametrize("old, new, message", [
    ("      selection: test_max # authors' code: best WA", "      selection: valid # was",
     "selection test_max goes with validation rule test"),
    ("        label_map: iemocap-exc-only\n      oversample:\n        classes: [angry]  # authors' code",
     "        label_map: iemocap-typo\n      oversample:\n        classes: [angry]  # authors' code",
     "unknown label map 'iemocap-typo'"),
    ("      exc: happy\n    iemocap-hap-exc:", "      exc: joy\n    iemocap-hap-exc:", "sends 'exc' to 'joy'"),
    ("        share: 0.1        # of each", "        share: 1.5        # of each",
     r"'validation.share' must lie in \(0, 1\)"),
    # `corpora` names the manifests DVC tracks; one that disagrees with the sources would track the wrong file.
    ("      corpora: {train: iemocap, test: msp-improv}", "      corpora: {train: iemocap, test: iemocap}",
     "protocol 'iemocap-to-msp-improv': 'corpora' is .* but source and test_source read"),
    ("      corpora: {train: iemocap, test: iemocap}  # source", "      corpora: {train: msp-improv, test: iemocap}  #",
     "protocol 'iemocap-authors': 'corpora' is"),
])
def test_inconsistent_params_name_file_and_line(tmp_path, old, new, message):
    text = REPO_PARAMS.read_text()
    assert old in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ParamsError, match=rf"params.yaml:\d+: .*{message}"):
        splits.load_params(path)


def test_every_configured_protocol_states_its_choices(params):
    assert params.classes == ["neutral", "sad", "angry", "happy"]  # authors' code: emo_text2num order
    assert set(params.protocols) == {
        "iemocap-authors", "iemocap-loso", "iemocap-loso-full", "msp-improv-authors", "msp-improv-loso",
        "iemocap-to-msp-improv", "msp-improv-to-iemocap",
    }
    authors = params.protocols["iemocap-authors"]
    assert dataclasses.asdict(authors.oversample) == {"classes": ["angry"], "where": "both"}
    exc_only = {"neu": "neutral", "sad": "sad", "ang": "angry", "exc": "happy"}
    assert params.label_maps[authors.source.label_map] == exc_only
    assert params.protocols["msp-improv-authors"].source.label_column == "target"


@pytest.mark.reliability("manifest")
def test_a_fold_without_training_rows_stops_the_splits_stage(tmp_path, params, manifests):
    # A copy holding Session1 only: leave-one-session-out leaves nothing to train on. Said here, by the
    # stage that knows the protocol, not later by train.
    frame = manifests["iemocap"].frame
    one = {**manifests, "iemocap": splits.Manifest(tmp_path / "iemocap.csv", frame[frame["session"] == 1])}
    with pytest.raises(ManifestError, match=r"iemocap.csv: protocol 'iemocap-loso' fold 0 has no 'train' "
                                            r"and no 'valid' rows \(\d+ utterances kept .*sessions \[1\]\)"):
        splits.build("iemocap-loso", params.protocols["iemocap-loso"], params, one)

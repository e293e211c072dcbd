import pytest
import torch

from fake_study import CLASSES, FRAMES, N_MFCC, split_rows, utt_ids, write_features, write_split
from sdcaff.data.loader import UtteranceDataset, load_features, make_loader, read_split
from sdcaff.errors import ManifestError


@pytest.fixture
def study(tmp_path):
    ids = utt_ids("iemocap", 16)
    data = write_features(tmp_path / "iemocap.pt", ids)
    csv = write_split(tmp_path / "splits", "p", split_rows(ids, ids, 2, valid_is_test=False), "valid")
    return tmp_path, ids, data, csv


def test_items_follow_the_contract(study):
    root, ids, data, csv = study
    split = read_split(csv)
    rows = split.select(1, "test")
    dataset = UtteranceDataset(load_features([root / "iemocap.pt"]), rows, split.classes, csv)
    assert len(dataset) == len(rows) > 0
    static, dynamic, emotion, gender, utt = dataset[1]
    row = rows.iloc[1]
    i = ids.index(row["utt_id"])
    assert utt == row["utt_id"]
    assert static.shape == (1, N_MFCC, FRAMES)
    assert torch.equal(static[0], data["mfcc"][i])
    # docs/architecture.md: dynamic = cat([mfcc, delta, delta_delta], dim=1).transpose(1, 2), per utterance.
    assert dynamic.shape == (FRAMES, 3 * N_MFCC)
    expected = torch.cat([data["mfcc"][i], data["delta"][i], data["delta_delta"][i]], dim=0).T
    assert torch.equal(dynamic, expected)
    assert emotion.item() == CLASSES.index(row["label"])
    assert gender.item() == ("F", "M").index(row["gender"])


def test_batches_stack_and_keep_ids(study):
    root, _, _, csv = study
    split = read_split(csv)
    dataset = UtteranceDataset(load_features([root / "iemocap.pt"]), split.select(0, "train"), CLASSES, csv)
    static, dynamic, emotion, gender, utts = next(iter(make_loader(dataset, 4, shuffle=False)))
    assert static.shape == (4, 1, N_MFCC, FRAMES) and dynamic.shape == (4, FRAMES, 3 * N_MFCC)
    assert emotion.dtype == gender.dtype == torch.long
    assert list(utts) == dataset.utt_ids[:4]


def test_shuffling_is_fixed_by_the_generator_seed(study):
    root, _, _, csv = study
    split = read_split(csv)
    dataset = UtteranceDataset(load_features([root / "iemocap.pt"]), split.select(0, "train"), CLASSES, csv)

    def order(seed):
        loader = make_loader(dataset, 4, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [u for batch in loader for u in batch[4]]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(order(3)) == sorted(dataset.utt_ids)
    with pytest.raises(ValueError):
        make_loader(dataset, 4, shuffle=True)


def test_feature_files_merge_by_utt_id(tmp_path):
    a, b = utt_ids("iemocap", 8), utt_ids("msp-improv", 4)
    da = write_features(tmp_path / "a.pt", a)
    db = write_features(tmp_path / "b.pt", b, seed=1)
    features = load_features([tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "a.pt"])
    assert features.utt_ids == a + b
    assert torch.equal(features.delta[features.index["msp-improv/utt0002"]], db["delta"][2])
    assert torch.equal(features.mfcc[features.index["iemocap/utt0005"]], da["mfcc"][5])
    csv = write_split(tmp_path, "cross", split_rows(a, b, 1, valid_is_test=False), "valid")
    split = read_split(csv)
    test = UtteranceDataset(features, split.select(0, "test"), CLASSES, csv)
    assert test.utt_ids == b


@pytest.mark.reliability("manifest")
def test_overlapping_feature_files_are_refused(tmp_path):
    ids = utt_ids("iemocap", 4)
    write_features(tmp_path / "a.pt", ids)
    write_features(tmp_path / "b.pt", ids[2:])
    with pytest.raises(ManifestError, match=r"b\.pt: utt_id 'iemocap/utt0002' is also in .*a\.pt"):
        load_features([tmp_path / "a.pt", tmp_path / "b.pt"])


@pytest.mark.reliability("manifest")
def test_split_row_without_features_names_the_split_line(study):
    root, ids, _, csv = study
    text = csv.read_text().replace(ids[5] + ",", "iemocap/nowhere,")
    csv.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("iemocap/nowhere,"))
    split = read_split(csv)
    row = split.rows[split.rows["utt_id"] == "iemocap/nowhere"].iloc[0]
    features = load_features([root / "iemocap.pt"])
    with pytest.raises(ManifestError, match=rf"p\.csv:{line}: utt_id 'iemocap/nowhere' is not in .*iemocap\.pt"):
        UtteranceDataset(features, split.select(row["fold"], row["role"]), CLASSES, csv)


@pytest.mark.parametrize(
    "old, new, message",
    [
        (",train,", ",dev,", r"p\.csv:\d+: role must be one of train, valid, test, got 'dev'"),
        (",neutral,", ",calm,", r"p\.csv:\d+: label must be a class of p\.json .*got 'calm'"),
        (",F\n", ",X\n", r"p\.csv:\d+: gender must be F or M, got 'X'"),
        ("utt_id,fold,", "utt,fold,", r"p\.csv:1: missing column\(s\) utt_id"),
    ],
)
@pytest.mark.reliability("manifest")
def test_bad_split_values_name_file_and_line(study, old, new, message):
    _, _, _, csv = study
    csv.write_text(csv.read_text().replace(old, new, 1))
    with pytest.raises(ManifestError, match=message):
        read_split(csv)


@pytest.mark.reliability("manifest")
def test_missing_sidecar_and_bad_feature_files_are_named(study):
    root, _, _, csv = study
    csv.with_suffix(".json").unlink()
    with pytest.raises(ManifestError, match=r"p\.json: split file missing"):
        read_split(csv)
    data = torch.load(root / "iemocap.pt", weights_only=False)
    data["delta"] = data["delta"].double()
    torch.save(data, root / "bad.pt")
    with pytest.raises(ManifestError, match=r"bad\.pt: 'delta' must be a float32 tensor"):
        load_features([root / "bad.pt"])
    (root / "junk.pt").write_bytes(b"not a tensor file")
    with pytest.raises(ManifestError, match=r"junk\.pt: not a readable feature file"):
        load_features([root / "junk.pt"])
    with pytest.raises(ManifestError, match=r"absent\.pt: feature file missing"):
        load_features([root / "absent.pt"])

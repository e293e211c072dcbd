"""sdcaff.tables: every cell checked against the records it came from; the md/csv/tex files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from sdcaff import check, paper, stats, tables
from sdcaff.errors import SdcaffError

NAMES = {"sdcaff": "SD-CAFF", "cnn": "CNN branch only"}


def make_record(experiment: str, variant: str, protocol: str, seeds=(1, 2), folds=(0, 1, 2), shift=0.0,
                n_train: bool = True) -> dict:
    """Returns a metrics record in evaluate's format whose per-unit scores differ by seed, fold and shift."""
    if "-to-" in protocol:
        train_corpus, test_corpus = protocol.split("-to-")
    else:
        train_corpus = test_corpus = protocol.rsplit("-", 1)[0]
    per_fold = []
    for seed in seeds:
        for fold in folds:
            # Deterministic but irregular scores, so means, stds and tests are all non-trivial.
            wa = 60.0 + shift + 3.1 * math.sin(seed * 7 + fold * 3) + fold
            ua = 55.0 + shift + 2.7 * math.cos(seed * 5 + fold * 11) + 0.5 * fold
            unit = {"seed": seed, "fold": fold, "wa": wa, "ua": ua, "n": 40 + fold, "selected_epoch": 3}
            if n_train:
                unit["n_train"] = 160 + 2 * fold
            per_fold.append(unit)
    was = [u["wa"] for u in per_fold]
    uas = [u["ua"] for u in per_fold]
    record = {
        "experiment": experiment, "model": "sdcaff", "variant": variant, "group": "comparison",
        "protocol": protocol, "train_corpus": train_corpus, "test_corpus": test_corpus,
        "labels": ["neutral", "sad", "angry", "happy"], "seeds": list(seeds), "folds": list(folds),
        "n": sum(u["n"] for u in per_fold),
        "wa": {"pooled": float(np.mean(was)) + 0.3, "fold_mean": float(np.mean(was)), "fold_std": float(np.std(was))},
        "ua": {"pooled": float(np.mean(uas)) - 0.4, "fold_mean": float(np.mean(uas)), "fold_std": float(np.std(uas))},
        "per_fold": per_fold,
        "confusion": [[10, 1, 0, 1], [2, 9, 0, 0], [0, 0, 8, 3], [1, 0, 2, 9]],
        "selection": "test_max" if protocol.endswith("-authors") else "valid",
        "profile": "quick", "params_hash": "abc", "env": {"commit": "c0ffee"},
    }
    if protocol.endswith("-authors"):
        record["authors"] = {"wa": float(np.mean(was)) + 1.5, "ua": float(np.mean(uas)) + 1.25,
                             "wa_std": 1.0, "ua_std": 1.0}
        record["last_epoch"] = {"wa": {"fold_mean": float(np.mean(was)) - 0.75, "fold_std": 1.0},
                                "ua": {"fold_mean": float(np.mean(uas)) - 0.5, "fold_std": 1.0}}
    return record


def study() -> dict[str, dict]:
    """Returns headline, cross-corpus and two secondary variants (one unlisted), cnn on fewer folds."""
    recs = [
        make_record("iemocap-authors", "sdcaff", "iemocap-authors", folds=(0, 1, 2, 3, 4), shift=8.0),
        make_record("iemocap-loso", "sdcaff", "iemocap-loso", folds=(0, 1, 2, 3, 4)),
        make_record("msp-improv-loso", "sdcaff", "msp-improv-loso", shift=-10.0),
        make_record("iemocap-to-msp-improv", "sdcaff", "iemocap-to-msp-improv", folds=(0,), shift=-15.0),
        make_record("cnn-iemocap-authors", "cnn", "iemocap-authors", folds=(0, 1), shift=6.0),
        make_record("cnn-iemocap-loso", "cnn", "iemocap-loso", folds=(0, 1, 2), shift=-2.0),
        make_record("zz-new-iemocap-loso", "zz-new", "iemocap-loso", shift=1.0),
    ]
    return {r["experiment"]: r for r in recs}


def row(frame: pd.DataFrame, column: str, value: str) -> pd.Series:
    hits = frame[frame[column] == value]
    assert len(hits) == 1, f"{column}={value!r}: {len(hits)} rows"
    return hits.iloc[0]


def test_paper_table_reproduced_cells_come_from_the_named_keys():
    recs = study()
    frame = tables.paper_table(recs)
    head = row(frame, "result", "SD-CAFF, IEMOCAP (headline)")
    auth = recs["iemocap-authors"]["authors"]
    assert head["WA reproduced"] == f"{auth['wa']:.2f}"
    assert head["UA reproduced"] == f"{auth['ua']:.2f}"
    assert head["WA difference"] == f"{auth['wa'] - 75.78:.2f}"
    assert head["units"] == "10"
    cnn = row(frame, "result", "CNN branch only, confusion matrix")
    assert cnn["experiment"] == "cnn-iemocap-authors"  # the experiment paper.REPORTED names, not by model
    assert cnn["WA reproduced"] == f"{recs['cnn-iemocap-authors']['wa']['pooled']:.2f}"
    lstm = row(frame, "result", "LSTM branch only (RNN), confusion matrix")
    assert (lstm["WA reproduced"], lstm["UA difference"], lstm["experiment"]) == ("not run", "–", "not run")
    msp = row(frame, "result", "SD-CAFF, MSP-IMPROV (headline)")
    assert msp["UA reproduced"] == "not run"


def test_variants_table_cells_are_spreads_and_paired_tests_over_units():
    recs = study()
    frame = tables.variants_table(recs, NAMES)
    assert list(frame["id"]) == ["sdcaff", "cnn", "zz-new"]  # listed order, then the unknown id raw
    assert list(frame["variant"]) == ["SD-CAFF", "CNN branch only", "zz-new"]
    cnn = row(frame, "id", "cnn")
    units = recs["cnn-iemocap-loso"]["per_fold"]
    ua = [u["ua"] for u in units]
    low, high = sps.t.interval(0.95, len(ua) - 1, loc=np.mean(ua), scale=np.std(ua, ddof=1) / math.sqrt(len(ua)))
    assert cnn["iemocap-loso: UA"] == f"{np.mean(ua):.2f} ± {np.std(ua, ddof=1):.2f} [{low:.2f}, {high:.2f}]"
    assert cnn["iemocap-loso: N"] == "6"
    ref = {(u["seed"], u["fold"]): u["ua"] for u in recs["iemocap-loso"]["per_fold"]}
    mine = {(u["seed"], u["fold"]): u["ua"] for u in units}
    assert cnn["iemocap-loso: ΔUA"] == f"{np.mean([mine[k] - ref[k] for k in mine]):.2f}"
    expected = stats.paired(mine, ref, stats.split_ratio(units))
    assert cnn["iemocap-loso: p corrected t"] == tables.pval(expected.p_t)
    assert cnn["iemocap-loso: p Wilcoxon"] == tables.pval(expected.p_wilcoxon)
    sd = row(frame, "id", "sdcaff")
    assert sd["iemocap-loso: ΔUA"] == "–" and sd["iemocap-loso: N"] == "10"
    new = row(frame, "id", "zz-new")
    assert new["iemocap-authors: UA"] == "not run"
    # msp-improv-loso holds only SD-CAFF: not a column group of the variants table.
    assert not any(c.startswith("msp-improv") for c in frame.columns)


def test_variants_table_without_n_train_leaves_the_corrected_t_out():
    recs = {"a": make_record("a", "sdcaff", "iemocap-loso", n_train=False),
            "b": make_record("b", "cnn", "iemocap-loso", shift=1.0, n_train=False)}
    cnn = row(tables.variants_table(recs, NAMES), "id", "cnn")
    assert cnn["iemocap-loso: p corrected t"] == "–"
    assert cnn["iemocap-loso: p Wilcoxon"] != "–"


def test_records_without_variant_fall_back_to_the_model_name():
    rec = make_record("iemocap-loso", "sdcaff", "iemocap-loso")
    del rec["variant"]
    rec["model"] = "ecapa"
    assert tables.find({"iemocap-loso": rec}, "ecapa", "iemocap-loso") == ("iemocap-loso", rec)


def test_paper_table_and_check_compare_the_same_experiments():
    # Every SD-CAFF variant has model `sdcaff`: the additive-fusion run must not stand in for the headline.
    recs = study()
    recs["add-iemocap-authors"] = make_record("add-iemocap-authors", "add", "iemocap-authors", shift=-20.0)
    recs["lstm-iemocap-authors"] = make_record("lstm-iemocap-authors", "lstm", "iemocap-authors", shift=-5.0)
    frame = tables.paper_table(recs)
    rows = check.compare_paper(recs, 2.0)
    assert len(rows) == 2 * len(frame) == 2 * len(paper.REPORTED)
    for i, rep in enumerate(paper.REPORTED):
        table_row = frame.iloc[i]
        wa, ua = rows[2 * i], rows[2 * i + 1]
        assert wa.experiment == ua.experiment == rep.experiment
        assert table_row["experiment"] == (rep.experiment if rep.experiment in recs else tables.NOT_RUN)
        assert table_row["WA reproduced"] == (tables.NOT_RUN if wa.got is None else tables.pct(wa.got))
        assert table_row["UA reproduced"] == (tables.NOT_RUN if ua.got is None else tables.pct(ua.got))
    head = row(frame, "result", "SD-CAFF, IEMOCAP (headline)")
    assert head["experiment"] == "iemocap-authors"
    assert head["WA reproduced"] == f"{recs['iemocap-authors']['authors']['wa']:.2f}"
    assert row(frame, "result", "LSTM branch only (RNN), confusion matrix")["experiment"] == "lstm-iemocap-authors"


def test_paper_table_refuses_a_named_experiment_run_under_another_protocol():
    recs = {"cnn-iemocap-authors": make_record("cnn-iemocap-authors", "cnn", "iemocap-loso")}
    with pytest.raises(SdcaffError, match=r"cnn-iemocap-authors\.json: protocol 'iemocap-loso'"):
        tables.paper_table(recs)


def test_protocol_gap_separates_selection_from_leakage():
    recs = study()
    frame = tables.protocol_gap_table(recs, NAMES)
    assert sorted(set(frame["variant"])) == ["CNN branch only", "SD-CAFF"]  # zz-new has no authors run
    sd = frame[(frame["variant"] == "SD-CAFF") & (frame["metric"] == "UA")].iloc[0]
    a, b = recs["iemocap-authors"], recs["iemocap-loso"]
    assert sd["authors - LOSO"] == f"{a['ua']['fold_mean'] - b['ua']['fold_mean']:.2f}"
    assert sd["authors' maxima"] == f"{a['authors']['ua']:.2f}"
    assert sd["maxima - last epoch"] == f"{a['authors']['ua'] - a['last_epoch']['ua']['fold_mean']:.2f}"
    assert sd["last epoch - LOSO"] == f"{a['last_epoch']['ua']['fold_mean'] - b['ua']['fold_mean']:.2f}"


def test_cross_corpus_sits_beside_both_corpora_loso():
    recs = study()
    frame = tables.cross_corpus_table(recs, NAMES)
    cross = row(frame, "experiment", "iemocap-to-msp-improv")
    rec = recs["iemocap-to-msp-improv"]
    assert cross["WA pooled"] == f"{rec['wa']['pooled']:.2f}"
    assert cross["UA fold mean ± std"] == f"{rec['ua']['fold_mean']:.2f} ± {rec['ua']['fold_std']:.2f}"
    train_loso = recs["iemocap-loso"]["ua"]["fold_mean"]
    test_loso = recs["msp-improv-loso"]["ua"]["fold_mean"]
    assert cross["drop vs train LOSO"] == f"{train_loso - rec['ua']['fold_mean']:.2f}"
    assert cross["drop vs test LOSO"] == f"{test_loso - rec['ua']['fold_mean']:.2f}"


def test_write_gives_md_csv_tex_per_table_byte_stable(tmp_path):
    built = tables.build(study(), NAMES)
    paths = tables.write(built, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{n}.{s}" for n in built for s in ("md", "csv", "tex"))
    first = {p: p.read_bytes() for p in paths}
    tables.write(tables.build(study(), NAMES), tmp_path)
    assert {p: p.read_bytes() for p in paths} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left
    back = pd.read_csv(tmp_path / "variants.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(back, built["variants"])
    assert "± " in (tmp_path / "variants.md").read_text() and "\\toprule" in (tmp_path / "paper.tex").read_text()


@pytest.mark.parametrize("name", ["protocol_gap", "cross_corpus"])
def test_empty_tables_still_write(tmp_path, name):
    built = tables.build({"a": make_record("a", "sdcaff", "iemocap-authors")}, NAMES)
    assert built[name].empty
    tables.write({name: built[name]}, tmp_path)
    assert "(no experiments for this table)" in (tmp_path / f"{name}.md").read_text()


def test_per_class_table_shows_recall_precision_and_support_from_the_metrics():
    from sdcaff import evaluate

    recs = study()
    true = np.array([0, 0, 1, 2, 3, 3])
    pred = np.array([0, 1, 1, 0, 3, 3])
    labels = recs["iemocap-loso"]["labels"]
    recs["iemocap-loso"]["per_class"] = evaluate.per_class(labels, true, pred, [true], [pred])
    frame = tables.per_class_table(recs, NAMES)
    row = frame[frame["experiment"] == "iemocap-loso"].iloc[0]
    # neutral: 1 of 2 right, predicted twice (once wrongly, for angry); angry never predicted.
    assert (row["neutral R"], row["neutral P"], row["neutral support"]) == ("50.00", "50.00", "2")
    assert (row["angry R"], row["angry P"]) == ("0.00", tables.DASH)
    assert (row["happy R"], row["happy P"]) == ("100.00", "100.00")
    other = frame[frame["experiment"] != "iemocap-loso"].iloc[0]
    assert other["neutral R"] == tables.DASH  # a record without per_class (an older metrics file)
    assert list(frame["experiment"]) == sorted(recs, key=lambda n: (tables.protocol_key(recs[n]["protocol"]), n))


def test_fewer_than_five_units_print_values_not_intervals_or_tests():
    recs = {"a": make_record("a", "sdcaff", "iemocap-loso", seeds=(1,), folds=(0, 1, 2, 3, 4)),
            "b": make_record("b", "cnn", "iemocap-loso", seeds=(1,), folds=(0, 1), shift=-20.0)}
    cnn = row(tables.variants_table(recs, NAMES), "id", "cnn")
    values = [u["ua"] for u in recs["b"]["per_fold"]]
    assert cnn["iemocap-loso: UA"] == f"{np.mean(values):.2f} (2 units: {values[0]:.2f}, {values[1]:.2f})"
    assert "[" not in cnn["iemocap-loso: UA"] + cnn["iemocap-loso: WA"]
    assert cnn["iemocap-loso: p corrected t"] == cnn["iemocap-loso: p Wilcoxon"] == cnn["iemocap-loso: p BH"] == "–"
    assert cnn["iemocap-loso: verdict"] == "not tested (2 units < 5)"
    assert float(cnn["iemocap-loso: ΔUA"]) < -15  # the difference itself is still shown
    assert tables.spread([61.0]) == "61.00 (1 unit: 61.00)"


def test_verdicts_read_the_adjusted_p_and_the_sign():
    assert tables.verdict(2.0, 0.01, 10) == "better"
    assert tables.verdict(-2.0, 0.01, 10) == "worse"
    assert tables.verdict(-2.0, 0.2, 10) == "not shown at 10 units"
    assert tables.verdict(5.0, None, 5) == "not shown at 5 units"  # no corrected t (no n_train)
    assert tables.verdict(5.0, 0.001, 4) == "not tested (4 units < 5)"


def test_benjamini_hochberg_matches_the_textbook_steps():
    # p sorted 0.01, 0.02, 0.03, 0.5 of m = 4: p_(i) * m / i, then the running minimum from the top.
    assert stats.adjust_bh([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.04, 0.04, 0.5, 0.04])
    assert stats.adjust_bh([]) == []


def test_p_values_are_adjusted_across_the_variants_of_a_protocol():
    recs = {"ref": make_record("ref", "sdcaff", "iemocap-loso", folds=(0, 1, 2, 3, 4))}
    rng = np.random.default_rng(0)
    for variant, shift in (("cnn", -6.0), ("lstm", 0.2), ("crnn", 3.0)):
        rec = make_record(variant, variant, "iemocap-loso", folds=(0, 1, 2, 3, 4), shift=shift)
        for unit in rec["per_fold"]:
            unit["ua"] += float(rng.normal(0.0, 1.5))  # paired differences that vary: a t-test is defined
        recs[variant] = rec
    frame = tables.variants_table(recs, NAMES)
    ref = tables.units(recs["ref"], "ua")
    raw = {v: stats.paired(tables.units(recs[v], "ua"), ref, stats.split_ratio(recs[v]["per_fold"]))
           for v in ("cnn", "lstm", "crnn")}
    adjusted = dict(zip(raw, sps.false_discovery_control([t.p_t for t in raw.values()], method="bh")))
    for variant, test in raw.items():
        cells = row(frame, "id", variant)
        assert cells["iemocap-loso: p corrected t"] == tables.pval(test.p_t)
        assert cells["iemocap-loso: p BH"] == tables.pval(adjusted[variant])
        assert cells["iemocap-loso: verdict"] == tables.verdict(test.mean_diff, adjusted[variant], 10)
    verdicts = {v: row(frame, "id", v)["iemocap-loso: verdict"] for v in raw}
    assert verdicts["cnn"] == "worse" and verdicts["lstm"] == "not shown at 10 units"
    assert row(frame, "id", "sdcaff")["iemocap-loso: verdict"] == "–"  # the reference is not tested against itself


def test_literature_table_puts_the_three_iemocap_settings_and_the_published_results_side_by_side():
    recs = study()
    recs["iemocap-loso-full"] = make_record("iemocap-loso-full", "sdcaff", "iemocap-loso-full", folds=(0, 1, 2, 3, 4))
    frame = tables.literature_table(recs, NAMES)
    ours = frame[frame["source"] == "this suite"]
    assert list(ours["protocol"]) == ["iemocap-authors", "iemocap-loso", "iemocap-loso-full"]
    assert set(ours["system"]) == {"SD-CAFF"}  # cnn never ran the literature setting: not listed
    full = ours[ours["protocol"] == "iemocap-loso-full"].iloc[0]
    assert full["UA"] == f"{recs['iemocap-loso-full']['ua']['fold_mean']:.2f}" and full["N"] == "10"
    published = frame[frame["source"] == "published"]
    assert len(published) == len(paper.NEARBY)
    emobox = published[published["system"].str.startswith("EmoBox")].iloc[0]
    assert (emobox["protocol"], emobox["WA"], emobox["UA"]) == ("leave-one-session-out", "72.86", "73.54")
    assert published[published["system"].str.startswith("TIM-Net")].iloc[0]["UA"] == tables.DASH


def test_per_speaker_table_lists_each_primary_experiments_speakers():
    recs = study()
    recs["iemocap-loso"]["group"] = "headline"
    recs["iemocap-loso"]["per_speaker"] = {"Ses01_F": {"wa": 70.0, "ua": 65.5, "n": 40},
                                           "Ses01_M": {"wa": 60.0, "ua": 58.25, "n": 38}}
    recs["cnn-iemocap-loso"]["per_speaker"] = {"Ses01_F": {"wa": 1.0, "ua": 1.0, "n": 1}}  # secondary: not listed
    frame = tables.per_speaker_table(recs, NAMES)
    assert frame.to_dict("records") == [
        {"experiment": "iemocap-loso", "protocol": "iemocap-loso", "speaker": "Ses01_F", "WA": "70.00", "UA": "65.50",
         "n": "40"},
        {"experiment": "iemocap-loso", "protocol": "iemocap-loso", "speaker": "Ses01_M", "WA": "60.00", "UA": "58.25",
         "n": "38"}]

"""Metrics records -> the report's tables (pandas DataFrames of display strings) and their md/csv/tex files."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Mapping

import pandas as pd

from sdcaff import paper, stats
from sdcaff.files import atomic_path
from sdcaff.results import lookup

log = logging.getLogger(__name__)

# The suite's protocols in reading order: within-corpus pairs first, then cross-corpus.
PROTOCOL_ORDER = (
    "iemocap-authors", "iemocap-loso", "iemocap-loso-full", "msp-improv-authors", "msp-improv-loso",
    "iemocap-to-msp-improv", "msp-improv-to-iemocap",
)
CORPORA = ("iemocap", "msp-improv")
REFERENCE = "sdcaff"  # the variant every other one is compared with
DASH = "–"  # a value that is undefined or absent (one unit, no n_train, key missing)
NOT_RUN = "not run"
# Fewer units than this print no interval and no test, only the units' values: with 2-4 units a 95 % t
# interval spans tens of points and the exact Wilcoxon test cannot reach p < 0.05 (its floor at n = 4 is 0.125).
MIN_UNITS = 5
ALPHA = 0.05  # the verdicts' level, after the Benjamini-Hochberg adjustment across a protocol's variants

# One line per table saying how its numbers were computed; written above each table.
NOTES = {
    "paper": "Published numbers beside the same aggregation of this suite's run (percent). "
             "`keys` names the metrics-JSON entries compared; difference = reproduced - reported. `data`: the "
             "corpus copy behind the reproduced number; only `real, complete` is comparable with the paper.",
    "variants": "WA and UA: mean ± sample std [95% Student-t CI] over the N seed x fold units (percent); with "
                "fewer than 5 units, the mean and each unit's value, no interval and no test. "
                "ΔUA: mean over shared units of variant UA - SD-CAFF UA. p corrected t: Nadeau & Bengio's "
                "corrected resampled t-test (variance x (1/N + n_test/n_train)); p Wilcoxon: exact two-sided "
                "signed-rank test on the same units. p BH: the corrected t's p adjusted by Benjamini-Hochberg "
                "across the variants of the same protocol column; verdict: better / worse when p BH < 0.05, "
                "else not shown at N units.",
    "protocol_gap": "Fold means over seed x fold units (percent). authors' maxima: per unit the best test score "
                    "over epochs, averaged (the paper's way); last epoch: the final epoch, no selection. "
                    "maxima - last epoch ~ test-set selection; last epoch - LOSO ~ speaker leakage.",
    "per_class": "Recall (R) and precision (P) per class, pooled over every test row of every seed x fold unit "
                 "(percent); support = test rows of the class (each seed counts once). UA is the mean of the recalls. "
                 "– = undefined: a class never predicted has no precision.",
    "literature": "The three IEMOCAP settings side by side (percent): iemocap-authors = the authors' improvised "
                  "4-class data, random utterance folds, best test epoch (leaky); iemocap-loso = the same data, "
                  "leave-one-session-out, epoch chosen on validation; iemocap-loso-full = the literature's "
                  "setting (all sessions, improvised and scripted, hap+exc merged, leave-one-session-out). WA "
                  "pooled, UA fold mean over N units. Below, published results for context (spec, not reproduced "
                  "here), each with the protocol its paper states.",
    "per_speaker": "Per test speaker of the headline and cross-corpus experiments: WA and UA over the speaker's "
                   "test rows pooled across every seed x fold unit (percent); n = those rows (each seed counts once). "
                   "Under LOSO each speaker is tested by the fold that held out their session.",
    "cross_corpus": "WA pooled over all test rows; UA fold mean ± std over seed x fold units (percent). "
                    "LOSO columns: UA fold mean of the same variant's speaker-independent run on that corpus; "
                    "drop = LOSO UA - cross-corpus UA.",
}


def pct(value: float | None) -> str:
    """Returns a percentage with 2 decimals, or a dash for None."""
    return DASH if value is None else f"{value:.2f}"


def pval(value: float | None) -> str:
    """Returns a p-value with 3 decimals (4 below 0.01), or a dash for None."""
    if value is None:
        return DASH
    return f"{value:.4f}" if value < 0.01 else f"{value:.3f}"


def spread(values: list[float]) -> str:
    """Returns 'mean ± std [low, high]' over units; under MIN_UNITS units, the mean and the units' values."""
    iv = stats.interval(values)
    if iv.n < MIN_UNITS:
        listed = ", ".join(f"{v:.2f}" for v in values)
        return f"{iv.mean:.2f} ({iv.n} unit{'s' if iv.n > 1 else ''}: {listed})"
    return f"{iv.mean:.2f} ± {iv.std:.2f} [{iv.low:.2f}, {iv.high:.2f}]"


def verdict(mean_diff: float | None, p_adjusted: float | None, n: int) -> str:
    """Returns the plain-words reading of a variant's paired difference with SD-CAFF."""
    if mean_diff is None or n < MIN_UNITS:
        return f"not tested ({n} unit{'s' if n != 1 else ''} < {MIN_UNITS})"
    if p_adjusted is None:
        return f"not shown at {n} units"
    if p_adjusted < ALPHA:
        return "better" if mean_diff > 0 else "worse"
    return f"not shown at {n} units"


def variant_of(record: Mapping) -> str:
    """Returns the record's row id; files written before `variant` existed fall back to the model name."""
    return str(record.get("variant") or record.get("model"))


def units(record: Mapping, metric: str) -> dict[tuple[int, int], float]:
    """Returns {(seed, fold): value} of `metric` ('wa' or 'ua') over the record's per_fold units."""
    return {(int(u["seed"]), int(u["fold"])): float(u[metric]) for u in record.get("per_fold", [])}


def find(records: Mapping[str, Mapping], variant: str, protocol: str) -> tuple[str, Mapping] | None:
    """Returns (experiment, record) of the first experiment (by name) with this variant and protocol."""
    for name in sorted(records):
        rec = records[name]
        if variant_of(rec) == variant and rec.get("protocol") == protocol:
            return name, rec
    return None


def protocol_key(protocol: str) -> tuple[int, str]:
    """Returns a sort key putting the known protocols in reading order and unknown ones after."""
    return (PROTOCOL_ORDER.index(protocol), "") if protocol in PROTOCOL_ORDER else (len(PROTOCOL_ORDER), protocol)


def variant_order(found: set[str], names: Mapping[str, str]) -> list[str]:
    """Returns the variant ids: those listed in params report.variants in that order, then the rest sorted."""
    return [v for v in names if v in found] + sorted(found - set(names))


def paper_table(records: Mapping[str, Mapping]) -> pd.DataFrame:
    """Returns one row per published number: reported, reproduced the same way, and the difference."""
    rows = []
    for rep in paper.REPORTED:
        hit = paper.reproduction(rep, records)
        described = (hit.get("corpora") or {}).get(hit.get("test_corpus"), {}) if hit is not None else {}
        row = {"result": rep.name, "corpus": rep.corpus,
               # the data behind the reproduced number: synthetic, real and complete, or a real subset
               "data": str(described.get("status", DASH)) if isinstance(described, Mapping) else DASH,
               "protocol": rep.protocol, "aggregation": rep.how,
               "keys": f"{rep.wa_key} / {rep.ua_key}", "experiment": rep.experiment if hit is not None else NOT_RUN}
        for metric, reported, key in (("WA", rep.wa, rep.wa_key), ("UA", rep.ua, rep.ua_key)):
            got = lookup(hit, key) if hit is not None else None
            row[f"{metric} reported"] = pct(reported)
            row[f"{metric} reproduced"] = pct(got) if hit is not None else NOT_RUN
            row[f"{metric} difference"] = pct(None if got is None else got - reported)
        row["source"] = rep.source
        row["units"] = str(len(hit.get("per_fold", []))) if hit is not None else DASH
        rows.append(row)
    return pd.DataFrame(rows)


def variants_table(records: Mapping[str, Mapping], names: Mapping[str, str]) -> pd.DataFrame:
    """Returns one row per variant, per protocol its WA/UA spread and the paired test against SD-CAFF."""
    within = [r for r in records.values() if r.get("train_corpus") == r.get("test_corpus")]
    # Column groups: the protocols where something besides SD-CAFF ran (the secondary experiments).
    protocols = sorted({r["protocol"] for r in within if variant_of(r) != REFERENCE}, key=protocol_key)
    if not protocols:
        protocols = sorted({r["protocol"] for r in within}, key=protocol_key)
    found = {variant_of(r) for r in within if r["protocol"] in protocols}
    rows, tests = [], {protocol: {} for protocol in protocols}
    for variant in variant_order(found, names):
        row = {"variant": names.get(variant, variant), "id": variant}
        for protocol in protocols:
            hit = find(records, variant, protocol)
            ref = find(records, REFERENCE, protocol)
            cells, test = _variant_cells(protocol, hit[1] if hit else None, ref[1] if ref else None,
                                         variant == REFERENCE)
            row.update(cells)
            if test is not None:
                tests[protocol][len(rows)] = test
        rows.append(row)
    for protocol, found_tests in tests.items():
        head = f"{protocol}: "
        tested = {i: t.p_t for i, t in found_tests.items() if t.p_t is not None and t.n >= MIN_UNITS}
        adjusted = dict(zip(tested, stats.adjust_bh(list(tested.values())))) if tested else {}
        for i, test in found_tests.items():
            rows[i][head + "p BH"] = pval(adjusted.get(i))
            rows[i][head + "verdict"] = verdict(test.mean_diff, adjusted.get(i), test.n)
    return pd.DataFrame(rows)


def _variant_cells(protocol: str, rec: Mapping | None, ref: Mapping | None,
                   is_ref: bool) -> tuple[dict[str, str], stats.Paired | None]:
    """Returns the variants table's cells for one record under one protocol (dashes where absent), and its
    paired test against SD-CAFF (None when there is none); p BH and verdict are filled in by the caller."""
    head = f"{protocol}: "
    cells = {head + "WA": NOT_RUN, head + "UA": NOT_RUN, head + "N": DASH, head + "ΔUA": DASH,
             head + "p corrected t": DASH, head + "p Wilcoxon": DASH, head + "p BH": DASH, head + "verdict": DASH}
    if rec is None or not rec.get("per_fold"):
        return cells, None
    wa, ua = units(rec, "wa"), units(rec, "ua")
    cells[head + "WA"] = spread(list(wa.values()))
    cells[head + "UA"] = spread(list(ua.values()))
    cells[head + "N"] = str(len(ua))
    if ref is None or is_ref:
        return cells, None
    ref_ua = units(ref, "ua")
    shared = [u for u in rec["per_fold"] if (int(u["seed"]), int(u["fold"])) in ref_ua]
    try:
        ratio = stats.split_ratio(shared)
    except ValueError:
        ratio = None  # older metrics files lack n_train: the corrected t cannot be computed
    test = stats.paired(ua, ref_ua, ratio if ratio is not None else 0.0)
    cells[head + "ΔUA"] = pct(test.mean_diff)
    if test.n < MIN_UNITS:
        return cells, test  # the difference only: no test from fewer units
    if ratio is None:
        test = dataclasses.replace(test, t=None, p_t=None)
    cells[head + "p corrected t"] = pval(test.p_t)
    cells[head + "p Wilcoxon"] = pval(test.p_wilcoxon)
    return cells, test


def protocol_gap_table(records: Mapping[str, Mapping], names: Mapping[str, str]) -> pd.DataFrame:
    """Returns, per variant run under both a corpus's authors' and LOSO protocol, how the scores move."""
    rows = []
    found = {variant_of(r) for r in records.values()}
    for corpus in CORPORA:
        for variant in variant_order(found, names):
            authors = find(records, variant, f"{corpus}-authors")
            loso = find(records, variant, f"{corpus}-loso")
            if not (authors and loso):
                continue
            a, b = authors[1], loso[1]
            for metric, upper in (("wa", "WA"), ("ua", "UA")):
                a_mean = lookup(a, f"{metric}.fold_mean")
                b_mean = lookup(b, f"{metric}.fold_mean")
                maxima = lookup(a, f"authors.{metric}")
                last = lookup(a, f"last_epoch.{metric}.fold_mean")
                rows.append({
                    "corpus": corpus, "variant": names.get(variant, variant), "metric": upper,
                    "authors (selected epoch)": pct(a_mean), "LOSO": pct(b_mean),
                    "authors - LOSO": pct(_minus(a_mean, b_mean)),
                    "authors' maxima": pct(maxima), "last epoch (authors)": pct(last),
                    "maxima - last epoch": pct(_minus(maxima, last)),
                    "last epoch - LOSO": pct(_minus(last, b_mean)),
                })
    return pd.DataFrame(rows, columns=[
        "corpus", "variant", "metric", "authors (selected epoch)", "LOSO", "authors - LOSO",
        "authors' maxima", "last epoch (authors)", "maxima - last epoch", "last epoch - LOSO"])


def cross_corpus_table(records: Mapping[str, Mapping], names: Mapping[str, str]) -> pd.DataFrame:
    """Returns one row per cross-corpus run beside the within-corpus LOSO UA of both corpora."""
    rows = []
    cross = [n for n in records if records[n].get("train_corpus") != records[n].get("test_corpus")]
    for name in sorted(cross, key=lambda n: (protocol_key(records[n]["protocol"]), n)):
        rec = records[name]
        variant = variant_of(rec)
        train, test = rec["train_corpus"], rec["test_corpus"]
        ua = lookup(rec, "ua.fold_mean")
        ua_std = lookup(rec, "ua.fold_std")
        loso = {}
        for corpus in (train, test):
            hit = find(records, variant, f"{corpus}-loso")
            loso[corpus] = lookup(hit[1], "ua.fold_mean") if hit else None
        rows.append({
            "experiment": name, "variant": names.get(variant, variant), "train -> test": f"{train} -> {test}",
            "WA pooled": pct(lookup(rec, "wa.pooled")),
            "UA fold mean ± std": DASH if ua is None else f"{ua:.2f} ± {pct(ua_std)}",
            "N": str(len(rec.get("per_fold", []))),
            "UA LOSO train corpus": pct(loso[train]), "drop vs train LOSO": pct(_minus(loso[train], ua)),
            "UA LOSO test corpus": pct(loso[test]), "drop vs test LOSO": pct(_minus(loso[test], ua)),
        })
    return pd.DataFrame(rows, columns=[
        "experiment", "variant", "train -> test", "WA pooled", "UA fold mean ± std", "N",
        "UA LOSO train corpus", "drop vs train LOSO", "UA LOSO test corpus", "drop vs test LOSO"])


LITERATURE_PROTOCOLS = ("iemocap-authors", "iemocap-loso", "iemocap-loso-full")


def literature_table(records: Mapping[str, Mapping], names: Mapping[str, str]) -> pd.DataFrame:
    """Returns this suite's variants that ran iemocap-loso-full, under the three IEMOCAP settings, then the
    published nearby results with their protocols."""
    rows = []
    variants = {variant_of(r) for r in records.values() if r.get("protocol") == "iemocap-loso-full"}
    for variant in variant_order(variants, names):
        for protocol in LITERATURE_PROTOCOLS:
            hit = find(records, variant, protocol)
            rec = hit[1] if hit else None
            rows.append({"system": names.get(variant, variant), "source": "this suite" if rec else NOT_RUN,
                         "protocol": protocol, "WA": pct(lookup(rec, "wa.pooled")) if rec else NOT_RUN,
                         "UA": pct(lookup(rec, "ua.fold_mean")) if rec else NOT_RUN,
                         "N": str(len(rec["per_fold"])) if rec else DASH})
    for published in paper.NEARBY:
        rows.append({"system": published.system, "source": "published", "protocol": published.protocol,
                     "WA": pct(published.wa), "UA": pct(published.ua), "N": DASH})
    return pd.DataFrame(rows, columns=["system", "source", "protocol", "WA", "UA", "N"])


def per_speaker_table(records: Mapping[str, Mapping], names: Mapping[str, str]) -> pd.DataFrame:
    """Returns one row per (primary experiment, test speaker): the speaker's WA, UA and test rows."""
    rows = []
    primary = [n for n in records if records[n].get("group", "headline") in ("headline", "cross-corpus")]
    for name in sorted(primary, key=lambda n: (protocol_key(records[n]["protocol"]), n)):
        rec = records[name]
        for speaker, cell in (rec.get("per_speaker") or {}).items():
            rows.append({"experiment": name, "protocol": rec["protocol"], "speaker": speaker,
                         "WA": pct(cell.get("wa")), "UA": pct(cell.get("ua")), "n": str(cell.get("n", DASH))})
    return pd.DataFrame(rows, columns=["experiment", "protocol", "speaker", "WA", "UA", "n"])


def per_class_table(records: Mapping[str, Mapping], names: Mapping[str, str]) -> pd.DataFrame:
    """Returns one row per experiment: each class's pooled recall and precision, and its support."""
    rows = []
    for name in sorted(records, key=lambda n: (protocol_key(records[n]["protocol"]), n)):
        rec = records[name]
        variant = variant_of(rec)
        row = {"experiment": name, "variant": names.get(variant, variant), "protocol": rec["protocol"],
               "N": str(len(rec.get("per_fold", [])))}
        per_class = rec.get("per_class") or {}
        for label in rec.get("labels", []):
            cell = per_class.get(label, {})
            row[f"{label} R"] = pct(cell.get("recall"))
            row[f"{label} P"] = pct(cell.get("precision"))
            row[f"{label} support"] = DASH if cell.get("support") is None else str(cell["support"])
        rows.append(row)
    return pd.DataFrame(rows)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def upstream_label(upstream: Mapping) -> str:
    """Returns a checkpoint's name in a cell: 'name@revision' (revision cut to 12 characters), or the name alone."""
    if "name" not in upstream:  # one identity per feature set (train and test sets differ)
        return " + ".join(upstream_label(u) for _, u in sorted(upstream.items()) if isinstance(u, Mapping))
    revision = upstream.get("revision")
    return f"{upstream['name']}@{str(revision)[:12]}" if revision else str(upstream["name"])


def with_checkpoints(records: Mapping[str, Mapping], names: Mapping[str, str]) -> dict[str, str]:
    """Returns the display names with each upstream-based variant's checkpoint(s) named beside it."""
    labels: dict[str, list[str]] = {}
    for rec in records.values():
        if isinstance(rec.get("upstream"), Mapping):
            found = labels.setdefault(variant_of(rec), [])
            label = upstream_label(rec["upstream"])
            if label not in found:
                found.append(label)
    named = dict(names)
    for variant, found in labels.items():
        named[variant] = f"{names.get(variant, variant)} ({', '.join(sorted(found))})"
    return named


def build(records: Mapping[str, Mapping], names: Mapping[str, str]) -> dict[str, pd.DataFrame]:
    """Returns every table by name, in the order the report shows them (upstream checkpoints named)."""
    names = with_checkpoints(records, names)
    return {
        "paper": paper_table(records),
        "variants": variants_table(records, names),
        "protocol_gap": protocol_gap_table(records, names),
        "cross_corpus": cross_corpus_table(records, names),
        "literature": literature_table(records, names),
        "per_class": per_class_table(records, names),
        "per_speaker": per_speaker_table(records, names),
    }


def markdown(name: str, frame: pd.DataFrame) -> str:
    """Returns the table's note and the table as Markdown (cells verbatim: no number re-formatting)."""
    if frame.empty:
        return f"{NOTES[name]}\n\n(no experiments for this table)\n"
    return f"{NOTES[name]}\n\n{frame.to_markdown(index=False, disable_numparse=True)}\n"


def write(tables: Mapping[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Writes <name>.md, .csv and .tex per table, each atomically; returns the paths written."""
    written = []
    for name, frame in tables.items():
        outputs = {
            ".md": markdown(name, frame),
            ".csv": frame.to_csv(index=False, lineterminator="\n"),
            # The note rides as a LaTeX comment: a caption would need its own escaping of %, & and ~.
            ".tex": f"% {NOTES[name]}\n" + frame.to_latex(index=False, escape=True),
        }
        for suffix, text in outputs.items():
            path = out_dir / f"{name}{suffix}"
            with atomic_path(path) as tmp:
                tmp.write_text(text, encoding="utf-8")
            written.append(path)
    return written

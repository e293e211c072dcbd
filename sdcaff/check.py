"""Stage check: metrics files against committed expectations (or the paper); non-zero on regression."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
from pathlib import Path
from typing import Mapping

from sdcaff import env, paper, params, results
from sdcaff.errors import SdcaffError
from sdcaff.files import atomic_path
from sdcaff.results import lookup

log = logging.getLogger(__name__)

# What a recorded expectation covers: both aggregations of both metrics, and the authors' maxima.
RECORDED_KEYS = ("wa.pooled", "wa.fold_mean", "ua.pooled", "ua.fold_mean", "authors.wa", "authors.ua")


@dataclasses.dataclass(frozen=True)
class CheckParams:
    expected: str = "results/expected.json"  # committed expectations for the default pipeline
    metrics_dir: str = "results/metrics"  # <experiment>.json each; any other *.json there is an error
    corpora_dir: str = "results/corpora"  # fingerprints: --against paper warns when a corpus was synthetic
    tolerance: float = 0.5  # percentage points, used when recording; with --spread, the floor; docs/regression.md
    spread_factor: float = 1.5  # --record --spread: tolerance = this x the largest measured difference of its group
    paper_tolerance: float = 2.0  # percentage points between a real-corpus run and the paper


@dataclasses.dataclass(frozen=True)
class Row:
    experiment: str
    metric: str
    expected: float | None
    got: float | None
    tolerance: float

    @property
    def difference(self) -> float | None:
        if self.expected is None or self.got is None:
            return None
        return self.got - self.expected

    @property
    def verdict(self) -> str:
        if self.got is None:
            return "MISSING"
        if self.expected is None:
            return "UNEXPECTED"
        diff = self.difference
        if not math.isfinite(self.got):
            return "FAIL"
        if abs(diff) <= self.tolerance + 1e-9:
            return "ok"
        return "FAIL (lower)" if diff < 0 else "FAIL (higher)"

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def compare_expected(expected: dict, metrics: dict[str, dict], source: Path) -> list[Row]:
    """Returns one row per expected metric (plus UNEXPECTED rows for unlisted experiments)."""
    if "experiments" not in expected:
        raise SdcaffError(f"{source}: no 'experiments' key; write it with `sdcaff check --record`")
    rows = []
    for exp, entries in sorted(expected["experiments"].items()):
        for key, spec in sorted(entries.items()):
            got = lookup(metrics[exp], key) if exp in metrics else None
            rows.append(Row(exp, key, float(spec["value"]), got, float(spec["tolerance"])))
    return rows


def compare_paper(metrics: dict[str, dict], tolerance: float) -> list[Row]:
    """Returns rows comparing each published number with the experiment the report's paper table uses."""
    rows = []
    for rep in paper.REPORTED:
        m = paper.reproduction(rep, metrics) or {}
        rows.append(Row(rep.experiment, f"{rep.wa_key} (paper WA {rep.source})", rep.wa, lookup(m, rep.wa_key),
                        tolerance))
        rows.append(Row(rep.experiment, f"{rep.ua_key} (paper UA {rep.source})", rep.ua, lookup(m, rep.ua_key),
                        tolerance))
    return rows


BANNER = "synthetic corpora: these numbers say nothing about the paper"


def corpus_banner(metrics: Mapping[str, dict], corpora: Mapping[str, dict], corpora_dir: Path) -> list[str]:
    """Returns the lines to print above a paper comparison: a banner when a compared corpus is synthetic."""
    compared = {rep.corpus for rep in paper.REPORTED if rep.experiment in metrics}
    synthetic = [c for c in results.synthetic_corpora(corpora) if c in compared]
    unknown = sorted(compared - set(corpora))
    if unknown:
        log.warning("corpora without a fingerprint in %s, so maybe synthetic: %s; run `sdcaff fingerprint`",
                    corpora_dir, ", ".join(unknown))
    if not synthetic:
        return []
    log.warning("synthetic corpora compared with the paper: %s (fingerprints in %s); these numbers say nothing "
                "about the paper", ", ".join(synthetic), corpora_dir)
    line = f"!!! {BANNER} ({', '.join(synthetic)}) !!!"
    return ["!" * len(line), line, "!" * len(line), ""]


def measured_spread(metrics: dict[str, dict], others: Mapping[str, dict[str, dict]]) -> dict[tuple[str, str], float]:
    """Returns {(group, metric): largest |difference|} between `metrics` and other runs of the same study.

    The other runs are the same experiments on other CPU kinds or thread counts; an experiment missing
    from one of them is an error, since a spread that leaves it out says nothing about it.
    """
    spread: dict[tuple[str, str], float] = {}
    for name, other in others.items():
        missing = sorted(set(metrics) - set(other))
        if missing:
            raise SdcaffError(f"{name}: no metrics for {', '.join(missing)}; the spread must cover every experiment")
        for exp, m in metrics.items():
            for key in RECORDED_KEYS:
                a, b = lookup(m, key), lookup(other[exp], key)
                if a is None or b is None:
                    continue
                group = (str(m.get("group", "headline")), key)
                spread[group] = max(spread.get(group, 0.0), abs(a - b))
    return spread


def spread_tolerance(spread: float, floor: float, factor: float) -> float:
    """Returns factor x spread rounded up to 0.1 point, and never below `floor`."""
    return max(floor, math.ceil(factor * spread * 10 - 1e-9) / 10)


def record(metrics: dict[str, dict], tolerance: float, profile: str | None,
           spread: dict[tuple[str, str], float] | None = None, factor: float = 1.5) -> dict:
    """Returns an expectations document for the current metrics, with its provenance.

    Without `spread` every metric gets `tolerance`; with it, each metric gets spread_tolerance() of the
    largest difference measured for its experiment group and metric, `tolerance` being the floor.
    """
    experiments = {}
    for exp, m in sorted(metrics.items()):
        entries = {}
        for k in RECORDED_KEYS:
            if (v := lookup(m, k)) is None:
                continue
            entry = {"value": round(v, 4), "tolerance": tolerance}
            if spread is not None:
                measured = spread.get((str(m.get("group", "headline")), k), 0.0)
                entry = {"value": round(v, 4), "tolerance": spread_tolerance(measured, tolerance, factor),
                         "spread": round(measured, 4)}
            entries[k] = entry
        if entries:
            experiments[exp] = entries
    first = next(iter(metrics.values()), {})
    return {
        "provenance": {
            "recorded": datetime.date.today().isoformat(),
            "commit": env.git_commit(),
            "profile": profile or first.get("profile"),
            "seeds": {exp: m.get("seeds") for exp, m in sorted(metrics.items())},
            "env": first.get("env"),
        },
        "experiments": experiments,
    }


def load_expected(path: Path) -> dict:
    """Returns an expectations file's content; a missing or invalid file names itself."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SdcaffError(f"{path}: expectations file not found") from exc
    except json.JSONDecodeError as exc:
        raise SdcaffError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc


def keep_spreads(doc: dict, earlier: dict, floor: float, factor: float) -> None:
    """Raises each recorded spread in `doc` to the one `earlier` holds for the same experiment and metric
    (measured on kinds this run's --spread did not cover) and recomputes its tolerance."""
    for exp, entries in doc["experiments"].items():
        for key, entry in entries.items():
            old = earlier.get("experiments", {}).get(exp, {}).get(key, {}).get("spread")
            if old is not None and old > entry["spread"]:
                entry["spread"] = round(float(old), 4)
                entry["tolerance"] = spread_tolerance(entry["spread"], floor, factor)


def format_table(rows: list[Row]) -> str:
    """Returns the comparison as a fixed-width text table."""
    head = ("experiment", "metric", "expected", "got", "difference", "tolerance", "verdict")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    body = [(r.experiment, r.metric, fmt(r.expected), fmt(r.got),
             "-" if r.difference is None else f"{r.difference:+.2f}", f"{r.tolerance:.2f}", r.verdict)
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--expected", help="expectations JSON (default: params check.expected)")
    parser.add_argument("--metrics-dir", help="directory of <experiment>.json metrics files")
    parser.add_argument("--against", choices=["expected", "paper"], default="expected",
                        help="compare with committed expectations (default) or the published numbers")
    parser.add_argument("--tolerance", type=float, help="percentage points (paper mode, or when recording)")
    parser.add_argument("--record", action="store_true",
                        help="write the expectations file from the current metrics instead of checking")
    parser.add_argument("--spread", action="append", metavar="DIR", type=Path,
                        help="with --record: the metrics dir of another run of the same study (another CPU kind or "
                             "thread count; repeatable); each tolerance comes from the measured differences")
    parser.add_argument("--keep-spread", metavar="EXPECTED", type=Path,
                        help="with --record --spread: an earlier expectations file whose spreads (measured on other "
                             "kinds, e.g. emulated ones) still hold: each metric keeps the larger of both spreads")


def run(args: argparse.Namespace) -> int:
    p = params.load("check", CheckParams)
    metrics_dir = Path(args.metrics_dir or p.metrics_dir)
    expected_path = Path(args.expected or p.expected)
    metrics, skipped = results.split_not_run(results.load_metrics(metrics_dir))
    log.info("read %d metrics files from %s", len(metrics) + len(skipped), metrics_dir)
    for name, reason in sorted(skipped.items()):
        print(f"{name}: not run: {reason}")
    if args.record:
        if not metrics:
            raise SdcaffError(f"{metrics_dir}: no metrics files to record")
        floor = args.tolerance if args.tolerance is not None else p.tolerance
        spread = None
        if args.keep_spread and not args.spread:
            raise SdcaffError("--keep-spread adds earlier spreads to those --spread measures: give --spread too")
        if args.spread:
            spread = measured_spread(metrics, {str(d): results.split_not_run(results.load_metrics(d))[0]
                                               for d in args.spread})
        doc = record(metrics, floor, None, spread, p.spread_factor)
        if args.keep_spread:
            keep_spreads(doc, load_expected(args.keep_spread), floor, p.spread_factor)
        if spread is not None:
            doc["provenance"]["spread"] = {"runs": [str(d) for d in args.spread], "factor": p.spread_factor,
                                           "floor": floor}
            if args.keep_spread:
                doc["provenance"]["spread"]["kept_from"] = str(args.keep_spread)
        with atomic_path(expected_path) as tmp:
            tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        log.info("wrote %d experiments' expectations to %s", len(doc["experiments"]), expected_path)
        return 0
    if args.against == "paper":
        rows = compare_paper(metrics, args.tolerance if args.tolerance is not None else p.paper_tolerance)
        corpora_dir = Path(p.corpora_dir)
        for line in corpus_banner(metrics, results.load_corpora(corpora_dir), corpora_dir):
            print(line)
    else:
        expected = load_expected(expected_path)
        rows = compare_expected(expected, metrics, expected_path)
        listed = set(expected["experiments"])
        rows += [Row(exp, "(experiment)", None, 0.0, 0.0) for exp in sorted(set(metrics) - listed)]
    print(format_table(rows))
    failed = [r for r in rows if not r.ok and r.verdict != "UNEXPECTED"]
    print(f"\n{len(rows) - len(failed)} metrics within tolerance, {len(failed)} outside or missing")
    return 1 if failed else 0

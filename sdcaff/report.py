"""Stage report: every metrics file -> tables (md/csv/tex), figures (PNG) and results/REPORT.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Mapping

from sdcaff import env, params, plots, tables
from sdcaff.errors import SdcaffError
from sdcaff.files import atomic_path
from sdcaff.plots import PlotsParams

log = logging.getLogger(__name__)

# What the tables read from every record; a file without them is refused, naming the file and the key.
REQUIRED = ("experiment", "model", "protocol", "train_corpus", "test_corpus", "labels", "seeds", "wa", "ua",
            "per_fold")
REQUIRED_AGGREGATES = ("pooled", "fold_mean", "fold_std")
REQUIRED_UNIT = ("seed", "fold", "wa", "ua", "n")

TITLES = {
    "paper": "The paper's numbers, reproduced the same way",
    "variants": "Variants, baselines and ablations against SD-CAFF",
    "protocol_gap": "Authors' protocol vs speaker-independent (LOSO)",
    "cross_corpus": "Cross-corpus",
}


@dataclasses.dataclass(frozen=True)
class ReportParams:
    metrics_dir: str = "results/metrics"  # written by `sdcaff evaluate`, one <experiment>.json each
    tables_dir: str = "results/tables"  # <table>.md/.csv/.tex; bench.* there belong to the bench stage
    plots_dir: str = "results/plots"  # PNGs drawn by sdcaff.plots
    report: str = "results/REPORT.md"
    corpora_dir: str = "results/corpora"  # fingerprint JSONs: say whether each corpus was synthetic
    bench_table: str = "results/tables/bench.md"  # embedded when present
    variants: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> display name, in row order
    plots: PlotsParams = dataclasses.field(default_factory=PlotsParams)


class ReportInputError(SdcaffError):
    """A metrics or fingerprint file is missing, not JSON, or lacks a key; the message names the file."""


def load_records(metrics_dir: Path) -> dict[str, dict]:
    """Returns {experiment: record} from every <metrics_dir>/*.json, each checked for the keys the report reads."""
    paths = sorted(metrics_dir.glob("*.json"))
    if not paths:
        raise ReportInputError(f"{metrics_dir}: no metrics files (*.json); run `sdcaff evaluate` first")
    records: dict[str, dict] = {}
    sources: dict[str, Path] = {}
    for path in paths:
        record = read_json(path)
        check_record(record, path)
        name = record["experiment"]
        if name in records:
            raise ReportInputError(f"{path}: experiment '{name}' is also in {sources[name]}")
        records[name], sources[name] = record, path
    return records


def read_json(path: Path) -> dict:
    """Returns the JSON object in `path`; unreadable, invalid or non-object content names the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportInputError(f"{path}: cannot read: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"{path}:{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(path)
        raise ReportInputError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_record(record: dict, path: Path) -> None:
    """Raises ReportInputError naming `path` and the key when the record lacks what the tables read."""
    for key in REQUIRED:
        if key not in record:
            raise ReportInputError(f"{path}: missing key '{key}'")
    for metric in ("wa", "ua"):
        for key in REQUIRED_AGGREGATES:
            if not isinstance(record[metric], dict) or key not in record[metric]:
                raise ReportInputError(f"{path}: missing key '{metric}.{key}'")
    if not isinstance(record["per_fold"], list) or not record["per_fold"]:
        raise ReportInputError(f"{path}: 'per_fold' must be a non-empty list of units")
    for i, unit in enumerate(record["per_fold"]):
        for key in REQUIRED_UNIT:
            if not isinstance(unit, dict) or key not in unit:
                raise ReportInputError(f"{path}: missing key 'per_fold[{i}].{key}'")


def load_corpora(corpora_dir: Path) -> dict[str, dict]:
    """Returns {corpus: fingerprint} from <corpora_dir>/*.json (empty when the directory is absent)."""
    found = {}
    for path in sorted(corpora_dir.glob("*.json")):
        data = read_json(path)
        if "synthetic" not in data:
            raise ReportInputError(f"{path}: missing key 'synthetic'")
        found[str(data.get("corpus", path.stem))] = data
    return found


def provenance(records: Mapping[str, dict], corpora: Mapping[str, dict]) -> str:
    """Returns the provenance section: commit, profiles, seeds, metric commits and the corpora used."""
    profiles = sorted({str(r.get("profile")) for r in records.values()})
    seeds = sorted({tuple(r["seeds"]) for r in records.values()})
    commits = sorted({str(r.get("env", {}).get("commit")) for r in records.values()})
    lines = [
        "## Provenance",
        "",
        f"- report written at commit `{env.git_commit()}` from {len(records)} metrics files",
        f"- metrics produced at commit(s): {', '.join(f'`{c}`' for c in commits)}",
        f"- profile(s): {', '.join(profiles)}",
        f"- seeds: {'; '.join(', '.join(str(s) for s in group) for group in seeds)}",
    ]
    if not corpora:
        lines.append("- corpora: no fingerprint files found, so whether the corpora were real is unknown")
    for name, fp in sorted(corpora.items()):
        kind = "SYNTHETIC (generated by `sdcaff synth`)" if fp["synthetic"] else "licensed release"
        lines.append(f"- corpus `{name}`: {kind}, {fp.get('files', '?')} files, "
                     f"sha256 `{str(fp.get('sha256', '?'))[:12]}`")
    lines.append("")
    if any(fp["synthetic"] for fp in corpora.values()):
        lines += ["**The corpora are synthetic.** These numbers test that the pipeline runs end to end; they "
                  "are NOT comparable with the paper's and say nothing about SD-CAFF on real speech.", ""]
    return "\n".join(lines)


READING_GUIDE = """## How to read these numbers

- **WA** (weighted accuracy) is plain accuracy; **UA** (unweighted accuracy) is the mean of per-class recalls,
  so a majority class cannot carry it. All numbers are percent.
- **Pooled** counts every test prediction of every unit once; **fold mean** averages the per-unit scores.
  The paper most likely reports WA pooled and UA as a fold mean; every table says which it shows.
- A **unit** is one trained model (seed) scored on one test fold; spreads and intervals are over units.
- **Authors' protocol** (`*-authors`): random utterance folds (speakers shared between train and test), the
  test fold used to pick the epoch, WA and UA maxima taken separately. **LOSO** (`*-loso`): speaker-independent
  folds, the epoch picked on a validation split that never touches the test speakers: the honest number.
- **Paired tests** compare a variant with SD-CAFF on the units both ran. Folds of one seed share most of their
  training data, so the units are not independent and a plain paired t-test is too liberal; the corrected
  resampled t-test of Nadeau & Bengio (2003) widens the variance by n_test/n_train. The exact Wilcoxon
  signed-rank p beside it needs no normality. With few units neither test has much power: a large p means
  "not shown", not "equal".
"""


def caption(path: Path) -> str:
    """Returns the one-line caption of a figure written by sdcaff.plots, from its file name."""
    stem = path.stem
    if stem.startswith("confusion_"):
        return f"Confusion matrix of `{stem[len('confusion_'):]}`, pooled over units (colour = recall per true class)."
    if stem.startswith("curves_"):
        return f"Training curves of `{stem[len('curves_'):]}`: mean loss and UA per epoch over units (band = min-max)."
    if stem == "per_fold":
        return "Per-unit WA and UA of the headline and cross-corpus experiments, with their fold means."
    if stem == "tsne":
        return "t-SNE of one unit's fused test vectors (192-d in the paper profile; the figure title gives the width), coloured by emotion and by speaker."
    return stem.replace("_", " ")


def document(records: Mapping[str, dict], corpora: Mapping[str, dict], frames: Mapping, figures: list[Path],
             p: ReportParams) -> str:
    """Returns REPORT.md: title, provenance, reading guide, tables, figures and the bench table."""
    report_dir = Path(p.report).parent
    parts = ["# SD-CAFF reproduction report", "",
             "Written by `sdcaff report` (stage `report`) from the metrics files under "
             f"`{p.metrics_dir}`; do not edit by hand.", "",
             provenance(records, corpora), READING_GUIDE, "## Tables", ""]
    for name, frame in frames.items():
        files = ", ".join(f"[{s}]({rel(Path(p.tables_dir) / f'{name}.{s}', report_dir)})" for s in ("csv", "tex"))
        parts += [f"### {TITLES[name]}", "", tables.markdown(name, frame), f"Also as {files}.", ""]
    parts += ["## Figures", ""]
    if not figures:
        parts += ["(no figures were drawn)", ""]
    for fig in figures:
        parts += [f"![{fig.stem}]({rel(fig, report_dir)})", "", caption(fig), ""]
    parts += ["## Benchmarks", ""]
    bench = Path(p.bench_table)
    if bench.is_file():
        # Demoted one level so the bench table's own headings sit under this section.
        text = bench.read_text(encoding="utf-8").rstrip("\n")
        parts += ["#" + line if line.startswith("#") else line for line in text.splitlines()]
    else:
        parts.append(f"No benchmark table at `{bench}`; run `sdcaff bench`.")
    return "\n".join(parts).rstrip("\n") + "\n"


def rel(path: Path, start: Path) -> str:
    """Returns `path` relative to `start` with forward slashes, as a Markdown link wants."""
    return Path(os.path.relpath(path, start)).as_posix()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Returns None: the verb takes no options, every setting lives in params.yaml `report`."""


def run(args: argparse.Namespace) -> int:
    """Returns 0 after writing the tables, the figures and REPORT.md."""
    p = params.load("report", ReportParams)
    records = load_records(Path(p.metrics_dir))
    corpora = load_corpora(Path(p.corpora_dir))
    units = sum(len(r["per_fold"]) for r in records.values())
    log.info("read %d metrics files (%d seed x fold units) from %s and %d corpus fingerprints from %s",
             len(records), units, p.metrics_dir, len(corpora), p.corpora_dir)
    frames = tables.build(records, p.variants)
    table_files = tables.write(frames, Path(p.tables_dir))
    figures = plots.draw(records, Path(p.plots_dir), p.plots)
    with atomic_path(p.report) as tmp:
        tmp.write_text(document(records, corpora, frames, figures, p), encoding="utf-8")
    log.info("wrote %d table files (%d tables) under %s, %d figures under %s and %s", len(table_files),
             len(frames), p.tables_dir, len(figures), p.plots_dir, p.report)
    return 0

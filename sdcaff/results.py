"""The one reader of results/: metrics files (<experiment>.json each) and corpus fingerprints, for check and report."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sdcaff.errors import SdcaffError


NOT_RUN = "not_run"  # a metrics record with this key names an experiment that could not run, and why


class ResultsFileError(SdcaffError):
    """A results file is unreadable, not a JSON object, misnamed, duplicated or lacks a key; the message names it."""


def read_json(path: Path) -> dict:
    """Returns the JSON object in `path`; unreadable, invalid, non-UTF-8 or non-object content names the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsFileError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ResultsFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFileError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise ResultsFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def lookup(record: Mapping, key: str) -> float | None:
    """Returns record[a][b] for key 'a.b' as a float, or None when absent or not a number."""
    node: Any = record
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def require(record: Mapping, path: Path, keys: Iterable[str]) -> None:
    """Raises ResultsFileError naming `path` and the first dotted key ('wa.pooled') the record lacks."""
    for key in keys:
        node: Any = record
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ResultsFileError(f"{path}: missing key '{key}'")
            node = node[part]


def load_metrics(metrics_dir: Path, check: Callable[[dict, Path], None] | None = None) -> dict[str, dict]:
    """Returns {experiment: record} from <metrics_dir>/<experiment>.json; any other *.json there is an error.

    `check(record, path)` adds the caller's own key checks; this reader needs only `experiment`.
    """
    records: dict[str, dict] = {}
    holders: dict[str, list[Path]] = collections.defaultdict(list)
    for path in sorted(metrics_dir.glob("*.json")):
        record = read_json(path)
        require(record, path, ["experiment"])
        if not isinstance(record["experiment"], str):
            raise ResultsFileError(f"{path}: 'experiment' must be a string, got {record['experiment']!r}")
        if check is not None and NOT_RUN not in record:  # a not-run record holds no numbers to check
            check(record, path)
        holders[record["experiment"]].append(path)
        records[path.stem] = record
    # Duplicates first: a saved copy (x.prev.json) beside x.json must name both, not just the copy.
    for name, paths in sorted(holders.items()):
        if len(paths) > 1:
            raise ResultsFileError(
                f"{', '.join(str(p) for p in paths)}: experiment '{name}' is in {len(paths)} files; keep one, "
                f"named {name}.json, and move the others out of {metrics_dir}")
    for stem, record in records.items():
        if record["experiment"] != stem:
            raise ResultsFileError(
                f"{metrics_dir / (stem + '.json')}: holds experiment '{record['experiment']}', but a metrics "
                f"file must be named <experiment>.json ({record['experiment']}.json); rename it or move it out")
    return records


def split_not_run(records: Mapping[str, dict]) -> tuple[dict[str, dict], dict[str, str]]:
    """Returns the records that hold numbers, and {experiment: reason} for those that could not run."""
    ran = {name: record for name, record in records.items() if NOT_RUN not in record}
    skipped = {name: str(record[NOT_RUN]) for name, record in records.items() if NOT_RUN in record}
    return ran, skipped


def load_corpora(corpora_dir: Path) -> dict[str, dict]:
    """Returns {corpus: fingerprint} from <corpora_dir>/*.json (empty when the directory is absent)."""
    found = {}
    for path in sorted(corpora_dir.glob("*.json")):
        data = read_json(path)
        require(data, path, ["synthetic"])
        found[str(data.get("corpus", path.stem))] = data
    return found


def synthetic_corpora(corpora: Mapping[str, Mapping]) -> list[str]:
    """Returns the names of the fingerprinted corpora that were the synthetic default, sorted."""
    return sorted(name for name, fp in corpora.items() if fp["synthetic"])


def check_comparable(records: Mapping[str, Mapping], metrics_dir: Path) -> None:
    """Raises ResultsFileError, naming the files, when the records cannot stand side by side: more than one
    profile, or one corpus read as two different copies (its manifest md5 differs between records, e.g. a
    partial repro on a new copy beside older metrics). Records written before corpora were recorded pass."""
    profiles: dict[str, list[str]] = collections.defaultdict(list)
    for name, record in sorted(records.items()):
        profiles[str(record.get("profile"))].append(name)
    if len(profiles) > 1:
        groups = "; ".join(f"profile {p}: {_files(metrics_dir, names)}" for p, names in sorted(profiles.items()))
        raise ResultsFileError(f"{metrics_dir}: metrics from different profiles cannot share a report: {groups}. "
                               "Rerun the stale experiments (dvc repro) or move their files out")
    copies: dict[str, dict[str, list[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for name, record in sorted(records.items()):
        for corpus, described in (record.get("corpora") or {}).items():
            if isinstance(described, Mapping) and described.get("manifest_md5"):
                label = f"{described['manifest_md5'][:12]} ({described.get('status', '?')})"
                copies[corpus][label].append(name)
    for corpus, found in sorted(copies.items()):
        if len(found) > 1:
            groups = "; ".join(f"manifest {label}: {_files(metrics_dir, names)}" for label, names in sorted(found.items()))
            raise ResultsFileError(f"{metrics_dir}: corpus '{corpus}' differs between metrics files, so their numbers "
                                   f"are not comparable: {groups}. Rerun the stale experiments (dvc repro) or move "
                                   "their files out")


def corpus_status(records: Mapping[str, Mapping]) -> dict[str, str]:
    """Returns {corpus: status in words} from the records that describe their corpora (check_comparable first)."""
    found: dict[str, str] = {}
    for record in records.values():
        for corpus, described in (record.get("corpora") or {}).items():
            if isinstance(described, Mapping) and described.get("status"):
                found.setdefault(corpus, str(described["status"]))
    return dict(sorted(found.items()))


def _files(metrics_dir: Path, names: list[str]) -> str:
    shown = ", ".join(str(metrics_dir / f"{n}.json") for n in names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")

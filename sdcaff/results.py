"""The one reader of results/: metrics files (<experiment>.json each) and corpus fingerprints, for check and report."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from sdcaff.errors import SdcaffError


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
        if check is not None:
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

"""The report's figures: confusion matrices, t-SNE of the fused vectors, per-unit scores, training curves (PNG).

Files only, never a model: the metrics records, each unit's log.csv and fused.npy (written by the unit that
had the model), and the pooled predictions with their speakers (written by evaluate). A unit's files are
used only when its `done` hash is the one its experiment's metrics record, so no figure mixes runs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, and the same renderer everywhere

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sdcaff.errors import SdcaffError  # noqa: E402
from sdcaff.files import atomic_path  # noqa: E402
from sdcaff.units import PRIMARY_GROUPS  # noqa: E402 (the experiments named after their protocol)

log = logging.getLogger(__name__)

COMPARISON_CONFUSIONS = ("cnn", "crnn", "lstm")  # the variants whose confusion matrices the authors published
# Fixed look, set per figure rather than globally, so another module's rcParams never change our bytes.
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.9),
         "font.family": "DejaVu Sans"}  # matplotlib's bundled font: the same glyphs on every machine
PNG_METADATA = {"Software": None}  # no matplotlib version in the file: the same figure, the same bytes
MIN_TSNE_POINTS = 5  # below this a 2-d map shows nothing, and t-SNE's perplexity (< n) has no room


@dataclasses.dataclass(frozen=True)
class PlotsParams:
    # () = every headline and cross-corpus experiment + the comparison variants the authors published
    confusion: tuple[str, ...] = ()
    tsne_experiment: str = "iemocap-loso"  # speaker-independent: its test speakers were never trained on
    tsne_seed: int | None = None  # None = the experiment's first seed
    tsne_fold: int = 0  # the first fold, present under every protocol
    tsne_perplexity: float = 30.0  # scikit-learn's default; lowered for tiny test sets (see _tsne_perplexity)
    tsne_seed_value: int = 0  # sklearn TSNE random_state: a fixed layout, byte-identical figures
    curves: tuple[str, ...] = ()  # () = every headline and cross-corpus experiment
    dpi: int = 110  # readable in REPORT.md at page width, a few hundred kB per figure


class PlotsError(SdcaffError):
    """A metrics record lacks what a figure needs; the message names the experiment's metrics file."""


def draw(records: dict[str, dict], out_dir: Path, p: PlotsParams, runs_dir: Path = Path("artifacts/runs"),
         predictions_dir: Path = Path("results/predictions")) -> list[Path]:
    """Writes every figure (PNG) under out_dir and returns the paths written, sorted."""
    out_dir = Path(out_dir)
    log.info("drawing figures from %d metrics records (%s), runs under %s", len(records),
             ", ".join(sorted(records)), runs_dir)
    written = []
    for experiment in confusion_experiments(records, p):
        written.append(draw_confusion(experiment, records[experiment], out_dir / f"confusion_{experiment}.png",
                                      p.dpi))
    path = draw_per_fold(records, out_dir / "per_fold.png", p.dpi)
    if path is not None:
        written.append(path)
    path = draw_per_speaker(records, out_dir / "per_speaker.png", p.dpi)
    if path is not None:
        written.append(path)
    for experiment in p.curves or primary(records):
        path = draw_curves(experiment, records.get(experiment), Path(runs_dir),
                           out_dir / f"curves_{experiment}.png", p.dpi)
        if path is not None:
            written.append(path)
    path = draw_tsne(records, p, Path(runs_dir), Path(predictions_dir), out_dir / "tsne.png")
    if path is not None:
        written.append(path)
    written = sorted(written)
    log.info("wrote %d figures under %s: %s", len(written), out_dir, ", ".join(w.name for w in written))
    return written


def group_of(experiment: str, record: dict) -> str:
    """Returns the record's group; older records without one are primary when named after their protocol."""
    if "group" in record:
        return record["group"]
    if experiment == record.get("protocol"):
        return "cross-corpus" if "-to-" in experiment else "headline"
    return "comparison"


def primary(records: dict[str, dict]) -> list[str]:
    """Returns the headline experiments, then the cross-corpus ones, each sorted by name."""
    groups = {e: group_of(e, r) for e, r in records.items()}
    chosen = [e for e, g in groups.items() if g in PRIMARY_GROUPS]
    return sorted(chosen, key=lambda e: (PRIMARY_GROUPS.index(groups[e]), e))


def confusion_experiments(records: dict[str, dict], p: PlotsParams) -> list[str]:
    """Returns the experiments whose confusion matrix is drawn (those with a record), sorted."""
    if not p.confusion:
        return sorted(set(primary(records)) | {e for e, r in records.items()
                                                if group_of(e, r) == "comparison"
                                                and r.get("variant") in COMPARISON_CONFUSIONS})
    missing = sorted(set(p.confusion) - set(records))
    if missing:
        log.warning("no metrics for %s: their confusion matrices are left out", ", ".join(missing))
    return sorted(set(p.confusion) & set(records))


def field(record: dict, experiment: str, *keys: str):
    """Returns record[keys[0]][keys[1]]...; a missing key raises PlotsError naming the metrics file."""
    value = record
    for i, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise PlotsError(f"results/metrics/{experiment}.json: missing key '{'.'.join(keys[: i + 1])}' "
                             f"(rerun `sdcaff evaluate --experiment {experiment}`)")
        value = value[key]
    return value


def title_of(experiment: str, record: dict) -> str:
    """Returns the experiment's name, with its protocol in brackets only when the name does not already say it."""
    protocol = record.get("protocol")
    return experiment if not protocol or protocol == experiment else f"{experiment} ({protocol})"


def unit_directories(experiment: str, record: dict, runs_dir: Path) -> tuple[dict[tuple[int, int], Path], list[str]]:
    """Returns {(seed, fold): unit directory} for the record's units whose files are the ones it was computed
    from (their `done` hash is the record's), and one line per unit left out, saying why."""
    found, left_out = {}, []
    for unit in field(record, experiment, "per_fold"):
        directory = runs_dir / experiment / f"seed_{unit['seed']}" / f"fold_{unit['fold']}"
        done = directory / "done"
        expected = unit.get("unit_hash")
        if not done.is_file():
            left_out.append(f"{directory}: not trained")
        elif expected is None:
            left_out.append(f"{directory}: results/metrics/{experiment}.json records no unit_hash "
                            f"(written by an older sdcaff; rerun `sdcaff evaluate --experiment {experiment}`)")
        elif done.read_text(encoding="utf-8").strip() != expected:
            left_out.append(f"{directory}: trained on other inputs, settings or code than "
                            f"results/metrics/{experiment}.json reports")
        else:
            found[(unit["seed"], unit["fold"])] = directory
    return found, left_out


def save(fig: Figure, path: Path, dpi: int) -> Path:
    """Returns `path` after writing `fig` to it as a PNG, atomically and without a version stamp."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata=PNG_METADATA)
    return path


def draw_confusion(experiment: str, record: dict, path: Path, dpi: int) -> Path:
    """Returns `path` after drawing the pooled confusion matrix: colour = recall per true class, text = % and count."""
    counts = np.asarray(field(record, experiment, "confusion"), dtype=np.int64)
    labels = list(field(record, experiment, "labels"))
    if counts.shape != (len(labels), len(labels)):
        raise PlotsError(f"results/metrics/{experiment}.json: confusion is {counts.shape}, "
                         f"expected {len(labels)} x {len(labels)} for labels {labels}")
    recall = recall_percent(counts)
    text = np.array([[f"{recall[i, j]:.1f} %\n({counts[i, j]})" for j in range(len(labels))]
                     for i in range(len(labels))])
    wa = field(record, experiment, "wa", "pooled")
    ua = field(record, experiment, "ua", "fold_mean")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.2, 4.6), layout="constrained")
        ax = fig.add_subplot()
        sns.heatmap(recall, annot=text, fmt="", cmap="Blues", vmin=0, vmax=100, square=True, ax=ax,
                    xticklabels=labels, yticklabels=labels, cbar_kws={"label": "recall per true class (%)"})
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        # The tables lead with WA pooled and UA fold mean: the title gives those two, with the units behind them.
        ax.set_title(f"{title_of(experiment, record)}, pooled over {len(record.get('per_fold', []))} units\n"
                     f"WA pooled {wa:.2f} %, UA fold mean {ua:.2f} %, n = {int(counts.sum())}", fontsize=10)
        return save(fig, path, dpi)


def recall_percent(counts: np.ndarray) -> np.ndarray:
    """Returns the confusion counts (k, k) as percent of each true class (row); an empty row stays 0."""
    totals = counts.sum(axis=1, keepdims=True)
    # A class absent from the test rows has an empty row: show 0 %, not a NaN hole.
    return np.divide(100.0 * counts, totals, out=np.zeros(counts.shape), where=totals > 0)


def draw_per_speaker(records: dict[str, dict], path: Path, dpi: int) -> Path | None:
    """Returns `path` after drawing UA per test speaker of the within-corpus primary experiments; None if none."""
    rows = []
    for experiment in primary(records):
        record = records[experiment]
        if record.get("train_corpus") != record.get("test_corpus"):
            continue
        for speaker, cell in (record.get("per_speaker") or {}).items():
            rows.append({"experiment": experiment, "speaker": speaker, "UA": cell["ua"]})
    if not rows:
        log.info("no per-speaker scores in the metrics: per_speaker.png left out")
        return None
    frame = pd.DataFrame(rows)
    experiments = list(dict.fromkeys(frame["experiment"]))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(0.5 * frame["speaker"].nunique() + 3.5, 4.4), layout="constrained")
        ax = fig.add_subplot()
        sns.barplot(frame, x="speaker", y="UA", hue="experiment", hue_order=experiments,
                    order=sorted(frame["speaker"].unique()), errorbar=None, ax=ax)
        ax.set_xlabel("test speaker")
        ax.set_ylabel("UA, percent (pooled over units)")
        ax.tick_params(axis="x", labelrotation=45)
        ax.legend(title=None, fontsize=7, loc="best")
        ax.set_title("UA per test speaker", fontsize=10)
        return save(fig, path, dpi)


def draw_per_fold(records: dict[str, dict], path: Path, dpi: int) -> Path | None:
    """Returns `path` after drawing every primary experiment's per-unit WA and UA with the fold means; None if none."""
    experiments = primary(records)
    if not experiments:
        log.warning("no headline or cross-corpus metrics: per_fold.png left out")
        return None
    rows, means = [], []
    for experiment in experiments:
        record = records[experiment]
        for unit in field(record, experiment, "per_fold"):
            for metric in ("wa", "ua"):
                rows.append({"experiment": experiment, "metric": metric.upper(), "percent": unit[metric]})
        means.append((field(record, experiment, "wa", "fold_mean"), field(record, experiment, "ua", "fold_mean")))
    frame = pd.DataFrame(rows)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(1.3 * len(experiments) + 2.5, 4.4), layout="constrained")
        ax = fig.add_subplot()
        # A swarm places points without random jitter, so the figure repeats; dodge puts WA left, UA right.
        sns.swarmplot(frame, x="experiment", y="percent", hue="metric", order=experiments, hue_order=["WA", "UA"],
                      dodge=True, size=4, ax=ax)
        colours = sns.color_palette(n_colors=2)
        for i, (wa, ua) in enumerate(means):
            # seaborn's dodge with two hue levels centres them 0.2 either side of the category.
            for offset, mean, colour in ((-0.2, wa, colours[0]), (0.2, ua, colours[1])):
                ax.hlines(mean, i + offset - 0.15, i + offset + 0.15, colors=colour, linewidth=2)
        ax.plot([], [], color="grey", linewidth=2, label="fold mean")
        ax.legend(title=None, loc="best", fontsize=8)
        ax.set_xlabel("")
        ax.set_ylabel("percent (one point per seed x fold)")
        ax.tick_params(axis="x", labelrotation=20)
        ax.set_title("WA and UA per unit, headline and cross-corpus experiments", fontsize=10)
        return save(fig, path, dpi)


def read_logs(experiment: str, record: dict, runs_dir: Path) -> pd.DataFrame:
    """Returns the log.csv rows of the record's own units, with seed and fold columns; warns on the units left out."""
    directories, left_out = unit_directories(experiment, record, runs_dir)
    if left_out:
        log.warning("%s: %d of %d units' training logs left out (first: %s)", experiment, len(left_out),
                    len(left_out) + len(directories), left_out[0])
    frames = [pd.read_csv(directory / "log.csv").assign(seed=seed, fold=fold)
              for (seed, fold), directory in directories.items()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def draw_curves(experiment: str, record: dict | None, runs_dir: Path, path: Path, dpi: int) -> Path | None:
    """Returns `path` after drawing mean loss and UA per epoch over the units (min-max band); None if no logs."""
    if record is None:
        log.warning("no metrics for %s: curves_%s.png left out", experiment, experiment)
        return None
    logs = read_logs(experiment, record, runs_dir)
    if logs.empty:
        log.warning("%s: no training logs of its units under %s: %s left out", experiment, runs_dir / experiment,
                    path.name)
        return None
    units = logs[["seed", "fold"]].drop_duplicates().shape[0]
    selected = sorted({u["selected_epoch"] for u in record["per_fold"] if u.get("selected_epoch") is not None})
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 4), layout="constrained")
        loss_ax, ua_ax = fig.subplots(1, 2)
        colours = sns.color_palette(n_colors=4)
        band(loss_ax, logs, "loss", "loss", colours[0])
        # test_ua is empty under validation selection: the test rows are scored once, never per epoch.
        for column, colour in (("train_ua", colours[1]), ("valid_ua", colours[2]), ("test_ua", colours[3])):
            if column in logs and logs[column].notna().any():
                band(ua_ax, logs, column, column.replace("_ua", ""), colour)
        for ax in (loss_ax, ua_ax):
            for i, epoch in enumerate(selected):
                ax.axvline(epoch, color="grey", linestyle=":", linewidth=1,
                           label="selected epoch" if i == 0 and ax is ua_ax else None)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        loss_ax.set_ylabel("training loss (multi-task)")
        ua_ax.set_ylabel("UA (%)")
        ua_ax.legend(fontsize=8, loc="best")
        fig.suptitle(f"{title_of(experiment, record)}: mean over {units} units, band = min-max",
                     fontsize=10)
        return save(fig, path, dpi)


def band(ax, logs: pd.DataFrame, column: str, label: str, colour) -> None:
    """Draws the per-epoch mean of `column` over units as a line with a min-max band."""
    stats = logs.groupby("epoch")[column].agg(["mean", "min", "max"]).dropna()
    ax.plot(stats.index, stats["mean"], color=colour, label=label, marker="o", markersize=3)
    ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.2, linewidth=0)


def draw_tsne(records: dict[str, dict], p: PlotsParams, runs_dir: Path, predictions_dir: Path,
              path: Path) -> Path | None:
    """Returns `path` after drawing a t-SNE of one unit's fused test vectors, by emotion and by speaker; or None."""
    experiment = p.tsne_experiment
    record = records.get(experiment)
    if record is None:
        log.warning("no metrics for %s: %s left out", experiment, path.name)
        return None
    seed = p.tsne_seed if p.tsne_seed is not None else field(record, experiment, "seeds")[0]
    directories, left_out = unit_directories(experiment, record, runs_dir)
    directory = directories.get((seed, p.tsne_fold))
    if directory is None:
        wanted = runs_dir / experiment / f"seed_{seed}" / f"fold_{p.tsne_fold}"
        why = next((line for line in left_out if line.startswith(f"{wanted}:")),
                   f"{wanted}: not a unit of results/metrics/{experiment}.json")
        log.warning("%s: %s left out", why, path.name)
        return None
    points = fused_vectors(experiment, record, directory, seed, p.tsne_fold, predictions_dir)
    if points is None:
        return None
    vectors, frame = points
    if len(frame) < MIN_TSNE_POINTS:
        log.warning("%s: only %d test utterances: %s left out", directory, len(frame), path.name)
        return None
    from sklearn.manifold import TSNE

    perplexity = tsne_perplexity(p.tsne_perplexity, len(frame))
    embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=p.tsne_seed_value).fit_transform(vectors.astype(np.float64))
    frame = frame.assign(x=embedded[:, 0], y=embedded[:, 1])
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(11, 5), layout="constrained")
        for ax, hue in zip(fig.subplots(1, 2), ("emotion", "speaker")):
            order = list(frame[hue].cat.categories)
            # tab10's colours are the most distinct; tab20 (pairs of shades) only past 10 speakers (MSP-IMPROV).
            palette = "tab10" if len(order) <= 10 else "tab20"
            sns.scatterplot(frame, x="x", y="y", hue=hue, hue_order=order, palette=palette, s=14, linewidth=0,
                            ax=ax)
            ax.set_title(f"by {hue}", fontsize=10)
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.legend(fontsize=7, loc="best", ncol=2 if len(order) > 8 else 1)
        fig.suptitle(f"t-SNE of the fused vectors (D = {vectors.shape[1]}) of n = {len(frame)} test utterances, "
                     f"{experiment} seed {seed} fold {p.tsne_fold} (perplexity {perplexity:.1f})", fontsize=10)
        return save(fig, path, p.dpi)


def tsne_perplexity(wanted: float, n: int) -> float:
    """Returns `wanted`, lowered to (n - 1) / 3 when the set is too small for it (t-SNE needs perplexity < n)."""
    return float(min(wanted, max(1.0, (n - 1) / 3)))


def fused_vectors(experiment: str, record: dict, directory: Path, seed: int, fold: int,
                  predictions_dir: Path) -> tuple[np.ndarray, pd.DataFrame] | None:
    """Returns the unit's fused test vectors (n, D), one per utterance, and their emotion and speaker; or None.

    The vectors are the unit's fused.npy (rows = its predictions.csv); the speakers come from the pooled
    predictions evaluate wrote, whose rows of this (seed, fold) must be the unit's, in the same order.
    """
    vectors_path, pooled_path = directory / "fused.npy", predictions_dir / f"{experiment}.csv"
    if not vectors_path.is_file():
        log.warning("%s: no fused vectors (trained by an older sdcaff): t-SNE left out", vectors_path)
        return None
    if not pooled_path.is_file():
        log.warning("%s: no predictions to name the speakers: t-SNE left out", pooled_path)
        return None
    vectors = np.load(vectors_path, allow_pickle=False)
    ids = pd.read_csv(directory / "predictions.csv", usecols=["utt_id"], dtype=str)["utt_id"]
    pooled = pd.read_csv(pooled_path, dtype={"utt_id": str, "speaker": str, "true": str}, keep_default_na=False)
    if "speaker" not in pooled:
        log.warning("%s: no speaker column (evaluated without a manifest): t-SNE left out", pooled_path)
        return None
    rows = pooled[(pooled["seed"] == seed) & (pooled["fold"] == fold)]
    if vectors.ndim != 2 or len(vectors) != len(ids) or rows["utt_id"].tolist() != ids.tolist():
        raise PlotsError(f"{vectors_path}: {vectors.shape} vectors, {directory / 'predictions.csv'} {len(ids)} rows, "
                         f"{pooled_path} {len(rows)} rows of seed {seed} fold {fold}: not the same test rows "
                         f"(rerun `sdcaff evaluate --experiment {experiment}`)")
    # The authors' duplicated angry rows would be the same point twice.
    keep = ~ids.duplicated().to_numpy()
    rows = rows[keep]
    frame = pd.DataFrame({
        # Categories fix the legend order: emotions in class-index order, speakers sorted.
        "emotion": pd.Categorical(rows["true"].to_numpy(), categories=list(field(record, experiment, "labels"))),
        "speaker": pd.Categorical(rows["speaker"].to_numpy()),
    })
    log.info("read %d fused vectors (D = %d) of %s seed %d fold %d from %s", len(frame), vectors.shape[1],
             experiment, seed, fold, vectors_path)
    return vectors[keep], frame

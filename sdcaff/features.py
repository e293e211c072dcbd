"""Stage features: manifest wavs -> resample, silence removal, pad/cut to 6 s, MFCC + deltas (or Fbank, or a frozen
upstream's pooled hidden states) -> one tensor file."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import time
import typing
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
import torch
import torchaudio
from speechbrain.lobes.features import Fbank
from tqdm import tqdm

from sdcaff import env
from sdcaff import params as params_module
from sdcaff.data import audio
from sdcaff.data.manifest import read as read_manifest_csv
from sdcaff.errors import ManifestError, ParamsError
from sdcaff.files import atomic_paths, remove_stale_temporaries
from sdcaff.mfcc import (
    DELTA_AXIS, DELTA_WIDTH, F_MAX, F_MIN, HOP_LENGTH, N_FFT, N_MELS, N_MFCC, PAD_MODE, SAMPLE_RATE, TOP_DB,
    WIN_LENGTH, delta, extract, mfcc,
)
from sdcaff.silence import TRIM_TOP_DB, remove_silence

if typing.TYPE_CHECKING:
    from sdcaff.upstream import Upstream

__all__ = ["FeaturesParams", "FeatureSet", "delta", "extract", "fix_length", "mfcc", "remove_silence", "run"]

log = logging.getLogger(__name__)

# The manifest columns this stage reads (docs/architecture.md); others may follow and are ignored.
MANIFEST_COLUMNS = ("utt_id", "corpus", "path", "label", "sample_rate", "num_samples")
# Keys of the DSP itself: what extract() takes. The rest of FeaturesParams is I/O and batching.
MFCC_KEYS = ("sample_rate", "n_mfcc", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max", "pad_mode",
             "top_db")
# Keys of kind ssl only: left out of the other kinds' saved settings, so their files keep their bytes (and md5s).
SSL_KEYS = ("upstream", "upstream_revision", "ssl_input", "ssl_max_batch_seconds", "amp", "ssl_cache", "ssl_layers",
            "ssl_frames_max_gb")
# Keys a feature set may give per profile, {profile: value}: the quick profile a Base model, the paper profile
# the Large ones the literature reports (docs/ssl.md). The chosen value is what the set's file records.
PER_PROFILE_KEYS = ("upstream", "upstream_revision")


@dataclasses.dataclass(frozen=True)
class FeaturesParams:
    manifest_dir: str = "artifacts/manifest"  # reads <manifest_dir>/<corpus>.csv
    out_dir: str = "artifacts/features"  # writes <out_dir>/<set>.pt
    results_dir: str = "results/features"  # writes <results_dir>/<set>.json
    kind: Literal["mfcc", "fbank", "ssl"] = "mfcc"  # fbank = SpeechBrain Fbank (ECAPA-TDNN's input); ssl: docs/ssl.md
    fbank_n_mels: int = 80  # kind fbank: SpeechBrain IEMOCAP recipe, 80 log-mel filterbanks (25 ms / 10 ms)
    silence: Literal["authors", "trim", "none"] = "authors"  # authors' detector (sdcaff/silence.py)
    trim_top_db: float = TRIM_TOP_DB  # silence `trim` only
    clip_seconds: float = 6.0  # authors' code: fixed_t=6, pad or cut to int(6 * sr) samples
    batch_size: int = 64  # utterances per batch on CUDA, and the upstream's (kind ssl); results do not depend on it
    # MFCC / Fbank utterances per batch on the CPU: small batches stay in cache, large ones are slower per
    # utterance (bench scaling-features: 4,231x realtime at 1, 3,674x at 8, 1,827x at 64 on 2 cores).
    cpu_batch_size: int = 1

    def transform_batch(self, device: torch.device) -> int:
        """Returns the MFCC / Fbank batch for `device`: cpu_batch_size on the CPU, batch_size elsewhere."""
        return self.cpu_batch_size if device.type == "cpu" else self.batch_size
    # Kind ssl: a frozen self-supervised upstream's hidden states (sdcaff/upstream.py, docs/ssl.md).
    upstream: str | None = None  # local checkpoint folder or hub id; null = not configured, the set is not run
    upstream_revision: str | None = None  # hub branch, tag or commit; null = main (a local folder takes none)
    ssl_input: Literal["clip", "whole"] = "whole"  # whole utterance after silence removal (the literature), or 6 s clip
    ssl_max_batch_seconds: float | None = None  # most padded audio per batch (B x longest); null = batch_size only
    amp: bool = True  # bf16 autocast for the upstream on CUDA; a CPU always runs float32
    # What the file caches: every kept hidden state mean-pooled over valid frames, (N, L', D), or frame by frame,
    # (N, L' x D, T) zero-padded, with the valid-frame mask (N, 1, T) in the delta slot (docs/ssl.md).
    ssl_cache: Literal["pooled", "frames"] = "pooled"
    ssl_layers: list[int] | None = None  # hidden states kept: 0 = the embedding output, i = layer i; null = all
    ssl_frames_max_gb: float = 8.0  # ssl_cache frames: refuse a file larger than this (GiB), before running
    # The MFCC and delta settings; defaults and their sources are in sdcaff/mfcc.py.
    sample_rate: int = SAMPLE_RATE
    n_mfcc: int = N_MFCC
    n_fft: int = N_FFT
    win_length: int = WIN_LENGTH
    hop_length: int = HOP_LENGTH
    n_mels: int = N_MELS
    f_min: float = F_MIN
    f_max: float = F_MAX
    pad_mode: Literal["reflect", "constant"] = PAD_MODE
    top_db: float | None = TOP_DB
    delta_width: int = DELTA_WIDTH
    delta_axis: Literal["coefficient", "time"] = DELTA_AXIS

    @property
    def clip_samples(self) -> int:
        """Returns the clip length in samples (96,000 for 6 s at 16 kHz)."""
        return int(self.clip_seconds * self.sample_rate)

    @property
    def frames(self) -> int:
        """Returns the MFCC frames per clip with centred framing (251 for the authors' settings)."""
        return 1 + self.clip_samples // self.hop_length


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    corpus: Literal["iemocap", "msp-improv"]
    labels: list[str] | None = None  # manifest `label` values kept; null = every row


def load_params(name: str, path: str | Path | None = None) -> tuple[FeaturesParams, FeatureSet]:
    """Returns params.yaml's `features` section with feature_sets.<name>'s overrides applied, and the set."""
    path = Path(path) if path is not None else params_module.params_path()
    base = params_module.load("features", FeaturesParams, path)
    data, lines = params_module.read(path)
    sets = data.get("feature_sets")
    if not isinstance(sets, dict):
        raise ParamsError(f"{path}: missing section 'feature_sets'")
    if name not in sets:
        raise ParamsError(f"{path}: unknown feature set '{name}'; feature_sets has {', '.join(sets)}")
    entry = sets[name]
    key = ("feature_sets", name)
    where = f"{path}:{lines.get(key, 1)}"
    if not isinstance(entry, dict):
        raise ParamsError(f"{where}: 'feature_sets.{name}' must be a mapping, got {entry!r}")
    own = {k: v for k, v in entry.items() if k in ("corpus", "labels")}
    feature_set = params_module.build(FeatureSet, own, path, lines, key)
    entry = choose_per_profile(entry, path)
    hints = typing.get_type_hints(FeaturesParams)
    overrides = {}
    for field, value in entry.items():
        if field in own:
            continue
        if field not in hints:
            raise ParamsError(f"{path}:{lines[key + (field,)]}: unknown key 'feature_sets.{name}.{field}'; "
                              f"a set takes corpus, labels or a features key: {', '.join(hints)}")
        overrides[field] = params_module.build(hints[field], value, path, lines, key + (field,))
    merged = dataclasses.replace(base, **overrides)
    problem = _check(merged)
    if problem:
        field, message = problem
        line = lines.get(key + (field,), lines.get(("features", field), lines.get(key, 1)))
        raise ParamsError(f"{path}:{line}: feature set '{name}': {message}")
    return merged, feature_set


def choose_per_profile(entry: dict, path: Path) -> dict:
    """Returns the set's entry with each PER_PROFILE_KEYS mapping {profile: value} replaced by the value of the
    profile in use (None when it names none: the set is then not configured for that profile)."""
    chosen = dict(entry)
    for field in PER_PROFILE_KEYS:
        if isinstance(entry.get(field), dict):
            chosen[field] = params_module.per_profile(entry[field], params_module.profile_name(path))
    return chosen


def _check(p: FeaturesParams) -> tuple[str, str] | None:
    """Returns (key, message) for the first setting the DSP cannot run with, or None."""
    positive = ("clip_seconds", "batch_size", "cpu_batch_size", "sample_rate", "n_mfcc", "n_fft", "win_length",
                "hop_length", "n_mels", "fbank_n_mels")
    for field in positive:
        if getattr(p, field) <= 0:
            return field, f"'{field}' must be positive, got {getattr(p, field)}"
    if p.ssl_max_batch_seconds is not None and p.ssl_max_batch_seconds <= 0:
        return "ssl_max_batch_seconds", (f"'ssl_max_batch_seconds' must be positive or null, "
                                         f"got {p.ssl_max_batch_seconds}")
    if p.ssl_frames_max_gb <= 0:
        return "ssl_frames_max_gb", f"'ssl_frames_max_gb' must be positive, got {p.ssl_frames_max_gb}"
    if p.ssl_layers is not None and (not p.ssl_layers or min(p.ssl_layers) < 0
                                     or len(set(p.ssl_layers)) != len(p.ssl_layers)):
        return "ssl_layers", (f"'ssl_layers' must be distinct hidden-state indices (0 = the embedding output) "
                              f"or null, got {p.ssl_layers}")
    if p.win_length > p.n_fft:
        return "win_length", f"'win_length' {p.win_length} exceeds n_fft {p.n_fft}"
    if p.n_mfcc > p.n_mels:
        return "n_mfcc", f"'n_mfcc' {p.n_mfcc} exceeds n_mels {p.n_mels}"
    if not 0.0 <= p.f_min < p.f_max <= p.sample_rate / 2:
        return "f_max", f"need 0 <= f_min < f_max <= sample_rate / 2, got {p.f_min}, {p.f_max}, {p.sample_rate}"
    span = p.n_mfcc if p.delta_axis == "coefficient" else p.frames
    if p.delta_width < 3 or p.delta_width % 2 == 0 or p.delta_width > span:
        return "delta_width", f"'delta_width' must be odd, at least 3 and at most {span}, got {p.delta_width}"
    return None


def read_manifest(path: Path, corpus: str, labels: list[str] | None) -> pd.DataFrame:
    """Returns the manifest rows whose label is in `labels` (all if None), sorted by utt_id, with a `line` column."""
    frame = read_manifest_csv(path, corpus, MANIFEST_COLUMNS)
    frame = frame[list(MANIFEST_COLUMNS)].assign(line=np.arange(len(frame)) + 2)  # line 1 is the header
    for mask, what in (
        (frame["utt_id"] == "", "empty utt_id"),
        (frame["utt_id"].duplicated(), "duplicated utt_id"),
        (frame["corpus"] != corpus, f"corpus is not '{corpus}'"),
        (~frame["sample_rate"].str.fullmatch(r"[1-9][0-9]*"), "sample_rate is not a positive integer"),
        (~frame["num_samples"].str.fullmatch(r"[1-9][0-9]*"), "num_samples is not a positive integer"),
    ):
        if mask.any():
            row = frame[mask].iloc[0]
            raise ManifestError(f"{path}:{row['line']}: {what}: {row['utt_id']!r}")
    frame = frame.astype({"sample_rate": int, "num_samples": int})
    if labels is not None:
        frame = frame[frame["label"].isin(labels)]
    return frame.sort_values("utt_id", kind="mergesort", ignore_index=True)


def fix_length(y: np.ndarray, length: int) -> np.ndarray:
    """Returns y's first `length` samples, zero-padded at the end when shorter: (length,) float32."""
    # authors' code: pad when length >= len(y), else cut the head; never centred or looped.
    out = np.zeros(length, dtype=np.float32)
    out[: min(length, len(y))] = y[:length]
    return out


def prepare(row: pd.Series, manifest: Path, p: FeaturesParams) -> tuple[np.ndarray, int]:
    """Returns one utterance's clip (clip_samples,) float32 and its sample count after silence removal."""
    speech = read_speech(row, manifest, p)
    return fix_length(speech, p.clip_samples), len(speech)


def read_speech(row: pd.Series, manifest: Path, p: FeaturesParams) -> np.ndarray:
    """Returns one utterance at p.sample_rate after silence removal: (m,) float32."""
    y, rate = audio.read(row["path"])
    if rate != row["sample_rate"] or len(y) != row["num_samples"]:
        raise ManifestError(
            f"{manifest}:{row['line']}: {row['path']} holds {len(y)} samples at {rate} Hz, the manifest says "
            f"{row['num_samples']} at {row['sample_rate']} Hz; re-run `sdcaff manifest`"
        )
    if rate != p.sample_rate:
        y = torchaudio.functional.resample(torch.from_numpy(y), rate, p.sample_rate).numpy()
    return remove_silence(y, p.silence, p.trim_top_db)


def extractor(p: FeaturesParams, device: torch.device) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """Returns the batch transform: clips (B, clip_samples) -> (mfcc, delta, delta_delta), each (B, F, frames)."""
    if p.kind == "mfcc":
        options = {k: getattr(p, k) for k in MFCC_KEYS}
        return functools.partial(extract, delta_axis=p.delta_axis, delta_width=p.delta_width, **options)
    # SpeechBrain's own filterbank front end with the recipe's settings (its window, hop and FFT
    # defaults); the MFCC keys above do not apply. The two delta slots stay empty (B, 0, frames).
    fbank = Fbank(n_mels=p.fbank_n_mels, sample_rate=p.sample_rate).to(device)

    def filterbanks(clips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = fbank(clips).transpose(1, 2)  # (B, frames, n_mels) -> (B, n_mels, frames)
        empty = features.new_empty((features.shape[0], 0, features.shape[2]))
        return features, empty, empty

    return filterbanks


def compute(rows: pd.DataFrame, manifest: Path, p: FeaturesParams, device: torch.device) -> dict[str, torch.Tensor]:
    """Returns mfcc, delta, delta_delta (N, F, frames) float32 and speech_samples (N,) int64 for `rows`.

    F is n_mfcc for kind mfcc; for kind fbank the `mfcc` slot holds the fbank_n_mels filterbanks and
    the delta slots are (N, 0, frames).
    """
    n = len(rows)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("mfcc", "delta", "delta_delta")}
    speech = torch.empty(n, dtype=torch.int64)
    transform = extractor(p, device)
    with tqdm(total=n, unit="utt", desc="features", disable=None) as bar:
        size = p.transform_batch(device)
        for first in range(0, n, size):
            clips = []
            for i in range(first, min(first + size, n)):
                clip, speech_samples = prepare(rows.iloc[i], manifest, p)
                clips.append(clip)
                speech[i] = speech_samples
                bar.update()
            batch = torch.from_numpy(np.stack(clips)).to(device)
            with torch.inference_mode():
                tensors = transform(batch)
            for name, tensor in zip(parts, tensors):
                parts[name].append(tensor.cpu())
    return {**{name: torch.cat(tensors) for name, tensors in parts.items()}, "speech_samples": speech}


def compute_ssl(rows: pd.DataFrame, manifest: Path, p: FeaturesParams, upstream: Upstream) -> dict[str, torch.Tensor]:
    """Returns the upstream's hidden states for `rows` (whole utterances after silence removal, or their 6 s
    clips) as the loader's three tensors and speech_samples (N,) int64. ssl_cache pooled: mfcc = (N, L', D)
    mean-pooled, empty delta slots (N, 0, D). ssl_cache frames: mfcc = (N, L' x D, T) frame by frame, layer
    after layer, zero beyond each utterance's valid frames; delta = the valid-frame mask (N, 1, T); delta_delta
    empty (N, 0, T)."""
    waves = []
    speech = torch.empty(len(rows), dtype=torch.int64)
    for i in tqdm(range(len(rows)), unit="utt", desc="audio", disable=None):
        wave = read_speech(rows.iloc[i], manifest, p)
        speech[i] = len(wave)
        waves.append(fix_length(wave, p.clip_samples) if p.ssl_input == "clip" else wave)
    frame_level = p.ssl_cache == "frames"
    if frame_level:
        counts = upstream.frame_counts(waves)
        check_frames_size(len(waves), len(upstream.check_layers(p.ssl_layers)), upstream.hidden_size,
                          int(counts.max()), p.ssl_frames_max_gb)
    hidden = upstream.encode(waves, p.batch_size, p.ssl_max_batch_seconds, desc="upstream", layers=p.ssl_layers,
                             frame_level=frame_level)
    n = len(rows)
    if not frame_level:
        # The loader's contract keeps three tensors: the delta slots stay empty, as for kind fbank.
        empty = (n, 0, hidden.shape[2])
        return {"mfcc": hidden, "delta": torch.zeros(empty), "delta_delta": torch.zeros(empty), "speech_samples": speech}
    frames = hidden.shape[3]
    mask = (torch.arange(frames)[None, :] < counts[:, None]).float()[:, None, :]
    return {"mfcc": hidden.reshape(n, -1, frames), "delta": mask, "delta_delta": torch.zeros(n, 0, frames),
            "speech_samples": speech}


def check_frames_size(utterances: int, layers: int, dim: int, frames: int, max_gb: float) -> None:
    """Raises ParamsError, before the upstream runs, when a frame-level cache of this size exceeds max_gb GiB."""
    # The file holds the tensor once; building it and saving it hold it about twice.
    gib = utterances * layers * dim * frames * 4 / 2**30
    log.info("frame-level cache: %d utterances x %d hidden states x %d x %d frames = %.2f GiB", utterances, layers,
             dim, frames, gib)
    if gib > max_gb:
        raise ParamsError(f"{params_module.params_path()}: a frame-level cache of {utterances} utterances x {layers} "
                          f"hidden states x {dim} x {frames} frames (the longest) is {gib:.1f} GiB, above "
                          f"ssl_frames_max_gb {max_gb}: keep fewer layers (ssl_layers), use 6 s clips "
                          f"(ssl_input: clip), pool (ssl_cache: pooled), or raise the limit")


def load_upstream(p: FeaturesParams, set_name: str, device: torch.device) -> Upstream:
    """Returns the set's frozen upstream on `device`; a checkpoint that cannot be loaded raises ParamsError."""
    # transformers takes seconds to import: only kind ssl pays for it.
    from sdcaff import upstream as upstream_module

    where = f"{params_module.params_path()}: feature_sets.{set_name}.upstream = {p.upstream!r}"
    try:
        upstream = upstream_module.load(p.upstream, p.upstream_revision, device, amp=p.amp)
    except (OSError, ValueError) as exc:
        raise ParamsError(f"{where}: cannot load the checkpoint: {exc}") from exc
    try:
        upstream.check_layers(p.ssl_layers)
    except ValueError as exc:
        raise ParamsError(f"{params_module.params_path()}: feature_sets.{set_name}.ssl_layers: {exc}") from exc
    if upstream.sample_rate != p.sample_rate:
        raise ParamsError(f"{where}: the upstream takes {upstream.sample_rate} Hz audio, 'sample_rate' is "
                          f"{p.sample_rate}")
    return upstream


def write_outputs(pt_path: Path, json_path: Path, payload: dict, summary: dict) -> None:
    """Writes the tensor file and its JSON summary, both or neither."""
    # Both temporaries are written before either is renamed: an unwritable results folder or a full disk
    # leaves the previous tensor file and summary, never a new tensor file beside an old summary.
    with atomic_paths(pt_path, json_path) as (pt_tmp, json_tmp):
        with open(pt_tmp, "wb") as stream:
            # Saved through a stream: given a path, torch names the archive's folder after the (random)
            # temporary file name, and the same features would differ byte for byte.
            torch.save(payload, stream)
        json_tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def settings_of(p: FeaturesParams, feature_set: FeatureSet) -> dict:
    """Returns the settings a feature file records: every features key of its kind, and the set's own."""
    settings = {**params_module.to_dict(p), **params_module.to_dict(feature_set)}
    if p.kind != "ssl":
        settings = {k: v for k, v in settings.items() if k not in SSL_KEYS}
    return settings


def not_run_reason(set_name: str, path: Path | None = None) -> str | None:
    """Returns why feature set `set_name` cannot run with the profile in use (kind ssl with no upstream), or None."""
    path = Path(path) if path is not None else params_module.params_path()
    data, _ = params_module.read(path)
    entry = {**(data.get("features") or {}), **((data.get("feature_sets") or {}).get(set_name) or {})}
    # The profile matters only to an upstream chosen per profile (a params file may have no profiles).
    profile = params_module.profile_name(path) if isinstance(entry.get("upstream"), dict) else ""
    return params_module.no_upstream_reason(set_name, entry, profile)


def not_run(set_name: str, reason: str, p: FeaturesParams, feature_set: FeatureSet, pt_path: Path,
            json_path: Path) -> int:
    """Returns 0 after writing an empty tensor file and summary that say why kind ssl did not run (`reason`)."""
    settings = {**settings_of(p, feature_set), "upstream_identity": None}
    empty = torch.zeros(0, 0, 0)
    # DVC needs both outputs; the loader refuses a file holding `not_run`, naming it and the reason.
    payload = {"utt_ids": [], "mfcc": empty, "delta": empty.clone(), "delta_delta": empty.clone(),
               "params": settings, "not_run": reason}
    summary = {"set": set_name, "corpus": feature_set.corpus, "utterances": 0, "params": settings,
               "not_run": reason}
    write_outputs(pt_path, json_path, payload, summary)
    env.write_provenance(Path("features") / set_name, features=pt_path.as_posix(), not_run=reason)
    log.warning("feature set %s: not run: %s", set_name, reason)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--set NAME` and `--device` to the verb's parser."""
    parser.add_argument("--set", required=True, dest="set_name", metavar="NAME",
                        help="a key of params feature_sets (e.g. iemocap, msp-improv)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="where MFCCs are computed; default: params env.device")


def run(args: argparse.Namespace) -> int:
    """Returns 0 after writing <out_dir>/<set>.pt and <results_dir>/<set>.json for one feature set."""
    p, feature_set = load_params(args.set_name)
    env_params = params_module.load("env", env.EnvParams)
    env.configure(env_params)
    device = env.device(args.device or env_params.device)
    pt_path = Path(p.out_dir) / f"{args.set_name}.pt"
    json_path = Path(p.results_dir) / f"{args.set_name}.json"
    # A kill during torch.save leaves a multi-MB hidden temporary that no later run would ever replace.
    stale = remove_stale_temporaries(pt_path, json_path)
    if stale:
        log.info("removed %d temporary file(s) a killed run left: %s", len(stale), ", ".join(map(str, stale)))
    reason = not_run_reason(args.set_name)
    if reason:
        return not_run(args.set_name, reason, p, feature_set, pt_path, json_path)
    manifest = Path(p.manifest_dir) / f"{feature_set.corpus}.csv"
    rows = read_manifest(manifest, feature_set.corpus, feature_set.labels)
    if rows.empty:
        raise ManifestError(f"{manifest}: no rows with a label in {feature_set.labels}")
    audio_seconds = float((rows["num_samples"] / rows["sample_rate"]).sum())
    log.info("read %s: %d utterances (%.0f s of audio), labels %s", manifest, len(rows), audio_seconds,
             feature_set.labels or "all")

    settings = settings_of(p, feature_set)
    if p.kind == "ssl":
        upstream = load_upstream(p, args.set_name, device)
        settings["upstream_identity"] = upstream.identity()
    start = time.perf_counter()
    tensors = compute_ssl(rows, manifest, p, upstream) if p.kind == "ssl" else compute(rows, manifest, p, device)
    wall_seconds = time.perf_counter() - start

    # Both outputs hold only what the numbers depend on, so recomputing them on another commit gives the
    # same bytes (and the md5 the committed dvc.lock records); versions, commit and times: provenance.
    payload = {"utt_ids": rows["utt_id"].tolist(), **tensors, "params": settings}
    summary = {
        "set": args.set_name, "corpus": feature_set.corpus, "utterances": len(rows),
        "audio_seconds": round(audio_seconds, 3), "device": str(device), "params": settings,
    }
    write_outputs(pt_path, json_path, payload, summary)
    realtime = round(audio_seconds / max(wall_seconds, 1e-9), 1)
    env.write_provenance(Path("features") / args.set_name, features=pt_path.as_posix(),
                         wall_seconds=round(wall_seconds, 3), times_realtime=realtime)
    log.info("wrote %s (%s %s) and %s: %.1f s wall, %.0fx realtime on %s", pt_path, p.kind,
             " x ".join(map(str, tensors["mfcc"].shape)), json_path, wall_seconds, realtime, device)
    return 0

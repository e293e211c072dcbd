"""A frozen self-supervised upstream (wav2vec 2.0, HuBERT, WavLM, Whisper's encoder): waveforms -> every hidden
state (or a chosen few) mean-pooled over the utterance's valid frames, (B, L+1, D), or frame by frame with the
padding zeroed, (N, L+1, D, T)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

__all__ = ["Upstream", "folder_digest", "length_batches", "load"]

log = logging.getLogger(__name__)

# Raw-waveform models, whose conv front end maps samples to frames (model._get_feat_extract_output_lengths).
WAVEFORM_TYPES = ("wav2vec2", "hubert", "wavlm")
SUPPORTED_TYPES = (*WAVEFORM_TYPES, "whisper")
PROGRESS_EVERY_S = 30.0  # a progress line at least this often, for logs where tqdm draws no bar
# The files whose names and bytes identify a local checkpoint: what the model computes (config, weights)
# and what it is fed (the feature extractor's settings: normalisation, mask).
IDENTITY_FILES = ("config.json", "preprocessor_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
DIGEST_HEX = 16  # 64 bits of sha256: enough to tell checkpoints apart, short enough to print in a table


@dataclasses.dataclass
class Upstream:
    name: str  # as given: a local folder or a hub id
    revision: str | None  # the hub commit loaded, or "sha256:<hex>" of a local folder's files (folder_digest)
    model: torch.nn.Module  # the frozen model; for Whisper its encoder only
    feature_extractor: Any  # transformers feature extractor: its settings say how the input is prepared
    device: torch.device
    amp: bool  # bf16 autocast for the forward (CUDA only)

    @property
    def config(self) -> Any:
        """Returns the model's transformers config."""
        return self.model.config

    @property
    def whisper(self) -> bool:
        """Returns True for a Whisper encoder (log-mel input padded to 30 s), False for a raw-waveform model."""
        return self.config.model_type == "whisper"

    @property
    def hidden_layers(self) -> int:
        """Returns L, the transformer layers whose outputs follow the embedding output (L + 1 hidden states)."""
        return self.config.encoder_layers if self.whisper else self.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        """Returns D, the width of every hidden state."""
        return self.config.d_model if self.whisper else self.config.hidden_size

    @property
    def sample_rate(self) -> int:
        """Returns the sample rate the feature extractor expects (16,000 for every supported model)."""
        return self.feature_extractor.sampling_rate

    def identity(self) -> dict[str, Any]:
        """Returns the checkpoint's identity as plain data: name, revision, model_type, hidden_layers, hidden_size."""
        return {"name": self.name, "revision": self.revision, "model_type": self.config.model_type,
                "hidden_layers": self.hidden_layers, "hidden_size": self.hidden_size}

    def min_samples(self) -> int:
        """Returns the fewest samples the model turns into one frame (its conv front end's receptive field)."""
        if self.whisper:
            return 1
        samples = 1
        for kernel, stride in zip(reversed(self.config.conv_kernel), reversed(self.config.conv_stride)):
            samples = (samples - 1) * stride + kernel
        return samples

    def padded_samples(self, samples: int) -> int:
        """Returns how many samples an utterance of `samples` occupies in a batch (Whisper: always 30 s)."""
        return self.feature_extractor.n_samples if self.whisper else max(samples, self.min_samples())

    def valid_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Returns each utterance's frames that hold audio, not padding: (B,) int64 from sample counts (B,)."""
        if self.whisper:
            # 2 log-mel frames (hop_length samples each) per encoder frame; the extractor cuts at 30 s.
            frames = torch.ceil(lengths / (2 * self.feature_extractor.hop_length)).long()
            return frames.clamp(1, self.config.max_source_positions)
        return self.model._get_feat_extract_output_lengths(lengths).long()

    def input_lengths(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """Returns the sample count (B,) the model's frames are counted from: Whisper's cut at 30 s by valid_frames,
        a raw-waveform model's padded to one conv frame at least."""
        return torch.tensor([len(w) if self.whisper else self.padded_samples(len(w)) for w in waves])

    def inputs(self, waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the batch input, each utterance's valid frames (B,) and the model's extra arguments."""
        if self.whisper:
            # The extractor pads (or cuts) every utterance to 30 s on its own, so the log-mel of one
            # utterance does not depend on the others in the batch; the encoder takes no mask.
            features = self.feature_extractor(waves, sampling_rate=self.sample_rate, return_tensors="pt",
                                              device=self.device.type)
            return features["input_features"].to(self.device), self.valid_frames(self.input_lengths(waves)), {}
        if self.feature_extractor.do_normalize:
            # The extractor's own formula, per utterance over its own samples, before any padding.
            waves = self.feature_extractor.zero_mean_unit_var_norm(waves, attention_mask=None)
        lengths = self.input_lengths(waves)
        batch = torch.zeros(len(waves), int(lengths.max()))
        for row, wave in enumerate(waves):
            batch[row, : len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32))
        extra = {}
        if self.feature_extractor.return_attention_mask:
            # Checkpoints trained with masks (layer-norm front ends: WavLM, HuBERT/wav2vec 2.0 Large) ignore
            # the padding in attention. The others were trained on unpadded input and take no mask: their
            # padding is masked out of the pooling only, so a padded utterance's vector shifts a little.
            extra["attention_mask"] = (torch.arange(batch.shape[1]) < lengths[:, None]).long().to(self.device)
        return batch.to(self.device), self.valid_frames(lengths), extra

    def run_model(self, waves: list[np.ndarray], layers: Sequence[int] | None) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Returns the hidden states `layers` (indices into embedding output + layers; None = all), each (B, T, D) on
        the device, each utterance's valid frames (B,) and the valid-frame mask (B, T, 1) float32."""
        batch, frames, extra = self.inputs(waves)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            hidden = self.model(batch, output_hidden_states=True, **extra).hidden_states
        if layers is not None:
            hidden = [hidden[i] for i in layers]
        frames = frames.to(self.device)
        mask = (torch.arange(hidden[0].shape[1], device=self.device) < frames[:, None]).float()[..., None]
        return list(hidden), frames, mask

    def pooled_hidden_states(self, waves: list[np.ndarray], layers: Sequence[int] | None = None) -> torch.Tensor:
        """Returns the hidden states `layers` (None = all) mean-pooled over valid frames: (B, L', D) float32 CPU."""
        hidden, frames, mask = self.run_model(waves, layers)
        pooled = [(h.float() * mask).sum(1) / frames[:, None] for h in hidden]
        return torch.stack(pooled, 1).cpu()

    def check_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Returns `layers` as a list of hidden-state indices (None = all L + 1); raises ValueError for one out of range."""
        count = self.hidden_layers + 1
        if layers is None:
            return list(range(count))
        wrong = [i for i in layers if not 0 <= i < count]
        if wrong or not layers or len(set(layers)) != len(layers):
            raise ValueError(f"layers {list(layers)} must be distinct hidden-state indices in 0..{count - 1} "
                             f"(0 = the embedding output, {count - 1} = the last of {self.hidden_layers} layers)")
        return list(layers)

    def frame_counts(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """Returns each wave's valid frames (N,) int64, as run_model() counts them, without running the model."""
        return self.valid_frames(self.input_lengths(waves)).cpu()

    def encode(self, waves: Sequence[np.ndarray], batch_size: int, max_batch_seconds: float | None = None,
               desc: str = "upstream", layers: Sequence[int] | None = None,
               frame_level: bool = False) -> torch.Tensor:
        """Returns every wave's hidden states `layers` (None = all), batched by length, in the order given:
        mean-pooled (N, L', D), or with `frame_level` channels first, (N, L', D, T), padded with zeros to the
        longest utterance's T valid frames (frame_counts() says each one's), float32."""
        n = len(waves)
        layers = self.check_layers(layers)
        cut = sum(len(w) > self.feature_extractor.n_samples for w in waves) if self.whisper else 0
        if cut:
            log.warning("%s: %d of %d utterances are longer than 30 s: Whisper's encoder sees their first 30 s",
                        desc, cut, n)
        max_samples = None if max_batch_seconds is None else int(max_batch_seconds * self.sample_rate)
        batches = length_batches([self.padded_samples(len(w)) for w in waves], batch_size, max_samples)
        if frame_level:
            longest = int(self.frame_counts(waves).max()) if n else 0
            out = torch.zeros(n, len(layers), self.hidden_size, longest)
        else:
            out = torch.empty(n, len(layers), self.hidden_size)
        total_seconds = sum(len(w) for w in waves) / self.sample_rate
        progress = Progress(desc, n, total_seconds)
        with tqdm(total=n, unit="utt", desc=desc, disable=None) as bar:
            for indices in batches:
                batch = [waves[i] for i in indices]
                if frame_level:
                    # Only the valid frames are copied, so the padding stays the zeros `out` starts with.
                    hidden, frames, _ = self.run_model(batch, layers)
                    for layer, h in enumerate(hidden):
                        h = h.float().cpu()  # one transfer per hidden state, as for pooling
                        for row, i in enumerate(indices):
                            valid = int(frames[row])
                            out[i, layer, :, :valid] = h[row, :valid].T
                else:
                    out[indices] = self.pooled_hidden_states(batch, layers)
                bar.update(len(indices))
                progress(len(indices), sum(len(w) for w in batch) / self.sample_rate)
        return out


class Progress:
    """Progress lines a log file can show: one every PROGRESS_EVERY_S seconds with counts and an ETA."""

    def __init__(self, desc: str, utterances: int, seconds: float, every_s: float = PROGRESS_EVERY_S):
        self.desc, self.utterances, self.seconds, self.every_s = desc, utterances, seconds, every_s
        self.done, self.done_seconds = 0, 0.0
        self.started = self.last = time.perf_counter()

    def __call__(self, utterances: int, seconds: float) -> None:
        self.done += utterances
        self.done_seconds += seconds
        now = time.perf_counter()
        if now - self.last < self.every_s or self.done == self.utterances:
            return
        elapsed = now - self.started
        # The ETA goes by audio, not utterances: batches run longest first, so early ones are slow.
        eta = elapsed * (self.seconds - self.done_seconds) / max(self.done_seconds, 1e-9)
        log.info("%s: %d/%d utterances (%.0f/%.0f s of audio) after %.0f s, ETA %.0f s", self.desc, self.done,
                 self.utterances, self.done_seconds, self.seconds, elapsed, eta)
        self.last = now


def length_batches(lengths: Sequence[int], batch_size: int, max_batch_samples: int | None = None) -> list[list[int]]:
    """Returns index batches, longest utterances first: each at most batch_size utterances and, when given,
    max_batch_samples padded samples (batch size x its longest; an utterance longer than that goes alone)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    # Longest first: a batch that does not fit in memory fails at once, not at the end. Ties keep input order.
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        full = current is None or len(current) == batch_size
        if not full and max_batch_samples is not None:
            full = lengths[current[0]] * (len(current) + 1) > max_batch_samples
        if full:
            batches.append([i])
        else:
            current.append(i)
    return batches


def folder_digest(folder: str | Path) -> str:
    """Returns "sha256:<16 hex>" over the names, sizes and bytes of a checkpoint folder's config, feature
    extractor config and weights files, so two different local checkpoints never share an identity."""
    folder = Path(folder)
    names = [n for n in IDENTITY_FILES if (folder / n).is_file()]
    names += sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    digest = hashlib.sha256()
    for name in names:
        path = folder / name
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 22), b""):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:DIGEST_HEX]}"


def load(name_or_path: str, revision: str | None = None, device: torch.device | str = "cpu",
         amp: bool = True) -> Upstream:
    """Returns the frozen upstream at a local folder or hub id, in eval mode on `device`.

    `revision` (a hub branch, tag or commit) applies to hub ids only. `amp` switches bf16 autocast on,
    on CUDA only: a CPU always runs float32. Raises OSError for a missing checkpoint and ValueError for an
    unsupported one.
    """
    device = torch.device(device)
    folder = Path(name_or_path).expanduser()
    local = folder.is_dir()
    if local and revision is not None:
        raise ValueError(f"{folder} is a local folder; a revision ({revision!r}) applies to hub ids only")
    where = {"local_files_only": True} if local else {"revision": revision}
    source = str(folder) if local else name_or_path
    config = AutoConfig.from_pretrained(source, **where)
    if config.model_type not in SUPPORTED_TYPES:
        raise ValueError(f"{name_or_path}: model_type {config.model_type!r} is not supported; "
                         f"supported: {', '.join(SUPPORTED_TYPES)}")
    # float32 whatever the checkpoint was saved in: autocast, not the weights, decides the precision.
    model = AutoModel.from_pretrained(source, dtype=torch.float32, **where)
    if config.model_type == "whisper":
        model = model.get_encoder()  # the decoder is dropped with the full model
    model.eval().requires_grad_(False).to(device)
    extractor = AutoFeatureExtractor.from_pretrained(source, **where)
    resolved = folder_digest(folder) if local else (getattr(config, "_commit_hash", None) or revision)
    upstream = Upstream(name_or_path, resolved, model, extractor, device, amp and device.type == "cuda")
    log.info("loaded upstream %s (%s, revision %s): %d layers x %d, %s%s", name_or_path, config.model_type,
             resolved, upstream.hidden_layers, upstream.hidden_size, device, ", bf16 autocast" if upstream.amp else "")
    return upstream

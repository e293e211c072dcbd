"""The ssl baseline through DVC on a small synthetic IEMOCAP with a tiny local upstream (nothing downloaded):
synth -> manifest -> splits -> features (kind ssl) -> train -> evaluate under the authors' protocol and LOSO,
then the report's rows naming the checkpoint; and the same pipeline without an upstream, skipped visibly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "ssl-iemocap-loso"
EXPERIMENTS = ("ssl-iemocap-authors", EXPERIMENT)
LAYERS, WIDTH = 2, 16  # 3 pooled hidden states of 16 dims


def tiny_wavlm(folder: Path) -> Path:
    """Saves a randomly initialised 2-layer WavLM whose front end keeps the real 320x downsampling (50 frames/s)."""
    torch.manual_seed(0)
    config = WavLMConfig(hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer")
    WavLMModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def clone(tmp: Path, upstream: Path | None) -> Path:
    """Returns a clone of the committed project whose params keep only the ssl experiments (authors', LOSO)."""
    root = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["synth"]["iemocap_scale"] = 0.013  # ~130 wavs, ~70 in the feature set: seconds, not minutes
    p["splits"]["protocols"] = {k: p["splits"]["protocols"][k] for k in ("iemocap-authors", "iemocap-loso")}
    entry = dict(p["feature_sets"]["iemocap-ssl"])
    assert entry["upstream"] == {"quick": None, "paper": None}  # chosen per profile, none in the default study
    if upstream is not None:
        entry["upstream"]["quick"] = str(upstream)  # what a user with the quick profile sets
    p["feature_sets"] = {"iemocap-ssl": entry}
    p["experiments"] = {name: p["experiments"][name] for name in EXPERIMENTS}
    quick = p["profiles"]["quick"]
    quick["train"].update(epochs=3, lr_drop_epochs=[2, 3], seeds=[987654], jobs=1)
    quick["baselines"]["baselines/ssl.py"] = {"layers": LAYERS + 1, "dim": WIDTH, "projection": 8}
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return root


def run(root: Path, *argv: str) -> subprocess.CompletedProcess:
    venv_bin = Path(sys.executable).parent
    environ = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(root),
               "HF_HUB_OFFLINE": "1"}
    for key in ("SDCAFF_IEMOCAP", "SDCAFF_MSP_IMPROV", "SDCAFF_PARAMS"):
        environ.pop(key, None)
    done = subprocess.run(argv, cwd=root, env=environ, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


needs_git = pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                               reason="needs git and a git checkout of the project to clone")


@needs_git
def test_the_ssl_baseline_runs_through_dvc_and_reaches_the_report(tmp_path):
    root = clone(tmp_path, tiny_wavlm(tmp_path / "upstreams" / "wavlm-tiny"))
    run(root, str(Path(sys.executable).parent / "dvc"), "repro", "--quiet", *[f"evaluate@{e}" for e in EXPERIMENTS])
    authors = json.loads((root / "results/metrics/ssl-iemocap-authors.json").read_text())
    record = json.loads((root / "results/metrics" / f"{EXPERIMENT}.json").read_text())
    assert "not_run" not in record and len(record["per_fold"]) == 5  # every session of LOSO, one seed
    assert len(authors["per_fold"]) == 5 and authors["upstream"] == record["upstream"]
    assert 0.0 <= record["ua"]["fold_mean"] <= 100.0
    upstream = record["upstream"]
    assert upstream["name"].endswith("wavlm-tiny") and upstream["revision"].startswith("sha256:")
    assert (upstream["model_type"], upstream["hidden_layers"], upstream["hidden_size"]) == ("wavlm", LAYERS, WIDTH)
    features = json.loads((root / "results/features/iemocap-ssl.json").read_text())
    assert features["utterances"] > 0 and features["params"]["upstream_identity"] == upstream
    # The committed study's metrics came from the full-size corpus: the report would refuse the mix.
    for path in (root / "results/metrics").glob("*.json"):
        if path.stem not in EXPERIMENTS:
            path.unlink()
    run(root, str(Path(sys.executable).parent / "sdcaff"), "report")
    report = (root / "results/REPORT.md").read_text()
    label = f"SSL upstream + SUPERB head ({upstream['name']}@{upstream['revision'][:12]})"
    assert label in report and "## Not run" not in report
    for table in ("variants", "protocol_gap", "per_class"):  # every table an IEMOCAP baseline belongs in
        assert label in (root / "results/tables" / f"{table}.md").read_text(), table


@needs_git
def test_without_an_upstream_the_pipeline_skips_it_visibly(tmp_path):
    root = clone(tmp_path, None)
    done = run(root, str(Path(sys.executable).parent / "dvc"), "repro", f"evaluate@{EXPERIMENT}")
    reason = "no upstream checkpoint configured for profile quick (feature_sets.iemocap-ssl.upstream.quick)"
    assert f"experiment {EXPERIMENT}: not run: {reason}" in done.stdout + done.stderr
    record = json.loads((root / "results/metrics" / f"{EXPERIMENT}.json").read_text())
    assert record["not_run"] == reason
    assert (root / "artifacts/runs" / EXPERIMENT / "NOT_RUN").read_text().strip() == reason

"""The models that are not SD-CAFF switches: ECAPA-TDNN (SpeechBrain) and the MFCC-statistics floor."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

import fake_study
from baselines import ecapa, mfcc_linear
from sdcaff import cli, env, train
from sdcaff.errors import ParamsError

QUICK_ECAPA = ecapa.EcapaParams(channels=(16, 16, 16, 16, 48), attention_channels=8, lin_neurons=12)


def test_ecapa_recipe_sizes_build_the_speechbrain_network():
    model = ecapa.build(ecapa.EcapaParams())
    embedding = model.embedding
    # SpeechBrain IEMOCAP recipe: 80 mels in, 512-wide blocks, 1536 multi-layer aggregation, 96-d embedding.
    assert embedding.blocks[0].conv.conv.in_channels == 80
    assert embedding.mfa.conv.conv.out_channels == 1536
    assert embedding.fc.conv.out_channels == 96
    assert model.classifier.weight.shape == (4, 96)


def test_ecapa_scores_are_scaled_cosines_and_backpropagate():
    torch.manual_seed(0)
    model = ecapa.build(QUICK_ECAPA)
    static = torch.randn(3, 1, 80, 120)
    out = model(static, torch.empty(3, 120, 80))
    assert out.emotion.shape == (3, 4) and out.fused.shape == (3, 12) and out.gender is None
    assert out.emotion.abs().max() <= QUICK_ECAPA.cosine_scale + 1e-4  # cosine in [-1, 1], times the scale
    out.emotion.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # Sentence mean normalisation: a constant offset on every filterbank frame changes nothing.
    model.eval()
    torch.testing.assert_close(model(static + 3.0, None).emotion, model(static, None).emotion, atol=1e-4, rtol=1e-4)


def test_configure_undoes_speechbrains_tf32_switch():
    import speechbrain.lobes.features  # noqa: F401  (its import-time quirks switch TF32 matmuls on)

    threads = torch.get_num_threads()
    torch.backends.cuda.matmul.allow_tf32 = True
    env.configure(env.EnvParams(threads=threads, deterministic=False))
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_ecapa_refuses_bad_sizes_and_inputs():
    with pytest.raises(ParamsError, match="multiples of 8"):
        ecapa.build(ecapa.EcapaParams(channels=(12, 12, 12, 12, 36)))
    with pytest.raises(ValueError, match=r"\(B, 1, 80, T\)"):
        ecapa.build(QUICK_ECAPA)(torch.randn(2, 1, 60, 50), None)


def test_mfcc_linear_is_linear_in_the_utterance_statistics():
    model = mfcc_linear.build(mfcc_linear.LinearParams(n_mfcc=5)).eval()
    static = torch.randn(4, 1, 5, 30)
    out = model(static, None)
    stats = torch.cat([static[:, 0].mean(2), static[:, 0].std(2)], dim=1)
    torch.testing.assert_close(out.fused, stats)
    # Frame order does not matter to statistics.
    shuffled = static[..., torch.randperm(30, generator=torch.Generator().manual_seed(1))]
    torch.testing.assert_close(model(shuffled, None).emotion, out.emotion)
    with pytest.raises(ValueError, match=r"\(B, 1, 5, T\)"):
        model(torch.randn(2, 1, 6, 30), None)


@pytest.mark.parametrize("model", ["baselines/mfcc_linear.py", "baselines/ecapa.py"])
def test_baselines_train_and_evaluate_like_sdcaff(tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    fake_study.write_study(tmp_path)
    loss = {"emotion_weight": 1.0, "gender_weight": 0.0, "center_weight": 0.0}
    experiments = {"base": {"protocol": "honest", "features": {"train": "iemocap", "test": "iemocap"},
                            "model": model, "variant": "base", "group": "baseline", "folds": [0],
                            "train": {"loss": loss}}}
    fake_study.write_params(tmp_path / "params.yaml", experiments=experiments)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    # The fake study's maps are 12 x 40: ECAPA reads them as 12 filterbanks.
    params["profiles"]["tiny"]["baselines"] = {
        "baselines/ecapa.py": {"n_mels": fake_study.N_MFCC, "channels": [8, 8, 8, 8, 24], "attention_channels": 4,
                               "lin_neurons": 6},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    config = train.load_config("base")
    assert config.spec.model == model and config.model_params.n_classes == 4
    assert cli.main(["resolve"]) == 0
    assert cli.main(["train", "--experiment", "base"]) == 0
    assert cli.main(["evaluate", "--experiment", "base"]) == 0
    record = json.loads((tmp_path / "results/metrics/base.json").read_text())
    assert record["model"] == model and record["variant"] == "base" and record["group"] == "baseline"
    rows = pd.read_csv(tmp_path / "artifacts/splits/honest.csv")
    fold = rows[rows["fold"] == 0]
    assert record["per_fold"][0]["n_train"] == (fold["role"] == "train").sum()
    assert record["per_fold"][0]["n"] == (fold["role"] == "test").sum()


def test_a_model_without_a_sizes_block_takes_its_defaults(tmp_path):
    experiments = {"base": {"protocol": "honest", "features": {"train": "iemocap", "test": "iemocap"},
                            "model": "baselines/ecapa.py"}}
    fake_study.write_params(tmp_path / "params.yaml", experiments=experiments)
    config = train.load_config("base", tmp_path / "params.yaml")
    assert config.model_params == ecapa.EcapaParams()  # the recipe's sizes; n_classes is the profile's 4


@pytest.mark.parametrize("model, message", [
    ("baselines/resnet.py", r"params.yaml:\d+: model 'baselines/resnet.py': no module baselines.resnet"),
    ("sdcaff/losses.py", r"params.yaml:\d+: model module .*losses.py lacks Params and build"),
    ("../elsewhere.py", r"params.yaml:\d+: model '../elsewhere.py' is not a module path from the repository root"),
    ("baselines/ecapa.txt", r"is not a module path"),
])
def test_a_bad_model_path_is_named_with_file_and_line(tmp_path, model, message):
    experiments = {"base": {"protocol": "honest", "features": {"train": "iemocap", "test": "iemocap"},
                            "model": model}}
    fake_study.write_params(tmp_path / "params.yaml", experiments=experiments)
    with pytest.raises(ParamsError, match=message):
        train.load_config("base", tmp_path / "params.yaml")

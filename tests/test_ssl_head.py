"""baselines/ssl.py: the SUPERB-style weighted-sum head over pooled self-supervised hidden states."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

import fake_study
from baselines import ssl
from sdcaff import cli, train
from sdcaff.data.loader import UtteranceDataset, load_features, make_loader
from sdcaff.errors import ParamsError
from sdcaff.losses import LossParams, MultiTaskLoss

# Training pins torch's thread count from params.yaml env: restore it for later test modules.
pytestmark = pytest.mark.usefixtures("restore_threads")

LAYERS, DIM = 5, 16  # a toy upstream: 4 layers + the embedding output, 16 wide
SMALL = ssl.SslHeadParams(layers=LAYERS, dim=DIM, projection=8, mlp_hidden=6)
INFORMATIVE = 3  # the only hidden state the toy study's classes show in


def batch(n: int = 6, layers: int = LAYERS, dim: int = DIM, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns static (n, 1, layers, dim) and dynamic (n, dim, layers), as UtteranceDataset hands them over."""
    static = torch.randn(n, 1, layers, dim, generator=torch.Generator().manual_seed(seed))
    return static, static.squeeze(1).transpose(1, 2)


def test_layer_weights_start_uniform_and_sum_to_one():
    model = ssl.build(SMALL)
    torch.testing.assert_close(model.layer_weights, torch.full((LAYERS,), 1.0 / LAYERS))
    with torch.no_grad():
        model.layer_logits.copy_(torch.randn(LAYERS))
    assert model.layer_weights.min() > 0
    torch.testing.assert_close(model.layer_weights.sum(), torch.tensor(1.0))


def test_fused_is_the_projected_weighted_sum_of_the_layers():
    torch.manual_seed(0)
    model = ssl.build(SMALL).eval()
    with torch.no_grad():
        model.layer_logits.copy_(torch.randn(LAYERS))
    static, dynamic = batch()
    out = model(static, dynamic)
    weights = model.layer_weights.detach()
    expected = model.projection(sum(weights[i] * static[:, 0, i] for i in range(LAYERS)))
    torch.testing.assert_close(out.fused, expected)
    torch.testing.assert_close(out.emotion, model.head(expected))


@pytest.mark.parametrize("head, projection, fused_width", [
    ("linear", 8, 8), ("mlp", 8, 8), ("linear", None, DIM), ("mlp", None, DIM),
])
def test_linear_and_mlp_heads_give_logits_per_class(head, projection, fused_width):
    model = ssl.build(ssl.SslHeadParams(layers=LAYERS, dim=DIM, head=head, projection=projection, mlp_hidden=6))
    out = model(*batch())
    assert out.emotion.shape == (6, 4) and out.fused.shape == (6, fused_width)
    assert out.gender is None and out.gender_center is None and out.emotion_center is out.emotion
    if head == "linear":
        assert isinstance(model.head, torch.nn.Linear)
    else:
        assert [type(m) for m in model.head] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Dropout, torch.nn.Linear]
        assert model.head[0].out_features == 6


def test_gradients_reach_the_layer_weights_projection_and_head():
    model = ssl.build(dataclasses.replace(SMALL, head="mlp"))
    loss_fn = MultiTaskLoss(LossParams(emotion_weight=1.0, gender_weight=0.0, center_weight=0.0), n_classes=4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    loss_fn(model(*batch()), labels, labels % 2).total.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_training_step_moves_the_layer_weights():
    torch.manual_seed(0)
    model = ssl.build(SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0e-2)
    loss_fn = MultiTaskLoss(LossParams(emotion_weight=1.0, gender_weight=0.0, center_weight=0.0), n_classes=4)
    before = model.layer_weights.detach().clone()
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    loss_fn(model(*batch()), labels, labels % 2).total.backward()
    optimizer.step()
    after = model.layer_weights.detach()
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after.sum(), torch.tensor(1.0))


def test_a_wrong_layer_count_or_width_is_refused_naming_both_numbers():
    model = ssl.build(SMALL)
    with pytest.raises(ValueError, match=r"features hold 25 hidden states .* configured for layers 5"):
        model(*batch(layers=25))
    with pytest.raises(ValueError, match=r"\(B, 1, 5, 16\) or frames .*\(B, 1, 80, T\), got \(6, 1, 5, 12\)"):
        model(*batch(dim=12))
    with pytest.raises(ValueError, match=r"\(B, 1, 5, 16\) or frames .*, got \(6, 5, 16\)"):
        model(torch.randn(6, LAYERS, DIM), None)


def test_inconsistent_params_are_refused():
    with pytest.raises(ParamsError, match="layers must be at least 1.*dropout must be in"):
        ssl.build(ssl.SslHeadParams(layers=0, dropout=1.5))
    with pytest.raises(ParamsError, match="projection must be at least 1 or null"):
        ssl.build(ssl.SslHeadParams(projection=0))
    assert ssl.Params is ssl.SslHeadParams and ssl.SslHeadParams().problems() == []


def write_ssl_features(path, ids: list[str], seed: int = 0, frames: int | None = None) -> None:
    """Writes an `ssl` feature file: mfcc (N, LAYERS, DIM) pooled hidden states, empty deltas (N, 0, DIM); or
    with `frames`, as ssl_cache frames does: mfcc (N, LAYERS x DIM, frames) zero-padded, mask (N, 1, frames)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(ids)
    labels = torch.tensor([fake_study.CLASSES.index(fake_study.label_of(u)) for u in ids])
    if frames is None:
        hidden = torch.randn(n, LAYERS, DIM, generator=gen)
        # Separable in one hidden state only: class k raises coordinate k of layer INFORMATIVE.
        hidden[torch.arange(n), INFORMATIVE, labels] += 3.0
        data = {"utt_ids": list(ids), "mfcc": hidden, "delta": torch.empty(n, 0, DIM),
                "delta_delta": torch.empty(n, 0, DIM)}
    else:
        hidden = torch.randn(n, LAYERS, DIM, frames, generator=gen)
        hidden[torch.arange(n), INFORMATIVE, labels] += 3.0
        valid = torch.randint(1, frames + 1, (n,), generator=gen)
        mask = (torch.arange(frames)[None, :] < valid[:, None]).float()
        hidden *= mask[:, None, None, :]
        data = {"utt_ids": list(ids), "mfcc": hidden.reshape(n, LAYERS * DIM, frames), "delta": mask[:, None, :],
                "delta_delta": torch.empty(n, 0, frames)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)


def test_the_loader_hands_the_head_every_layer_as_static_and_the_transpose_as_dynamic(tmp_path):
    ids = fake_study.utt_ids("iemocap", 8)
    write_ssl_features(tmp_path / "ssl.pt", ids)
    rows = fake_study.split_rows(ids, ids, folds=2, valid_is_test=False)
    features = load_features([tmp_path / "ssl.pt"])
    dataset = UtteranceDataset(features, rows[rows["fold"] == 0], fake_study.CLASSES, tmp_path / "split.csv")
    static, dynamic, *_ = next(iter(make_loader(dataset, 4, shuffle=False)))
    assert static.shape == (4, 1, LAYERS, DIM) and dynamic.shape == (4, DIM, LAYERS)
    assert ssl.build(SMALL)(static, dynamic).emotion.shape == (4, 4)


@pytest.mark.parametrize("frames", [None, 7], ids=["pooled", "frames"])
def test_the_head_trains_through_the_training_stage(tmp_path, monkeypatch, frames):
    monkeypatch.chdir(tmp_path)
    ids = fake_study.utt_ids("iemocap", 320)
    write_ssl_features(tmp_path / "artifacts/features/iemocap-ssl.pt", ids, frames=frames)
    fake_study.write_split(tmp_path / "artifacts/splits", "honest",
                           fake_study.split_rows(ids, ids, folds=2, valid_is_test=False), "valid")
    loss = {"emotion_weight": 1.0, "gender_weight": 0.0, "center_weight": 0.0}
    experiments = {"ssl": {"protocol": "honest", "features": {"train": "iemocap-ssl", "test": "iemocap-ssl"},
                           "model": "baselines/ssl.py", "variant": "ssl", "group": "baseline", "folds": [0],
                           "train": {"loss": loss}}}
    training = {**fake_study.TINY_TRAIN, "epochs": 10, "lr": 1.0e-2, "lr_drop_epochs": [8]}
    fake_study.write_params(tmp_path / "params.yaml", train=training, experiments=experiments)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["profiles"]["tiny"]["baselines"] = {"baselines/ssl.py": {"layers": LAYERS, "dim": DIM, "projection": 8}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    config = train.load_config("ssl")
    assert config.model_params == ssl.SslHeadParams(layers=LAYERS, dim=DIM, projection=8)
    assert cli.main(["train", "--experiment", "ssl"]) == 0
    unit = tmp_path / "artifacts/runs/ssl/seed_7/fold_0"
    assert (unit / "done").is_file()
    result = json.loads((unit / "result.json").read_text())
    assert result["model"] == "baselines/ssl.py" and result["test"]["n"] == 160
    assert result["test"]["wa"] > 75.0 and result["test"]["ua"] > 75.0  # chance: 25
    # The selected weights lean towards the one hidden state the classes show in.
    checkpoint = torch.load(unit / "checkpoint.pt", weights_only=True)
    model = ssl.build(ssl.SslHeadParams(**checkpoint["model_params"]))
    model.load_state_dict(checkpoint["state_dict"])
    assert model.layer_weights.argmax() == INFORMATIVE


def frame_batch(n: int = 6, frames: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns static (n, 1, LAYERS x DIM, frames) zero beyond each row's valid frames, dynamic (n, frames,
    LAYERS x DIM + 1) as UtteranceDataset hands a frame-level file over (mask last), and the hidden states
    (n, LAYERS, frames, DIM)."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, LAYERS, frames, DIM, generator=gen)
    valid = torch.arange(n) % frames + 1
    mask = (torch.arange(frames)[None, :] < valid[:, None]).float()
    hidden = hidden * mask[:, None, :, None]
    static = hidden.transpose(2, 3).reshape(n, 1, LAYERS * DIM, frames)
    dynamic = torch.cat([static.squeeze(1), mask[:, None, :]], 1).transpose(1, 2)
    return static, dynamic, hidden


def test_frame_level_input_without_layer_norm_gives_the_pooled_result():
    torch.manual_seed(0)
    model = ssl.build(SMALL).eval()
    with torch.no_grad():
        model.layer_logits.copy_(torch.randn(LAYERS))
    static, dynamic, hidden = frame_batch()
    valid = dynamic[..., -1].sum(1)
    pooled = hidden.sum(2) / valid[:, None, None]  # (n, LAYERS, DIM): what ssl_cache pooled stores
    frame_out, pooled_out = model(static, dynamic), model(pooled[:, None], pooled.transpose(1, 2))
    torch.testing.assert_close(frame_out.fused, pooled_out.fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(frame_out.emotion, pooled_out.emotion, atol=1e-5, rtol=1e-5)


def test_padding_frames_do_not_move_the_output():
    model = ssl.build(dataclasses.replace(SMALL, layer_norm=True)).eval()
    static, dynamic, _ = frame_batch()
    noisy = static.clone()
    padding = dynamic[..., -1] == 0  # (n, frames)
    noisy[padding[:, None, None, :].expand_as(noisy)] = 5.0
    torch.testing.assert_close(model(noisy, dynamic).emotion, model(static, dynamic).emotion)


def test_layer_norm_normalises_each_frame_and_needs_frames():
    torch.manual_seed(0)
    model = ssl.build(dataclasses.replace(SMALL, layer_norm=True))
    static, dynamic, hidden = frame_batch()
    out = model(static, dynamic)
    # Scaling one utterance's hidden states leaves its layer-normed frames, and so its logits, where they were.
    scaled = static.clone()
    scaled[0] *= 10.0
    scaled_dynamic = torch.cat([scaled.squeeze(1), dynamic[..., -1:].transpose(1, 2)], 1).transpose(1, 2)
    torch.testing.assert_close(model(scaled, scaled_dynamic).emotion[0], out.emotion[0], atol=1e-4, rtol=1e-4)
    out.emotion.sum().backward()
    assert model.layer_logits.grad is not None and model.layer_logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="layer_norm .*needs frame-level features"):
        model(*batch())


def test_frame_level_input_without_its_mask_is_refused():
    static, dynamic, _ = frame_batch()
    with pytest.raises(ValueError, match="valid-frame mask as dynamic's last column"):
        ssl.build(SMALL)(static, dynamic[..., :-1])

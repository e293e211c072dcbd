import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sdcaff import cli
from sdcaff.errors import ParamsError
from sdcaff.losses import LossParams, MultiTaskLoss, scale_center_grads
from sdcaff.model import ModelParams, build, load_params
from sdcaff.model.dyrelu import DyReLUB
from sdcaff.model.fusion import KINDS, Concat, CrossAFF
from sdcaff.model.pooling import adaptive_average
from sdcaff.model.sdcaff import component_parameters, count_parameters, static_shape

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def quick() -> ModelParams:
    return load_params("quick", REPO_PARAMS)[1]


def inputs(p: ModelParams, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    static = torch.randn(batch, 1, p.n_mfcc, p.frames, generator=gen)
    dynamic = torch.randn(batch, p.frames, 3 * p.n_mfcc, generator=gen)
    return static, dynamic


def randomise_batch_norms(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Gives every BN non-trivial running stats and affine weights, so eval-mode BN is a real check."""
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen))
            bn.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.weight.data.copy_(torch.randn(n, generator=gen))
            bn.bias.data.copy_(torch.randn(n, generator=gen))


# --- the published model --------------------------------------------------------------------------


def test_paper_profile_is_the_default_params():
    name, p = load_params("paper", REPO_PARAMS)
    assert name == "paper"
    assert p == ModelParams()


def test_paper_parameter_counts_match_the_spec():
    torch.manual_seed(0)
    model = build(ModelParams())
    # spec "Model": counted from the authors' modules.
    assert component_parameters(model) == {"cnn": 227_554, "lstm": 4_939_776, "fusion": 26_112, "heads": 2_316}
    assert count_parameters(model) == 5_195_758
    assert count_parameters(MultiTaskLoss(LossParams(), n_classes=4)) == 20


def test_paper_branch_shapes():
    torch.manual_seed(0)
    p = ModelParams()
    model = build(p).eval()
    static, dynamic = inputs(p, batch=2)
    with torch.no_grad():
        static_map, dynamic_map = model.branch_maps(static, dynamic)
        out = model(static, dynamic)
    assert static_map.shape == (2, 128, 7, 31) and static_shape(p) == (128, 7, 31)
    assert dynamic_map.shape == (2, 64, 1, 251)
    assert out.fused.shape == (2, 192)
    assert out.emotion.shape == out.emotion_center.shape == (2, 4)
    assert out.gender.shape == out.gender_center.shape == (2, 2)


def test_quick_branch_shapes(quick):
    torch.manual_seed(0)
    model = build(quick).eval()
    static, dynamic = inputs(quick, batch=2)
    with torch.no_grad():
        static_map, dynamic_map = model.branch_maps(static, dynamic)
        out = model(static, dynamic)
    # One pool more than the paper, and all four before the first four convs: 3 x 15 maps, not 7 x 31.
    assert static_map.shape == (2, 32, 3, 15) and static_shape(quick) == (32, 3, 15)
    assert dynamic_map.shape == (2, 16, 1, 125)  # the LSTM reads frame pairs (lstm_stride 2)
    assert out.fused.shape == (2, 48)
    # Widths shrink, one pool is added; the same layers, input and fusion as the paper.
    paper = ModelParams()
    assert quick.pool_before == (0, 1, 2, 3) and len(quick.pool_before) == len(paper.pool_before) + 1
    assert (quick.lstm_stride, paper.lstm_stride) == (2, 1)
    same = ("n_mfcc", "frames", "first_padding", "dyrelu", "lstm_input", "fusion", "branches")
    assert all(getattr(quick, f) == getattr(paper, f) for f in same)
    assert len(quick.cnn_channels) == len(paper.cnn_channels)


# --- dynamic ReLU ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3])
def test_dyrelu_matches_the_formula(k):
    torch.manual_seed(0)
    act = DyReLUB(8, k=k, reduction=4)
    x = torch.randn(3, 8, 5, 6)
    # y_c = max_j (a_c^j x_c + b_c^j), a = alpha + 1.0 * r, b = beta + 0.5 * r, alpha = [1, 0..], beta = 0.
    context = x.mean(dim=(2, 3))
    hidden = torch.relu(context @ act.fc1.weight.T + act.fc1.bias)
    residual = (2 * torch.sigmoid(hidden @ act.fc2.weight.T + act.fc2.bias) - 1).view(3, 8, 2 * k)
    alpha = torch.tensor([1.0] + [0.0] * (k - 1))
    slopes = alpha + 1.0 * residual[..., :k]
    intercepts = 0.5 * residual[..., k:]
    pieces = x[..., None] * slopes[:, :, None, None, :] + intercepts[:, :, None, None, :]
    expected = pieces.max(dim=-1).values
    torch.testing.assert_close(act(x), expected, rtol=1e-5, atol=1e-6)


def test_dyrelu_starts_as_relu_when_the_coefficient_net_is_silent():
    act = DyReLUB(4)
    torch.nn.init.zeros_(act.fc2.weight)
    torch.nn.init.zeros_(act.fc2.bias)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(act(x), torch.relu(x))


def test_dyrelu_gradients_match_finite_differences():
    torch.manual_seed(1)
    act = DyReLUB(4).double()
    x = torch.randn(2, 4, 3, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(act, (x,))


# --- Cross AFF -------------------------------------------------------------------------------------


def context(x: torch.Tensor, seq: torch.nn.Sequential, pool: bool) -> torch.Tensor:
    """Direct recomputation of an AFF context: [pool] -> 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN (eval)."""
    layers = [m for m in seq if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    conv1, bn1, conv2, bn2 = layers
    if pool:
        x = x.mean(dim=(2, 3), keepdim=True)

    def conv(v, c):
        return torch.einsum("oc,bchw->bohw", c.weight[:, :, 0, 0], v) + c.bias[:, None, None]

    def norm(v, b):
        scale = b.weight / torch.sqrt(b.running_var + b.eps)
        return (v - b.running_mean[:, None, None]) * scale[:, None, None] + b.bias[:, None, None]

    return norm(conv(torch.relu(norm(conv(x, conv1), bn1)), conv2), bn2)


def test_cross_aff_matches_the_spec_formula():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    fusion = CrossAFF(static_channels=6, dynamic_channels=4, inner=3)
    randomise_batch_norms(fusion, gen)
    fusion.eval()
    static = torch.randn(2, 6, 3, 5, generator=gen)
    dynamic = torch.randn(2, 4, 1, 7, generator=gen)
    # static gate = sigmoid(local(static) + global(dynamic)); dynamic gate: the swap.
    static_gate = torch.sigmoid(
        context(static, fusion.static_local, pool=False) + context(dynamic, fusion.dynamic_global, pool=True)
    )
    dynamic_gate = torch.sigmoid(
        context(dynamic, fusion.dynamic_local, pool=False) + context(static, fusion.static_global, pool=True)
    )
    expected = torch.cat([(static * static_gate).mean(dim=(2, 3)), (dynamic * dynamic_gate).mean(dim=(2, 3))], 1)
    with torch.no_grad():
        got_static_gate, got_dynamic_gate = fusion.gates(static, dynamic)
        got = fusion(static, dynamic)
    torch.testing.assert_close(got_static_gate, static_gate, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_dynamic_gate, dynamic_gate, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.shape == (2, 10)


def test_cross_aff_mixes_branches_where_concat_does_not():
    torch.manual_seed(0)
    cross = CrossAFF(6, 4, 3).eval()
    static = torch.randn(2, 6, 3, 5)
    dynamic = torch.randn(2, 4, 1, 7)
    other = dynamic + torch.randn_like(dynamic)
    with torch.no_grad():
        # The static half depends on the dynamic branch only through the swapped global context.
        assert not torch.allclose(cross(static, dynamic)[:, :6], cross(static, other)[:, :6])
        concat = Concat(6, 4)
        torch.testing.assert_close(concat(static, dynamic)[:, :6], concat(static, other)[:, :6])


@pytest.mark.parametrize("length, size", [(1024, 64), (32, 16), (251, 31), (251, 7), (5, 7)])
def test_adaptive_average_matches_torchs_adaptive_pool(length, size):
    x = torch.randn(2, 3, length)
    torch.testing.assert_close(adaptive_average(x, size), F.adaptive_avg_pool1d(x, size))


# --- every switch builds, runs and trains ----------------------------------------------------------

VARIANTS = [
    *[({"fusion": kind}, 32 if kind in ("aff", "iaff", "add") else 48) for kind in KINDS],
    ({"branches": "cnn", "fusion": "concat"}, 32),
    ({"branches": "lstm", "fusion": "concat"}, 16),
    ({"dyrelu": False}, 48),
    ({"lstm_input": "mfcc"}, 48),
    ({"lstm_input": "weighted"}, 48),
    ({"gender_head": False}, 48),
]


@pytest.mark.parametrize("change, fused", VARIANTS, ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v))
def test_every_variant_builds_runs_and_backpropagates(quick, change, fused):
    torch.manual_seed(0)
    p = dataclasses.replace(quick, **change)
    model = build(p).train()
    loss_fn = MultiTaskLoss(LossParams(gender_weight=0.3 if p.gender_head else 0.0), p.n_classes)
    static, dynamic = inputs(p, batch=3)
    out = model(static, dynamic)
    assert out.fused.shape == (3, fused)
    assert out.emotion.shape == (3, 4)
    assert (out.gender is None) == (not p.gender_head)
    loss = loss_fn(out, torch.tensor([0, 1, 3]), torch.tensor([0, 1, 1])).total
    loss.backward()
    # Every parameter takes part: no module is built and then left out of the forward pass.
    silent = [n for n, t in [*model.named_parameters(), *loss_fn.named_parameters()] if t.grad is None]
    assert silent == []
    assert torch.isfinite(loss)


def test_cross_variants_feed_the_authors_slots(quick):
    torch.manual_seed(0)
    static, dynamic = inputs(quick, batch=2)
    with torch.no_grad():
        ss = build(dataclasses.replace(quick, fusion="ss_cross")).eval()
        dd = build(dataclasses.replace(quick, fusion="dd_cross")).eval()
        ss_maps = ss.branch_maps(static, dynamic)
        dd_maps = dd.branch_maps(static, dynamic)
    # SS: a second CNN reshaped (32, 3, 15) -> (16, 3, 30); DD: an MFCC-only LSTM pooled to 32 channels.
    assert ss_maps[1].shape == (2, 16, 3, 30)
    torch.testing.assert_close(ss_maps[1], ss.second_cnn(static).reshape(2, 16, 3, 30))
    assert dd_maps[0].shape == (2, 32, 1, 125)  # frame pairs, as the dynamic LSTM (lstm_stride 2)
    assert dd.second_lstm.lstm.input_size == 60 and dd.lstm.lstm.input_size == 180
    assert ss.lstm is None and dd.cnn is None


def test_lstm_input_ablations_read_only_their_part(quick):
    torch.manual_seed(0)
    static, dynamic = inputs(quick, batch=2)
    mfcc, delta, delta_delta = dynamic[..., :60], dynamic[..., 60:120], dynamic[..., 120:]
    weighted = build(dataclasses.replace(quick, lstm_input="weighted"))
    torch.testing.assert_close(weighted.lstm_features(dynamic), 0.7 * mfcc + 0.3 * delta + 0.0 * delta_delta)
    assert weighted.lstm.lstm.input_size == 60
    only_mfcc = build(dataclasses.replace(quick, lstm_input="mfcc")).eval()
    changed = torch.cat([mfcc, delta + 1, delta_delta - 1], dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(only_mfcc(static, dynamic).emotion, only_mfcc(static, changed).emotion)


def test_wrong_input_shapes_are_refused(quick):
    model = build(quick)
    static, dynamic = inputs(quick, batch=1)
    with pytest.raises(ValueError, match="dynamic input must be"):
        model(static, dynamic[..., :60])
    with pytest.raises(ValueError, match="static input must be"):
        model(static.squeeze(1), dynamic)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"branches": "cnn"}, "needs branches 'both'"),
        ({"pool_before": (2, 5)}, "pool_before"),
        ({"fusion": "ss_cross", "lstm_pooled": 7}, "cannot be reshaped"),
        ({"lstm_input_weights": (0.5, 0.5)}, "needs 3 weights"),
        ({"n_mfcc": 8}, "too small"),
    ],
)
def test_inconsistent_params_are_refused(change, message):
    with pytest.raises(ParamsError, match=message):
        build(dataclasses.replace(ModelParams(), **change))


# --- profiles from params.yaml ---------------------------------------------------------------------


def write_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_profile_errors_name_file_and_line(tmp_path):
    good = "profile: small\nprofiles:\n  small:\n    model:\n      lstm_hidden: 8\n"
    assert load_params(path=write_params(tmp_path, good)) == ("small", ModelParams(lstm_hidden=8))
    with pytest.raises(ParamsError, match="unknown profile 'big'; known: small"):
        load_params("big", write_params(tmp_path, good))
    with pytest.raises(ParamsError, match=r"params.yaml:5: unknown key 'profiles.small.model.lstm_size'"):
        load_params(path=write_params(tmp_path, good.replace("lstm_hidden", "lstm_size")))
    inconsistent = good + "      branches: cnn\n"
    with pytest.raises(ParamsError, match=r"params.yaml:4: profiles.small.model: fusion 'cross_aff' needs"):
        load_params(path=write_params(tmp_path, inconsistent))


def test_default_profile_comes_from_profile_yaml_beside_params(tmp_path, monkeypatch, capsys):
    text = "profiles:\n  small:\n    model:\n      lstm_hidden: 8\n  one:\n    model:\n      lstm_hidden: 16\n"
    path = write_params(tmp_path, text)
    (tmp_path / "profile.yaml").write_text("profile: one\n")
    assert load_params(path=path) == ("one", ModelParams(lstm_hidden=16))
    assert load_params("small", path) == ("small", ModelParams(lstm_hidden=8))  # an explicit name still wins
    monkeypatch.setenv("SDCAFF_PARAMS", str(write_params(tmp_path, "profile: small\n" + text)))
    assert cli.main(["model-info"]) == 1
    assert "'profile' is set here and in" in capsys.readouterr().err


# --- learning ----------------------------------------------------------------------------------------


def test_quick_model_overfits_a_tiny_batch(quick):
    torch.manual_seed(0)
    model = build(quick)
    loss_fn = MultiTaskLoss(LossParams(), quick.n_classes)
    lr = 3e-3
    optimiser = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=lr)
    static, dynamic = inputs(quick, batch=6, seed=1)
    emotion = torch.tensor([0, 1, 2, 3, 0, 1])
    gender = torch.tensor([0, 0, 1, 1, 1, 0])
    losses, accuracy = [], 0.0
    for step in range(300):
        model.train()
        parts = loss_fn(model(static, dynamic), emotion, gender)
        optimiser.zero_grad()
        parts.total.backward()
        scale_center_grads(loss_fn, lr)
        optimiser.step()
        losses.append(parts.total.item())
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                accuracy = (model(static, dynamic).emotion.argmax(1) == emotion).float().mean().item()
            if accuracy == 1.0:
                break
    assert accuracy == 1.0
    assert losses[-1] < 0.5 * losses[0]


# --- the verb ------------------------------------------------------------------------------------------


def test_model_info_prints_both_profiles(monkeypatch, capsys, quick):
    monkeypatch.setenv("SDCAFF_PARAMS", str(REPO_PARAMS))
    assert cli.main(["model-info", "--profile", "paper"]) == 0
    paper = json.loads(capsys.readouterr().out)
    assert paper["profile"] == "paper"
    assert paper["params"] == 5_195_758 and paper["center_params"] == 20
    assert paper["static_out"] == [128, 7, 31] and paper["dynamic_out"] == [64, 1, 251] and paper["fused"] == 192

    assert cli.main(["model-info", "--profile", "quick"]) == 0
    small = json.loads(capsys.readouterr().out)
    torch.manual_seed(0)
    assert small["profile"] == "quick" and small["params"] == count_parameters(build(quick))
    assert small["static_out"] == [32, 3, 15] and small["dynamic_out"] == [16, 1, 125] and small["fused"] == 48


def test_model_info_defaults_to_the_params_profile_and_reports_errors(tmp_path, monkeypatch, capsys):
    text = "profile: one\nprofiles:\n  one:\n    model:\n      branches: cnn\n      fusion: concat\n"
    path = write_params(tmp_path, text)
    monkeypatch.setenv("SDCAFF_PARAMS", str(path))
    assert cli.main(["model-info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["profile"] == "one" and info["dynamic_out"] is None and info["fused"] == 128
    assert cli.main(["model-info", "--profile", "two"]) == 1
    assert "unknown profile 'two'" in capsys.readouterr().err


@pytest.mark.gpu
def test_training_steps_on_cuda_are_deterministic(quick):
    """Two seeded steps on CUDA under use_deterministic_algorithms give identical weights."""

    def one_step() -> torch.Tensor:
        torch.manual_seed(0)
        model = build(dataclasses.replace(quick, fusion="iaff")).cuda()
        loss_fn = MultiTaskLoss(LossParams(), quick.n_classes).cuda()
        optimiser = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-3)
        static, dynamic = (t.cuda() for t in inputs(quick, batch=4))
        emotion, gender = torch.tensor([0, 1, 2, 3]).cuda(), torch.tensor([0, 1, 0, 1]).cuda()
        loss_fn(model(static, dynamic), emotion, gender).total.backward()
        scale_center_grads(loss_fn, 1e-3)
        optimiser.step()
        return torch.cat([t.detach().flatten() for t in model.parameters()]).cpu()

    torch.testing.assert_close(one_step(), one_step(), rtol=0, atol=0)


def test_lstm_stride_reads_the_frames_averaged_in_groups(quick):
    # Stride 2 = the same branch fed the mean of each frame pair, the odd last frame dropped.
    torch.manual_seed(0)
    strided = build(dataclasses.replace(quick, lstm_stride=2)).lstm.eval()
    plain = build(dataclasses.replace(quick, lstm_stride=1)).lstm.eval()
    plain.load_state_dict(strided.state_dict())
    x = torch.randn(3, 251, 180)
    pairs = x[:, :250].reshape(3, 125, 2, 180).mean(dim=2)
    with torch.no_grad():
        torch.testing.assert_close(strided(x), plain(pairs), rtol=1e-5, atol=1e-6)
    assert ModelParams(lstm_stride=0).problems() == ["lstm_stride: must be 1..frames (251), got 0"]

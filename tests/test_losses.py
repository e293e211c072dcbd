import pytest
import torch
import torch.nn.functional as F

from sdcaff.errors import ParamsError
from sdcaff.losses import CenterLoss, LossParams, MultiTaskLoss, scale_center_grads
from sdcaff.model import ModelOutput


def fake_output(batch: int = 5, gender: bool = True, seed: int = 0) -> ModelOutput:
    gen = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_()

    return ModelOutput(
        emotion=leaf(batch, 4),
        gender=leaf(batch, 2) if gender else None,
        emotion_center=leaf(batch, 4),
        gender_center=leaf(batch, 2) if gender else None,
        fused=leaf(batch, 8),
    )


EMOTION = torch.tensor([0, 1, 2, 3, 1])
GENDER = torch.tensor([0, 1, 1, 0, 1])


def test_center_loss_is_summed_squared_distance_over_batch():
    torch.manual_seed(0)
    loss = CenterLoss(n_classes=3, feature_dim=2)
    features = torch.randn(4, 2)
    labels = torch.tensor([0, 2, 2, 1])
    # authors' implementation: no 1/2 factor.
    expected = sum(((features[i] - loss.centers[labels[i]]) ** 2).sum() for i in range(4)) / 4
    torch.testing.assert_close(loss(features, labels), expected)


def test_center_loss_gradient_pulls_each_center_to_its_class_mean():
    torch.manual_seed(0)
    loss = CenterLoss(3, 2)
    features = torch.randn(4, 2)
    labels = torch.tensor([0, 2, 2, 1])
    loss(features, labels).backward()
    for j in range(3):
        members = features[labels == j]
        expected = -2 * (members - loss.centers[j].detach()).sum(0) / 4
        torch.testing.assert_close(loss.centers.grad[j], expected)


def test_multitask_total_is_the_authors_weighting():
    torch.manual_seed(0)
    loss = MultiTaskLoss(LossParams(), n_classes=4)
    out = fake_output()
    parts = loss(out, EMOTION, GENDER)
    torch.testing.assert_close(parts.emotion_ce, F.cross_entropy(out.emotion, EMOTION))
    torch.testing.assert_close(parts.gender_ce, F.cross_entropy(out.gender, GENDER))
    torch.testing.assert_close(parts.emotion_center, loss.emotion_centers(out.emotion_center, EMOTION))
    torch.testing.assert_close(parts.gender_center, loss.gender_centers(out.gender_center, GENDER))
    expected = 0.7 * (parts.emotion_ce + 0.15 * parts.emotion_center) + 0.3 * (
        parts.gender_ce + 0.15 * parts.gender_center
    )
    torch.testing.assert_close(parts.total, expected)
    assert loss.emotion_centers.centers.shape == (4, 4) and loss.gender_centers.centers.shape == (2, 2)
    assert sum(t.numel() for t in loss.parameters()) == 20  # spec: 20 center coordinates


def test_switching_terms_off():
    out = fake_output()
    no_center = MultiTaskLoss(LossParams(center_weight=0.0), 4)
    assert list(no_center.parameters()) == []
    parts = no_center(out, EMOTION, GENDER)
    torch.testing.assert_close(parts.total, 0.7 * parts.emotion_ce + 0.3 * parts.gender_ce)

    no_gender = MultiTaskLoss(LossParams(gender_weight=0.0), 4)
    assert no_gender.gender_centers is None and sum(t.numel() for t in no_gender.parameters()) == 16
    parts = no_gender(fake_output(gender=False), EMOTION, GENDER)
    torch.testing.assert_close(parts.total, 0.7 * (parts.emotion_ce + 0.15 * parts.emotion_center))
    assert parts.gender_ce.item() == 0.0


def test_gender_weight_without_a_gender_head_is_an_error():
    with pytest.raises(ParamsError, match="no gender head"):
        MultiTaskLoss(LossParams(), 4)(fake_output(gender=False), EMOTION, GENDER)


def test_center_gradient_rescaling_touches_only_the_emotion_centers():
    torch.manual_seed(0)
    loss = MultiTaskLoss(LossParams(), 4)
    loss(fake_output(), EMOTION, GENDER).total.backward()
    emotion_before = loss.emotion_centers.centers.grad.clone()
    gender_before = loss.gender_centers.centers.grad.clone()
    lr = 5e-4
    scale_center_grads(loss, lr)
    # authors' code: grad *= lr_cent / (center_rate * lr) = 0.1 / (0.15 * 5e-4).
    torch.testing.assert_close(loss.emotion_centers.centers.grad, emotion_before * (0.1 / (0.15 * lr)))
    torch.testing.assert_close(loss.gender_centers.centers.grad, gender_before)


def test_rescaled_centers_move_at_the_center_rate_under_sgd():
    torch.manual_seed(0)
    loss = MultiTaskLoss(LossParams(), 4)
    out = fake_output()
    lr = 5e-4
    centers = loss.emotion_centers.centers
    # Gradient of the unweighted emotion center loss alone, for comparison.
    raw = torch.autograd.grad(loss.emotion_centers(out.emotion_center, EMOTION), centers)[0]
    before = centers.detach().clone()
    optimiser = torch.optim.SGD(loss.parameters(), lr=lr)
    loss(out, EMOTION, GENDER).total.backward()
    scale_center_grads(loss, lr)
    optimiser.step()
    # The step is lr_cent times the emotion weight (0.7) times the raw gradient, whatever lr is.
    torch.testing.assert_close(centers.detach(), before - 0.1 * 0.7 * raw)


def test_rescaling_without_centers_is_a_no_op():
    loss = MultiTaskLoss(LossParams(center_weight=0.0), 4)
    scale_center_grads(loss, 5e-4)
    assert loss.emotion_centers is None

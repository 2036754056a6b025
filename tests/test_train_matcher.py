"""Hungarian matcher and set losses on constructed cases."""

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from ovseg.train.losses import LossConfig, SetCriterion, dice_loss, sigmoid_ce_loss
from ovseg.train.matcher import batch_dice_cost, batch_sigmoid_ce_cost, hungarian_match


def test_costs_against_direct_formulas():
    rng = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, generator=rng, dtype=torch.float64)
    targets = (torch.rand(2, 7, generator=rng) > 0.5).double()
    ce = batch_sigmoid_ce_cost(logits, targets)
    dice = batch_dice_cost(logits, targets)
    for q, n in itertools.product(range(3), range(2)):
        p = torch.sigmoid(logits[q])
        t = targets[n]
        expected_ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()
        expected_dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        assert abs(ce[q, n] - expected_ce) < 1e-12
        assert abs(dice[q, n] - expected_dice) < 1e-12


def brute_force_assignment(cost: np.ndarray) -> float:
    queries, targets = cost.shape
    return min(
        sum(cost[p[j], j] for j in range(targets))
        for p in itertools.permutations(range(queries), targets)
    )


def test_matcher_matches_scipy_and_brute_force():
    """Masks that are constant over the image make the point-sampled costs exact, so the
    total cost matrix can be built independently here."""
    torch.manual_seed(0)
    queries, classes, targets = 5, 3, 3
    logits = torch.randn(1, queries, classes + 1)
    levels = torch.randn(queries)
    pred_masks = levels.view(1, queries, 1, 1).expand(1, queries, 4, 4).contiguous()
    gt_values = torch.tensor([1.0, 0.0, 1.0])
    gt_masks = gt_values.view(targets, 1, 1).expand(targets, 8, 8).contiguous()
    labels = torch.tensor([2, 0, 1])
    matches = hungarian_match(
        logits, pred_masks, [{"labels": labels, "masks": gt_masks}], num_points=16
    )
    probs = logits[0].softmax(-1)
    p = torch.sigmoid(levels)[:, None]
    t = gt_values[None, :]
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    dice = 1 - (2 * 16 * p * t + 1) / (16 * p + 16 * t + 1)
    cost = (5 * ce + 2 * -probs[:, labels] + 5 * dice).numpy()
    rows, cols = linear_sum_assignment(cost)
    pred_index, target_index = matches[0]
    assert pred_index.tolist() == rows.tolist() and target_index.tolist() == cols.tolist()
    chosen = cost[pred_index.numpy(), target_index.numpy()].sum()
    assert abs(chosen - brute_force_assignment(cost)) < 1e-5


def test_matcher_with_no_targets():
    matches = hungarian_match(
        torch.randn(1, 4, 3),
        torch.randn(1, 4, 8, 8),
        [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8)}],
    )
    assert matches[0][0].numel() == 0 and matches[0][1].numel() == 0


def test_losses_hand_computed():
    logits = torch.tensor([[2.0, -1.0], [0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    sig = torch.sigmoid(logits)
    bce = -(labels * sig.log() + (1 - labels) * (1 - sig).log()).mean(1).sum() / 2
    assert torch.allclose(sigmoid_ce_loss(logits, labels, 2.0), bce)
    dice = (1 - (2 * (sig * labels).sum(1) + 1) / (sig.sum(1) + labels.sum(1) + 1)).sum() / 2
    assert torch.allclose(dice_loss(logits, labels, 2.0), dice)


def test_criterion_terms_and_no_object_weight():
    criterion = SetCriterion(2, LossConfig(num_points=64))
    torch.manual_seed(0)
    outputs = {
        "pred_logits": torch.randn(1, 3, 3, requires_grad=True),
        "pred_masks": torch.randn(1, 3, 8, 8, requires_grad=True),
    }
    outputs["aux_outputs"] = [
        {"pred_logits": outputs["pred_logits"] * 2, "pred_masks": outputs["pred_masks"]}
    ]
    mask = torch.zeros(1, 16, 16)
    mask[0, :8] = 1
    targets = [{"labels": torch.tensor([1]), "masks": mask}]
    losses = criterion(
        outputs, targets, num_masks=1.0, generators=[torch.Generator().manual_seed(1)]
    )
    assert set(losses) == {
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_ce_0",
        "loss_mask_0",
        "loss_dice_0",
    }
    # Cross-entropy by hand: the matched query targets class 1 (weight 1), the others void (0.1).
    matched = int(
        hungarian_match(
            outputs["pred_logits"],
            outputs["pred_masks"],
            targets,
            num_points=64,
            generators=[torch.Generator().manual_seed(1)],
        )[0][0][0]
    )
    log_probs = outputs["pred_logits"][0].log_softmax(-1)
    weights = torch.tensor([1.0 if q == matched else 0.1 for q in range(3)])
    nll = torch.stack([-log_probs[q, 1 if q == matched else 2] for q in range(3)])
    expected = (weights * nll).sum() / weights.sum()
    assert torch.allclose(losses["loss_ce"], expected, atol=1e-6)
    assert criterion.class_weight_sum(3, 1, 1) == pytest.approx(float(weights.sum()))
    total = criterion.total(losses)
    total.backward()
    assert outputs["pred_masks"].grad.abs().sum() > 0


def test_weighted_losses_and_costs():
    """Unit weights change nothing; zero weights leave points out of losses and costs."""
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 10), (torch.rand(3, 10) > 0.5).float()
    ones = torch.ones(3, 10)
    assert torch.allclose(
        sigmoid_ce_loss(logits, labels, 2.0, ones), sigmoid_ce_loss(logits, labels, 2.0)
    )
    assert torch.allclose(dice_loss(logits, labels, 2.0, ones), dice_loss(logits, labels, 2.0))
    keep = torch.zeros(10)
    keep[:6] = 1
    weights = keep.expand(3, -1)
    for loss in (sigmoid_ce_loss, dice_loss):
        assert torch.allclose(
            loss(logits, labels, 2.0, weights), loss(logits[:, :6], labels[:, :6], 2.0)
        )
    targets = labels[:2]
    for cost in (batch_sigmoid_ce_cost, batch_dice_cost):
        assert torch.allclose(cost(logits, targets, torch.ones(10)), cost(logits, targets))
        assert torch.allclose(cost(logits, targets, keep), cost(logits[:, :6], targets[:, :6]))


def test_ignore_void_leaves_unlabeled_pixels_out_of_the_mask_losses():
    """A mask right on the labelled half and wrong on the void half: (almost) no mask loss
    with ignore_void, a large one without (the official recipe: void is the mask's
    background)."""
    mask = torch.zeros(1, 64, 64)
    mask[0, :, :32] = 1  # the target; columns 32.. are void (under no target)
    pred = torch.full((1, 1, 64, 64), 8.0)  # positive everywhere, void included
    outputs = {"pred_logits": torch.tensor([[[4.0, -4.0]]]), "pred_masks": pred}
    targets = [{"labels": torch.tensor([0]), "masks": mask}]
    losses = {}
    for ignore in (False, True):
        criterion = SetCriterion(1, LossConfig(num_points=256, ignore_void=ignore))
        losses[ignore] = criterion(
            outputs, targets, num_masks=1.0, generators=[torch.Generator().manual_seed(0)]
        )
    for term in ("loss_mask", "loss_dice"):  # what is left: soft labels on the boundary
        assert losses[True][term] < 0.1 * losses[False][term]
    assert losses[False]["loss_mask"] > 1.0


def _void_aware_case():
    """3 queries on a 16 x 16 image (8 x 8 mask logits): one target on the left half; query
    0 covers the left half, 1 the right half (void), 2 the bottom-right corner, which is
    padding (``valid`` False)."""
    masks = torch.full((1, 3, 8, 8), -5.0)
    masks[0, 0, :, :4] = 5.0
    masks[0, 1, :, 4:] = 5.0
    masks[0, 2, 6:, 6:] = 5.0
    target = torch.zeros(1, 16, 16)
    target[0, :, :8] = 1
    valid = torch.ones(16, 16, dtype=torch.bool)
    valid[12:, 12:] = False
    logits = torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(0))
    targets = [{"labels": torch.tensor([1]), "masks": target, "valid": valid}]
    return {"pred_logits": logits, "pred_masks": masks}, targets


def test_void_aware_no_object_skips_unmatched_queries_on_void_only():
    outputs, targets = _void_aware_case()
    criterion = SetCriterion(2, LossConfig(num_points=64, void_aware_no_object=True))
    matches = [(torch.tensor([0]), torch.tensor([0]))]
    void = criterion.void_queries(outputs["pred_masks"], targets, matches)
    assert void.tolist() == [[False, True, False]]  # matched / on void / on padding
    # a matched query on void is still trained as its target
    on_void = [(torch.tensor([1]), torch.tensor([0]))]
    assert criterion.void_queries(outputs["pred_masks"], targets, on_void).tolist() == [
        [False, False, False]
    ]
    # without ``valid`` the padding corner counts as void too
    no_valid = [{k: v for k, v in targets[0].items() if k != "valid"}]
    assert criterion.void_queries(outputs["pred_masks"], no_valid, matches)[0, 2]


def test_void_aware_no_object_drops_exactly_that_querys_cross_entropy():
    outputs, targets = _void_aware_case()
    generators = [torch.Generator().manual_seed(1)]
    plain = SetCriterion(2, LossConfig(num_points=64))(
        outputs, targets, num_masks=1.0, class_weight_total=1.2, generators=generators
    )
    generators = [torch.Generator().manual_seed(1)]
    aware = SetCriterion(2, LossConfig(num_points=64, void_aware_no_object=True))(
        outputs, targets, num_masks=1.0, class_weight_total=1.2, generators=generators
    )
    # the matcher puts query 0 on the target; query 1 (on void) loses its no-object term
    log_probs = outputs["pred_logits"][0].log_softmax(-1)
    dropped = 0.1 * -log_probs[1, 2] / 1.2
    assert torch.allclose(plain["loss_ce"] - aware["loss_ce"], dropped, atol=1e-6)
    assert torch.equal(plain["loss_mask"], aware["loss_mask"])

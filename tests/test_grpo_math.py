"""GRPO maths on small hand-checked tensors: advantages, filters, the clipped surrogate, KL, masking, aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from orchestra.train.grpo import (
    clipped_surrogate_loss,
    group_advantages,
    group_keep_mask,
    group_stats,
    k3_kl,
    token_logprobs,
)

# ---- advantages and filters -----------------------------------------------------------------------------------


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    # group 0: mean .5, sample std sqrt((4 * .25) / 3) = sqrt(1/3): A = +-.5 * sqrt(3)
    expected = 0.5 * math.sqrt(3)
    adv = group_advantages(rewards, eps=0.0)
    assert torch.allclose(adv[0], torch.tensor([expected, -expected, -expected, expected]))
    assert torch.equal(adv[1], torch.zeros(4))


def test_constant_group_advantage_is_exactly_zero():
    # 0.1 is not exact in binary: a naive (R - mean) / (std + eps) gives rounding noise / eps, not 0.
    rewards = torch.full((1, 3), 0.1)
    assert torch.equal(group_advantages(rewards), torch.zeros(1, 3))
    assert torch.equal(group_advantages(torch.tensor([[0.1, 0.1, 0.1]], dtype=torch.float64)),
                       torch.zeros(1, 3, dtype=torch.float64))


def test_invalid_rollouts_are_left_out_of_the_group_statistics():
    rewards = torch.tensor([[1.0, 0.0, 5.0, 0.0]])
    valid = torch.tensor([[True, True, False, True]])
    # valid rewards 1, 0, 0: mean 1/3, sample std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    adv = group_advantages(rewards, valid, eps=0.0)
    s = math.sqrt(1 / 3)
    assert torch.allclose(adv, torch.tensor([[(2 / 3) / s, -(1 / 3) / s, 0.0, -(1 / 3) / s]]))


def test_group_filter_by_std_and_valid_count():
    rewards = torch.tensor([
        [0.0, 0.1, 0.0, 0.1],  # sample std 0.0577 < 0.1: dropped
        [0.0, 0.3, 0.0, 0.3],  # std 0.173: kept
        [1.0, 0.0, 1.0, 0.0],  # std 0.577 but only one valid rollout: dropped
        [0.5, 0.5, 0.5, 0.5],  # constant: dropped
    ])
    valid = torch.ones_like(rewards, dtype=torch.bool)
    valid[2, 1:] = False
    assert group_keep_mask(rewards, valid).tolist() == [False, True, False, False]
    assert group_keep_mask(rewards, valid, min_std=0.05).tolist() == [True, True, False, False]


def test_group_stats_combines_both_filters():
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.05, 0.0, 0.05]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    stats = group_stats(rewards, valid)
    assert stats.keep.tolist() == [[True, True, True, False], [False] * 4]
    assert torch.equal(stats.advantages[1], torch.zeros(4))
    assert stats.advantages[0, 3] == 0.0 and stats.advantages[0, 0] > 0 > stats.advantages[0, 1]
    assert stats.group_std[0] == pytest.approx(math.sqrt(1 / 3))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4))
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.bool))


# ---- the clipped surrogate ------------------------------------------------------------------------------------


def _grad_at(ratio: float, advantage: float, **kwargs) -> float:
    """d loss / d logprob of one token whose probability ratio is `ratio`."""
    old = torch.tensor([[-1.0]])
    logprobs = (old + math.log(ratio)).requires_grad_(True)
    out = clipped_surrogate_loss(logprobs, old, torch.tensor([advantage]), torch.ones(1, 1), **kwargs)
    out.loss.backward()
    return float(logprobs.grad.item())


@pytest.mark.parametrize(
    ("ratio", "advantage", "clipped"),
    [
        (1.5, 1.0, True),    # above 1 + eps_high with A > 0: no push further up
        (1.25, 1.0, False),  # inside the high clip 1.28 (but beyond a symmetric 1.2): still learns
        (0.5, -1.0, True),   # below 1 - eps_low with A < 0: no push further down
        (0.5, 1.0, False),   # below the range with A > 0: the unclipped branch is smaller, gradient flows
        (1.5, -1.0, False),  # above the range with A < 0: gradient flows
        (1.0, 1.0, False),
    ],
)
def test_clip_zeroes_the_gradient_only_outside_the_trust_region(ratio, advantage, clipped):
    grad = _grad_at(ratio, advantage)
    if clipped:
        assert grad == 0.0
    else:
        # d/dlogp of -(r * A) = -A * r  (one token, token-mean over 1)
        assert grad == pytest.approx(-advantage * ratio, rel=1e-5)


def test_asymmetric_clip_bounds():
    assert _grad_at(1.25, 1.0, eps_high=0.2) == 0.0  # a symmetric clip would stop here
    assert _grad_at(0.85, -1.0) != 0.0
    assert _grad_at(0.75, -1.0) == 0.0


def test_masked_tokens_get_zero_gradient_even_when_nan():
    old = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    values = torch.tensor([[-0.9, float("nan"), -float("inf")], [-1.1, -1.0, float("nan")]])
    logprobs = values.clone().requires_grad_(True)
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]])
    ref = torch.tensor([[-1.0, float("nan"), 0.0], [-1.0, -1.0, float("nan")]])
    out = clipped_surrogate_loss(logprobs, old, torch.tensor([1.0, -1.0]), mask, ref_logprobs=ref, beta=0.1)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert logprobs.grad[0, 1:].tolist() == [0.0, 0.0] and logprobs.grad[1, 2] == 0.0
    assert torch.isfinite(logprobs.grad).all()
    assert out.num_tokens == 3


def test_loss_value_by_hand_and_token_mean_aggregation():
    # sequence 0 has 1 counted token with A = +1, sequence 1 has 3 with A = -1; every ratio is 1.
    logprobs = torch.full((2, 3), -1.0)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    out = clipped_surrogate_loss(logprobs, logprobs.clone(), torch.tensor([1.0, -1.0]), mask)
    # token-mean: (-1 + 3 * 1) / 4 = .5   (a sequence-mean would give (-1 + 1) / 2 = 0)
    assert out.loss.item() == pytest.approx(0.5)
    assert out.kl.item() == 0.0 and out.clip_fraction.item() == 0.0


def test_micro_batches_with_the_batch_token_count_sum_to_the_full_loss():
    torch.manual_seed(0)
    logprobs = torch.randn(4, 5) - 2
    old = logprobs + 0.3 * torch.randn(4, 5)
    adv = torch.randn(4)
    mask = torch.rand(4, 5) > 0.3
    full = clipped_surrogate_loss(logprobs, old, adv, mask).loss
    total = int(mask.sum())
    parts = [clipped_surrogate_loss(logprobs[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2], num_tokens=total)
             for i in (0, 2)]
    assert (parts[0].loss + parts[1].loss).item() == pytest.approx(full.item(), rel=1e-6)


def test_an_empty_mask_gives_zero_loss_with_a_gradient_path():
    logprobs = torch.zeros(1, 2, requires_grad=True)
    out = clipped_surrogate_loss(logprobs, torch.zeros(1, 2), torch.tensor([1.0]), torch.zeros(1, 2))
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.equal(logprobs.grad, torch.zeros(1, 2))


def test_kl_penalty_value_and_gradient():
    # logp = 0, ref = log 2: k3 = 2 - log 2 - 1; d k3 / d logp = 1 - exp(ref - logp) = -1
    assert k3_kl(torch.tensor(0.0), torch.tensor(math.log(2))).item() == pytest.approx(1 - math.log(2))
    assert k3_kl(torch.tensor(-3.0), torch.tensor(-3.0)).item() == 0.0
    logprobs = torch.zeros(1, 1, requires_grad=True)
    beta = 0.5
    out = clipped_surrogate_loss(logprobs, torch.zeros(1, 1), torch.tensor([0.0]), torch.ones(1, 1),
                                 ref_logprobs=torch.full((1, 1), math.log(2)), beta=beta)
    out.loss.backward()
    assert out.kl.item() == pytest.approx(1 - math.log(2))
    assert out.loss.item() == pytest.approx(beta * (1 - math.log(2)))
    assert logprobs.grad.item() == pytest.approx(-beta)


def test_clip_fraction_counts_clipped_tokens():
    old = torch.zeros(1, 4)
    logprobs = torch.log(torch.tensor([[1.5, 1.0, 0.5, 1.1]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    out = clipped_surrogate_loss(logprobs, old, adv, torch.ones(1, 4))
    assert out.clip_fraction.item() == pytest.approx(0.5)


def test_token_logprobs_match_log_softmax():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 7, dtype=torch.bfloat16)
    ids = torch.randint(0, 7, (2, 3))
    expected = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None]).squeeze(-1)
    got = token_logprobs(logits, ids)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-6)

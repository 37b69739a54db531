"""GRPO maths as pure torch functions: group advantages, the two filters, the clipped surrogate loss with KL.

Shapes use G = groups (tasks) per step, N = rollouts per group (group size), B = sequences in a (micro-)batch,
T = tokens per sequence, V = vocabulary. Rewards are unitless (the preference reward of `orchestra.rewards`);
log-probabilities are natural logs of the probability of the sampled token.

Decisions (and where they depart from the paper, REFERENCE.md section 3)
- Advantage: A = (R - mean_T R) / (std_T R + eps), computed over the group's valid rollouts only. The std is the
  sample std (Bessel-corrected), as TRL's GRPOTrainer and verl compute it, so the 0.1 filter threshold means the same
  thing in either trainer. A group whose valid rewards are all equal gets exactly 0 (not rounding noise / eps).
- Rollout filter (format errors, no valid answer: `orchestra.rewards.is_valid_rollout`): a dropped rollout is left
  out of its group's mean and std and out of the loss; it is not turned into a negative example.
- Group filter: a group is dropped when the std of its valid rewards is below `min_std` (default 0.1) or when fewer
  than two of its rollouts are valid (no comparison is possible).
- Loss: PPO-style clipped surrogate with an asymmetric clip (eps_low 0.2, eps_high 0.28: the ratio may rise further
  than it may fall, which keeps rare good tokens learnable), per token, plus beta * k3 KL against a reference policy
  in the loss (not in the reward), beta 1e-4.
- Aggregation: token-mean over the batch: sum over every counted token of every sequence, divided by the number of
  counted tokens. Every model-written token weighs the same whatever the length of its rollout; a sequence-mean would
  weigh the tokens of short rollouts more. When a batch is split into micro-batches, pass the whole batch's token
  count as `num_tokens` so that the sum of the micro-batch losses equals the full-batch loss.
- Only model-sampled tokens count: the env mask is 1 on tokens the policy wrote and 0 on prompt, tool-output and
  padding tokens. Masked positions never reach the loss or its gradient, even if their log-probs are -inf or NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

EPS_LOW = 0.2
EPS_HIGH = 0.28
KL_BETA = 1e-4
MIN_GROUP_STD = 0.1


@dataclass(frozen=True)
class GroupStats:
    """What the rewards of one step turn into: per-rollout advantages and which rollouts train."""

    advantages: Tensor
    """(G, N) float: the group-normalized advantage; 0 where `keep` is False."""
    keep: Tensor
    """(G, N) bool: the rollout is valid and its group passed the std filter."""
    group_std: Tensor
    """(G,) float: the sample std of each group's valid rewards (0 with fewer than two valid)."""


@dataclass(frozen=True)
class LossOutput:
    """The loss to backpropagate and its diagnostics (detached)."""

    loss: Tensor
    """() float: policy loss + beta * KL, token-mean; carries the gradient."""
    policy_loss: Tensor
    """() float: the clipped-surrogate part alone."""
    kl: Tensor
    """() float: mean k3 KL per counted token (0 without reference log-probs)."""
    clip_fraction: Tensor
    """() float: share of counted tokens whose clipped branch was active (their gradient is zero)."""
    num_tokens: int
    """Counted (model-written) tokens in this batch."""


def group_advantages(rewards: Tensor, valid: Tensor | None = None, *, eps: float = 1e-6) -> Tensor:
    """A = (R - mean) / (std + eps) per group over its valid rollouts; 0 for invalid ones and constant groups.

    rewards: (G, N) float. valid: (G, N) bool, None for all valid. Returns (G, N) in the rewards' dtype.
    """
    valid = _valid_mask(rewards, valid)
    mean, std, count = _masked_mean_std(rewards, valid)
    advantages = (rewards - mean[:, None]) / (std[:, None] + eps)
    varied = (count >= 2) & (_masked_range(rewards, valid) > 0)
    return torch.where(valid & varied[:, None], advantages, torch.zeros_like(advantages))


def group_keep_mask(rewards: Tensor, valid: Tensor | None = None, *, min_std: float = MIN_GROUP_STD) -> Tensor:
    """The group filter: (G,) bool, True for groups whose valid rewards have sample std >= `min_std`.

    rewards: (G, N) float. valid: (G, N) bool, None for all valid. Groups with fewer than two valid rollouts are
    dropped.
    """
    valid = _valid_mask(rewards, valid)
    _, std, count = _masked_mean_std(rewards, valid)
    return (count >= 2) & (std >= min_std)


def group_stats(
    rewards: Tensor, valid: Tensor | None = None, *, min_std: float = MIN_GROUP_STD, eps: float = 1e-6
) -> GroupStats:
    """Advantages and the combined rollout + group filter for one step's rewards (G, N)."""
    valid = _valid_mask(rewards, valid)
    keep = valid & group_keep_mask(rewards, valid, min_std=min_std)[:, None]
    advantages = torch.where(keep, group_advantages(rewards, valid, eps=eps), torch.zeros_like(rewards))
    _, std, _ = _masked_mean_std(rewards, valid)
    return GroupStats(advantages=advantages, keep=keep, group_std=std)


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): exp(d) - d - 1 with d = ref_logprobs - logprobs; >= 0.

    Both (B, T) float, natural-log probabilities of the sampled tokens. Unbiased for the sampled tokens of pi, and
    lower variance than the naive log-ratio (Schulman's "k3").
    """
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


def clipped_surrogate_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = EPS_LOW,
    eps_high: float = EPS_HIGH,
    ref_logprobs: Tensor | None = None,
    beta: float = KL_BETA,
    num_tokens: int | None = None,
) -> LossOutput:
    """Token-level clipped surrogate with asymmetric clip and optional k3 KL, aggregated as a token-mean.

    logprobs: (B, T) float, log pi_theta(token) under the current policy, with gradient.
    old_logprobs: (B, T) float, log pi_old(token) of the policy that sampled (no gradient taken).
    advantages: (B,) per sequence or (B, T) per token.
    mask: (B, T) bool or 0/1: 1 on tokens the policy sampled (the env mask), 0 elsewhere.
    ref_logprobs: (B, T) float or None, the reference policy's log-probs for the KL term (no gradient taken).
    num_tokens: the divisor; default the counted tokens of this batch (pass the full batch's count for micro-batches).

    Per counted token, with r = exp(logprobs - old_logprobs):
        loss_t = -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A) + beta * k3(logprobs, ref_logprobs)
    loss = sum_t loss_t / num_tokens.
    """
    mask = mask.bool()
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    advantages = advantages.expand_as(logprobs).to(logprobs.dtype)
    zeros = torch.zeros_like(logprobs)
    # Select before exp: masked positions may hold -inf/NaN, and a NaN there would leak into the backward pass.
    log_ratio = torch.where(mask, logprobs - old_logprobs.detach(), zeros)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    policy_per_token = -torch.minimum(unclipped, clipped)

    if ref_logprobs is not None and beta > 0:
        kl_per_token = k3_kl(torch.where(mask, logprobs, zeros), torch.where(mask, ref_logprobs.detach(), zeros))
    else:
        kl_per_token = zeros
    per_token = policy_per_token + beta * kl_per_token

    counted = int(mask.sum().item())
    divisor = float(num_tokens if num_tokens is not None else max(counted, 1))
    loss = torch.where(mask, per_token, zeros).sum() / divisor
    with torch.no_grad():
        was_clipped = ((advantages > 0) & (ratio > 1.0 + eps_high)) | ((advantages < 0) & (ratio < 1.0 - eps_low))
        denominator = max(counted, 1)
        policy_loss = torch.where(mask, policy_per_token, zeros).sum() / divisor
        kl = torch.where(mask, kl_per_token, zeros).sum() / denominator
        clip_fraction = (was_clipped & mask).sum().to(logprobs.dtype) / denominator
    return LossOutput(loss=loss, policy_loss=policy_loss, kl=kl, clip_fraction=clip_fraction, num_tokens=counted)


def token_logprobs(logits: Tensor, token_ids: Tensor) -> Tensor:
    """log p(token_ids) under `logits`: (B, T, V) and (B, T) -> (B, T), computed in float32.

    `logits[:, t]` must be the distribution of `token_ids[:, t]`: shift a causal LM's logits by one before calling.
    Uses gather - logsumexp rather than a full log_softmax, which would keep a second (B, T, V) tensor alive.
    """
    logits = logits.float()
    picked = torch.gather(logits, -1, token_ids.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _valid_mask(rewards: Tensor, valid: Tensor | None) -> Tensor:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (groups, group_size), got shape {tuple(rewards.shape)}")
    if valid is None:
        return torch.ones_like(rewards, dtype=torch.bool)
    if valid.shape != rewards.shape:
        raise ValueError(f"valid {tuple(valid.shape)} must match rewards {tuple(rewards.shape)}")
    return valid.bool()


def _masked_mean_std(rewards: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per group: mean, sample std (0 with fewer than two values) and count of the valid rewards."""
    weights = valid.to(rewards.dtype)
    count = valid.sum(dim=-1)
    mean = (rewards * weights).sum(dim=-1) / count.clamp(min=1)
    squares = ((rewards - mean[:, None]) ** 2 * weights).sum(dim=-1)
    std = torch.sqrt(squares / (count - 1).clamp(min=1))
    return mean, torch.where(count >= 2, std, torch.zeros_like(std)), count


def _masked_range(rewards: Tensor, valid: Tensor) -> Tensor:
    high = torch.where(valid, rewards, torch.full_like(rewards, -torch.inf)).amax(dim=-1)
    low = torch.where(valid, rewards, torch.full_like(rewards, torch.inf)).amin(dim=-1)
    return torch.where(valid.any(dim=-1), high - low, torch.zeros_like(high))

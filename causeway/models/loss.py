"""Output projection + token cross-entropy (+ z-loss), returned as sums.

Sums (not means) let the trainer divide by the number of loss tokens in the whole
global batch, so gradient accumulation and data parallelism give the same gradient as
one big batch.

The projection and the loss are fused and chunked (`_ChunkedLinearCE`): [tokens, vocab]
logits never exist at once. The same code serves a vocabulary-sharded output under
tensor parallelism: given a process group it combines max, sum-exp and target logit
across the shards, so each rank only ever holds its own slice of the vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist

IGNORE = -100


class LossSums(NamedTuple):
    """A NamedTuple of tensors, so pipeline stages can return it like any output."""

    loss: torch.Tensor  # ce + z_weight * z: the differentiable sum
    ce: torch.Tensor  # summed cross-entropy over loss tokens
    z: torch.Tensor  # summed log(Z)^2 over loss tokens
    tokens: torch.Tensor  # number of loss tokens

    def total(self, normalizer: torch.Tensor | float) -> torch.Tensor:
        return self.loss / normalizer


def masked_targets(targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    return targets.reshape(-1).masked_fill(~loss_mask.reshape(-1), IGNORE)


def loss_sums(
    logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor, z_weight: float = 0.0
) -> LossSums:
    """The unfused reference: logits [B, T, V] given, computed in fp32."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    picked = masked_targets(targets, loss_mask)
    valid = picked != IGNORE
    lse = torch.logsumexp(flat, dim=-1)
    target_logit = flat.gather(1, picked.clamp(min=0)[:, None]).squeeze(1)
    ce = torch.where(valid, lse - target_logit, 0.0).sum()
    z = torch.where(valid, lse.square(), 0.0).sum()
    return LossSums(ce + z_weight * z, ce.detach(), z.detach(), valid.sum())


def _all_reduce(tensor: torch.Tensor, op, group) -> torch.Tensor:
    if group is not None:
        dist.all_reduce(tensor, op=op, group=group)
    return tensor


def _chunk_lse_and_target(logits, target, vocab_start, group):
    """Log-sum-exp and target logit of each row, across vocabulary shards if any."""
    row_max = _all_reduce(logits.max(dim=-1).values, dist.ReduceOp.MAX, group)
    sum_exp = _all_reduce((logits - row_max[:, None]).exp().sum(-1), dist.ReduceOp.SUM, group)
    lse = row_max + sum_exp.log()
    local = (target >= vocab_start) & (target < vocab_start + logits.shape[1])
    index = (target - vocab_start).clamp(0, logits.shape[1] - 1)
    target_logit = logits.gather(1, index[:, None]).squeeze(1) * local
    return lse, _all_reduce(target_logit, dist.ReduceOp.SUM, group), local


class _ChunkedLinearCE(torch.autograd.Function):
    """Logits `chunk` tokens at a time; their gradient (softmax * (1 + 2 z lse) - onehot)
    is known in the forward pass, so it becomes the gradients of hidden and weight at
    once and the chunk is dropped. The backward only scales the stored gradients.

    Under tensor parallelism the stored hidden gradient is a partial sum over the
    vocabulary shards; the caller marks it so (DTensor `Partial`).
    """

    @staticmethod
    def forward(ctx, hidden, weight, picked, z_weight, chunk, mm_dtype, group, vocab_start):
        grads = hidden.requires_grad or weight.requires_grad
        grad_h = torch.empty_like(hidden) if grads else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if grads else None
        w = weight.to(mm_dtype)
        ce = hidden.new_zeros((), dtype=torch.float32)
        z = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk].to(mm_dtype)
            target = picked[start : start + chunk]
            valid = (target != IGNORE).float()
            logits = (h @ w.t()).float()
            lse, target_logit, local = _chunk_lse_and_target(logits, target, vocab_start, group)
            ce += ((lse - target_logit) * valid).sum()
            z += (lse.square() * valid).sum()
            if not grads:
                continue
            probs = logits.sub_(lse[:, None]).exp_()
            probs.mul_(((1.0 + 2.0 * z_weight * lse) * valid)[:, None])
            index = (target - vocab_start).clamp(0, logits.shape[1] - 1)
            probs.scatter_add_(1, index[:, None], -(valid * local)[:, None])
            probs = probs.to(mm_dtype)
            grad_h[start : start + chunk] = probs @ w
            grad_w.addmm_(probs.t().float(), h.float())
        if grads:
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        ctx.mark_non_differentiable(ce, z)
        return ce + z_weight * z, ce, z

    @staticmethod
    def backward(ctx, grad_total, _grad_ce, _grad_z):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_total, grad_w * grad_total, None, None, None, None, None, None


def linear_loss_sums(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    loss_mask: torch.Tensor,
    z_weight: float = 0.0,
    chunk: int = 1024,
    group: dist.ProcessGroup | None = None,
    vocab_start: int = 0,
) -> LossSums:
    """Loss sums of `hidden @ weight.T` against `targets` without full logits.

    hidden [B, T, D]; weight [V, D], or this rank's rows [vocab_start, vocab_start + V_local)
    of it when `group` is the tensor-parallel group. Matmuls run in the autocast dtype
    when autocast is on, the softmax in fp32.
    """
    device = hidden.device.type
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    picked = masked_targets(targets, loss_mask)
    flat = hidden.reshape(-1, hidden.shape[-1])
    with torch.autocast(device, enabled=False):
        loss, ce, z = _ChunkedLinearCE.apply(
            flat, weight, picked, z_weight, chunk, mm_dtype or weight.dtype, group, vocab_start
        )
    return LossSums(loss, ce, z, (picked != IGNORE).sum())

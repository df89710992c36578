"""Token-level cross-entropy with optional z-loss, returned as sums.

Sums (not means) let the trainer divide by the number of loss tokens in the whole
global batch, so gradient accumulation and data parallelism give the same gradient as
one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class LossSums:
    ce: torch.Tensor  # summed cross-entropy over loss tokens
    z: torch.Tensor  # summed log(Z)^2 over loss tokens (0 when z-loss is off)
    tokens: torch.Tensor  # number of loss tokens

    def total(self, z_weight: float, normalizer: torch.Tensor | float) -> torch.Tensor:
        return (self.ce + z_weight * self.z) / normalizer


def loss_sums(
    logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor, z_weight: float = 0.0
) -> LossSums:
    """logits [B, T, V] (computed in fp32), targets and loss_mask [B, T].

    Masked positions become ignore_index rather than being gathered out: gathering
    copies the [tokens, vocab] logits, which costs as much as the loss itself.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()
    mask = loss_mask.reshape(-1)
    picked = targets.reshape(-1).masked_fill(~mask, IGNORE)
    tokens = mask.sum()
    if z_weight == 0.0:
        ce = F.cross_entropy(flat, picked, reduction="sum", ignore_index=IGNORE)
        return LossSums(ce, torch.zeros((), device=flat.device), tokens)
    # One log-sum-exp serves both terms: CE = lse - logit[target], z = lse^2.
    lse = torch.logsumexp(flat, dim=-1)
    target_logit = flat.gather(1, picked.clamp(min=0)[:, None]).squeeze(1)
    ce = torch.where(mask, lse - target_logit, 0.0).sum()
    z = torch.where(mask, lse.square(), 0.0).sum()
    return LossSums(ce, z, tokens)


class _ChunkedLinearCE(torch.autograd.Function):
    """Output projection + cross-entropy (+ z-loss) without materialising all logits.

    Logits are made `chunk` tokens at a time; the gradient of the loss with respect to
    each chunk's logits (softmax * (1 + 2 z lse) - onehot) is known in the forward pass,
    so it is turned into the gradients of `hidden` and `weight` at once and the chunk is
    dropped. Memory for logits falls from tokens x vocab to chunk x vocab, and the
    elementwise passes run on a chunk that stays in cache.
    """

    @staticmethod
    def forward(ctx, hidden, weight, picked, z_weight, chunk, mm_dtype):
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
            lse = torch.logsumexp(logits, dim=-1)
            target_logit = logits.gather(1, target.clamp(min=0)[:, None]).squeeze(1)
            ce += ((lse - target_logit) * valid).sum()
            z += (lse.square() * valid).sum()
            if not grads:
                continue
            probs = logits.sub_(lse[:, None]).exp_()
            probs.mul_(((1.0 + 2.0 * z_weight * lse) * valid)[:, None])
            probs.scatter_add_(1, target.clamp(min=0)[:, None], -valid[:, None])
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
        return grad_h * grad_total, grad_w * grad_total, None, None, None, None


def linear_loss_sums(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    loss_mask: torch.Tensor,
    z_weight: float = 0.0,
    chunk: int = 256,
) -> LossSums:
    """Loss sums of `hidden @ weight.T` against `targets`, chunked (see _ChunkedLinearCE).

    hidden [B, T, D], weight [V, D]. Matmuls run in the autocast dtype when autocast is
    on, the softmax in fp32. `LossSums.total(z_weight, n)` differentiates as usual.
    """
    device = hidden.device.type
    mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    mm_dtype = mm_dtype or weight.dtype
    mask = loss_mask.reshape(-1)
    picked = targets.reshape(-1).masked_fill(~mask, IGNORE)
    flat = hidden.reshape(-1, hidden.shape[-1])
    with torch.autocast(device, enabled=False):
        total, ce, z = _ChunkedLinearCE.apply(flat, weight, picked, z_weight, chunk, mm_dtype)
    return FusedLossSums(ce, z, mask.sum(), total, z_weight)


class FusedLossSums(LossSums):
    """LossSums whose differentiable total (ce + z_weight * z) comes from the fused op."""

    def __init__(self, ce, z, tokens, fused_total, z_weight):
        super().__init__(ce, z, tokens)
        self.fused_total, self.z_weight = fused_total, z_weight

    def total(self, z_weight: float, normalizer: torch.Tensor | float) -> torch.Tensor:
        if z_weight != self.z_weight:
            raise ValueError(f"fused loss was computed with z_weight {self.z_weight}")
        return self.fused_total / normalizer

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

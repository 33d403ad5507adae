"""Adversarial terms (paper, sec. 3.2): hinge losses, feature matching and embedding match.

All return fp32 scalars, whatever the dtype of their inputs.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def hinge_d_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """L_DSC = mean max(0, 1 − r(x)) + mean max(0, 1 + r(x̂)); scores (B,)."""
    return F.relu(1.0 - real_scores.float()).mean() + F.relu(1.0 + fake_scores.float()).mean()


def hinge_g_loss(fake_scores: Tensor) -> Tensor:
    """L_ADV's realism part for G: −mean r(x̂); scores (B,)."""
    return -fake_scores.float().mean()


def feature_matching_loss(real_feats: list[Tensor], fake_feats: list[Tensor]) -> Tensor:
    """L_FM = Σ_l mean |D_l(x) − D_l(x̂)| over D's block activations; the real side is detached."""
    if len(real_feats) != len(fake_feats) or not real_feats:
        raise ValueError(f"feature lists differ in length ({len(real_feats)} vs {len(fake_feats)}) or are empty")
    return sum((r.detach().float() - f.float()).abs().mean() for r, f in zip(real_feats, fake_feats))


def embedding_match_loss(W_rows: Tensor, e_hat: Tensor) -> Tensor:
    """L_MCH = mean |W_i − ê_i|; both (B, N). The caller decides which side is detached."""
    if W_rows.shape != e_hat.shape:
        raise ValueError(f"W rows {tuple(W_rows.shape)} and embeddings {tuple(e_hat.shape)} differ in shape")
    return (W_rows.float() - e_hat.float()).abs().mean()

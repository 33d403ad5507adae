"""The loss computations shared by meta-learning (stage 1) and fine-tuning (stage 2).

Both stages train G against the projection discriminator D with the same terms
(paper, sec. 3.2): L_CNT + L_ADV (hinge + λ_FM·L_FM) for G, and the hinge loss for D.
Meta-learning adds the embedding match L_MCH; fine-tuning has no embedder.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import Tensor, nn

from talkinghead.config import LossConfig
from talkinghead.losses import ContentLoss, feature_matching_loss, hinge_d_loss, hinge_g_loss


def _double(kwargs: dict) -> dict:
    """Repeat per-sample discriminator arguments for a [real; fake] batch."""
    out = {}
    for key, value in kwargs.items():
        if torch.is_tensor(value) and value.dim() >= 1 and not (key == "w" and value.dim() == 1):
            out[key] = torch.cat([value, value])
        else:
            out[key] = value
    return out


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Parameters of ``module`` record no gradient inside the block (inputs still do): the G
    step needs gradients through D, not D's own weight gradients, which D's step recomputes."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def generator_losses(
    fake: Tensor, real: Tensor, sketch: Tensor, disc: nn.Module, disc_kwargs: dict,
    content: ContentLoss, cfg: LossConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_G = L_CNT + λ_adv·(−r(x̂)) + λ_FM·L_FM. ``fake``, ``real``, ``sketch``: (B, 3, H, W).
    D's weights get no gradient here (see :func:`frozen`)."""
    with frozen(disc):
        score_fake, feats_fake = disc(fake, sketch, **disc_kwargs)
    with torch.no_grad():
        _, feats_real = disc(real, sketch, **disc_kwargs)
    cnt = content(fake, real)
    adv = hinge_g_loss(score_fake)
    fm = feature_matching_loss(feats_real, feats_fake)
    total = cnt["total"] + cfg.adversarial * adv + cfg.feature_matching * fm
    terms = {f"content/{k}": v for k, v in cnt.items()}
    terms.update({"g_adv": adv, "feature_matching": fm})
    return total, terms


def discriminator_losses(
    real: Tensor, fake: Tensor, sketch: Tensor, disc: nn.Module, disc_kwargs: dict,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Hinge loss on real and (detached) fake, scored in one forward pass (one DDP call)."""
    scores, _ = disc(torch.cat([real, fake.detach()]), torch.cat([sketch, sketch]), **_double(disc_kwargs))
    real_scores, fake_scores = scores.float().chunk(2)
    loss = hinge_d_loss(real_scores, fake_scores)
    return loss, {"d_hinge": loss, "d_real": real_scores.mean(), "d_fake": fake_scores.mean()}


def image_grid(columns: list[Tensor], max_rows: int = 4) -> np.ndarray:
    """Tile images column by column: each column is a (B, 3, H, W) tensor in [-1, 1].
    Returns (rows·H, cols·W, 3) uint8 — e.g. source | target sketch | target | generated."""
    from talkinghead.data.sketch import tensor_to_image

    rows = min(max_rows, columns[0].shape[0])
    tiles = [torch.cat([c[r].detach().float().cpu() for c in columns], dim=2) for r in range(rows)]
    return tensor_to_image(torch.cat(tiles, dim=1))

"""The projection discriminator D(x, y, i; θ, W, w0, b).

Paper, sec. 3.1: D's trunk V maps an image and its sketch to a vector v ∈ R^N, and the
realism score projects it on the video's row of W plus a shared vector:

    r(x, y, i) = v · (W_i + w0) + b

During fine-tuning the row W_i is replaced by a new vector w' initialised from the
person's embedding ê (which L_MCH kept close to the W rows during meta-learning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.config import ModelConfig
from talkinghead.models.blocks import image_sketch_encoder, sum_pool

#: Std of the initial W rows and w0. Small, so initial scores are O(1) and the hinge loss
#: starts in its linear regime; non-zero, so the trunk receives gradients from step one
#: (with W = w0 = 0 the score would not depend on v at all). L_MCH then pulls each W_i
#: towards its video's embedding.
PROJECTION_INIT_STD = 0.02


class Discriminator(nn.Module):
    """Scores (image, sketch) pairs; also returns the per-block activations for L_FM."""

    W: nn.Parameter
    w0: nn.Parameter
    b: nn.Parameter

    def __init__(self, cfg: ModelConfig, num_videos: int):
        super().__init__()
        cfg.validate()
        if num_videos < 1:
            raise ValueError(f"num_videos must be >= 1, got {num_videos}")
        self.embed_dim = cfg.embed_dim
        self.relu_before_pool = cfg.relu_before_pool
        self.trunk, self.to_embedding = image_sketch_encoder(cfg, extra_block=cfg.discriminator_extra_block)
        self.W = nn.Parameter(torch.randn(num_videos, cfg.embed_dim) * PROJECTION_INIT_STD)
        self.w0 = nn.Parameter(torch.randn(cfg.embed_dim) * PROJECTION_INIT_STD)
        self.b = nn.Parameter(torch.zeros(()))

    def embed(self, image: Tensor, sketch: Tensor) -> tuple[Tensor, list[Tensor]]:
        """V(x, y): (B, 3, H, W) x 2 -> (v (B, N), per-block activations)."""
        features = self.trunk(torch.cat([image, sketch], dim=1))
        return self.to_embedding(sum_pool(features[-1], self.relu_before_pool)), features

    def rows(self, video_index: Tensor) -> Tensor:
        """W_i for each index: (B,) long -> (B, N). The gradient reaching W is sparse (B rows),
        never a dense (videos × N) tensor: at VoxCeleb2 scale W outweighs E, G and D."""
        return F.embedding(video_index, self.W, sparse=True)

    def forward(self, image: Tensor, sketch: Tensor, video_index: Tensor | None = None,
                w: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """image, sketch: (B, 3, H, W) in [-1, 1].

        Exactly one of ``video_index`` (B,) long — selects rows of W — or ``w`` ((B, N) or
        (N,), the fine-tuning vector w') must be given.
        Returns (scores (B,) in fp32, features: list of (B, C_l, H_l, W_l), one per block).
        """
        if (video_index is None) == (w is None):
            raise ValueError("pass exactly one of video_index or w")
        v, features = self.embed(image, sketch)
        row = self.rows(video_index) if w is None else w.expand(v.shape[0], -1) if w.dim() == 1 else w
        # The score is a long dot product of unbounded activations: keep it in fp32.
        scores = (v.float() * (row.float() + self.w0.float())).sum(dim=1) + self.b.float()
        return scores, features

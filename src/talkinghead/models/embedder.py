"""The embedder E(x, y; φ): maps a frame and its landmark sketch to a person embedding.

Paper, sec. 3.1: E sees each of the K frames concatenated with its sketch, and the
episode's embedding ê is the mean of the K per-frame vectors (taken by the caller, so
that fine-tuning and meta-learning can both use the per-frame outputs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from talkinghead.config import ModelConfig
from talkinghead.models.blocks import image_sketch_encoder, sum_pool


class Embedder(nn.Module):
    """Residual downsampling trunk on concat(frame, sketch) -> global sum pool -> ReLU -> N
    (``model.relu_before_pool``: ReLU, then pooling).

    A linear map to ``embed_dim`` follows only when the trunk's last width is not N
    (for all three presets it is N, so E ends at the pooling, as in the paper).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.embed_dim = cfg.embed_dim
        self.relu_before_pool = cfg.relu_before_pool
        self.trunk, self.to_embedding = image_sketch_encoder(cfg, extra_block=cfg.embedder_extra_block)

    def forward(self, frames: Tensor, sketches: Tensor) -> Tensor:
        """frames, sketches: (B, K, 3, H, W) in [-1, 1] -> per-frame embeddings (B, K, N)."""
        if frames.shape != sketches.shape or frames.dim() != 5:
            raise ValueError(
                f"frames and sketches must both be (B, K, 3, H, W); got {tuple(frames.shape)} "
                f"and {tuple(sketches.shape)}"
            )
        b, k = frames.shape[:2]
        x = torch.cat([frames.flatten(0, 1), sketches.flatten(0, 1)], dim=1)  # (B·K, 6, H, W)
        pooled = sum_pool(self.trunk(x)[-1], self.relu_before_pool)  # (B·K, C)
        return self.to_embedding(pooled).view(b, k, self.embed_dim)


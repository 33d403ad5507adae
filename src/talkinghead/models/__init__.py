"""Networks of Zakharov et al. (2019): embedder E, generator G, projection discriminator D."""

from __future__ import annotations

from torch import nn

from talkinghead.config import Config, ModelConfig
from talkinghead.models.discriminator import Discriminator
from talkinghead.models.embedder import Embedder
from talkinghead.models.generator import Generator

__all__ = ["Embedder", "Generator", "Discriminator", "build_models", "count_parameters",
           "parameter_table"]


def build_models(cfg: ModelConfig, num_videos: int) -> tuple[Embedder, Generator, Discriminator]:
    """E, G and D for one configuration; D holds one W row per training video."""
    cfg.validate()
    return Embedder(cfg), Generator(cfg), Discriminator(cfg, num_videos)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars (spectral-norm u/v vectors are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())


def parameter_table(cfg: ModelConfig | Config) -> str:
    """Markdown table of parameter counts per network for one configuration.

    D's per-video matrix W is listed separately: it has N entries per training video.
    """
    model_cfg = cfg.model if isinstance(cfg, Config) else cfg
    E, G, D = build_models(model_cfg, num_videos=1)
    n = model_cfg.embed_dim
    d_trunk = count_parameters(D) - D.W.numel()
    rows = [
        ("Embedder E", count_parameters(E)),
        ("Generator G (incl. P)", count_parameters(G)),
        (f"— of which projection P ({n} → {G.psi_size})", count_parameters(G.projection)),
        ("Discriminator D (excl. W)", d_trunk),
        ("D: W, per training video", n),
    ]
    lines = ["| network | parameters |", "|---|---:|"]
    lines += [f"| {name} | {count:,} |" for name, count in rows]
    return "\n".join(lines)

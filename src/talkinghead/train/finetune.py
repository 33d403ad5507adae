"""Few-shot fine-tuning (paper stage 2, "FT").

Given a new person's K crops and sketches, the person-specific generator G' starts from the
meta-learned G with its AdaIN parameters ψ' = P·ê (now free parameters), and the discriminator
D' from the meta-learned D with its person row w' = ê. Both are trained on the K frames with the
same losses as meta-learning (minus the embedding match). With 0 steps this is the paper's "FF".
"""

from __future__ import annotations

import contextlib
import copy

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.config import Config
from talkinghead.data.sketch import landmarks_to_sketch_batch
from talkinghead.progress import ProgressBar, ProgressCallback
from talkinghead.losses import build_content_loss
from talkinghead.models.guide import WarpGuide
from talkinghead.train.steps import discriminator_losses, generator_losses


def random_similarity_warp(images: Tensor, landmarks: Tensor, generator: torch.Generator,
                           strength: float = 1.0) -> tuple[Tensor, Tensor]:
    """Move each image and its landmarks by one random similarity transform.

    At ``strength`` 1: scale ×0.9–1.1, rotation ±8°, shift ±5 % of the size. Images are padded
    by reflection (the background continues); the caller redraws sketches from the moved
    landmarks, so they stay as crisp as the sketches the avatar is later driven with.

    Args:
        images: (B, 3, S, S). landmarks: (B, 68, 2) in pixels of the S×S crop.

    Returns:
        warped images (B, 3, S, S) and their landmarks (B, 68, 2).
    """
    b, size = images.shape[0], images.shape[-1]
    u = torch.rand(b, 4, generator=generator, dtype=torch.float64) * 2 - 1
    scale = 1 + 0.1 * strength * u[:, 0]
    angle = math.radians(8) * strength * u[:, 1]
    shift = 0.1 * strength * u[:, 2:]  # normalised units: [-1, 1] spans the image
    # grid_sample maps output → input: x_in = A x_out + t, with A = R(angle) / scale.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    a = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
    theta = torch.cat([a, shift[:, :, None]], 2)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)
    # Landmarks go the other way: x_out = A⁻¹ (x_in − t), in the same normalised coordinates
    # (pixel p ↔ (2p + 1) / S − 1, as align_corners=False).
    norm = (2 * landmarks.double().cpu() + 1) / size - 1
    moved = torch.linalg.solve(a, (norm - shift[:, None, :]).transpose(1, 2)).transpose(1, 2)
    return warped, ((moved + 1) * size - 1) / 2


#: Landmarks a jaw drop moves (68-point scheme), with how far each goes: the chin fully, the jaw
#: line less towards the ears, the lower lip fully and the mouth corners half-way.
_JAW_WEIGHTS = {4: 0.3, 5: 0.5, 6: 0.7, 7: 0.9, 8: 1.0, 9: 0.9, 10: 0.7, 11: 0.5, 12: 0.3,
                55: 1.0, 56: 1.0, 57: 1.0, 58: 1.0, 59: 1.0, 65: 1.0, 66: 1.0, 67: 1.0,
                48: 0.5, 54: 0.5, 60: 0.5, 64: 0.5}


def random_jaw_drop(images: Tensor, landmarks: Tensor, generator: torch.Generator,
                    strength: float = 1.0) -> tuple[Tensor, Tensor]:
    """Open each shot's mouth by a random amount: move the chin, jaw and lower lip down and the
    pixels around them with a smooth field, so that a one-shot avatar sees its mouth sketch move
    with its pixels instead of learning one expression for every sketch.

    At ``strength`` 1 the chin drops by up to 0.7 × the outer inter-ocular distance. The
    displacement at each output pixel is a Gaussian-weighted mean of the landmark moves (σ = a
    quarter of that distance), faded out away from the moved landmarks.

    Args:
        images: (B, 3, S, S). landmarks: (B, 68, 2) in pixels of the S×S crop.

    Returns:
        warped images (B, 3, S, S) and their landmarks (B, 68, 2).
    """
    b, size = images.shape[0], images.shape[-1]
    marks = landmarks.float().cpu()
    iod = (marks[:, 45] - marks[:, 36]).norm(dim=-1)  # (B,)
    drop = torch.rand(b, generator=generator) * 0.7 * strength * iod  # (B,) pixels
    weights = torch.zeros(68)
    weights[list(_JAW_WEIGHTS)] = torch.tensor(list(_JAW_WEIGHTS.values()))
    moves = torch.zeros_like(marks)
    moves[:, :, 1] = drop[:, None] * weights[None]  # (B, 68, 2): straight down
    moved = marks + moves
    # Backward warp: output pixel p samples the input at p − field(p); the field is interpolated
    # from the moves around the landmarks' new positions.
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(1, -1, 2)  # (1, S·S, 2)
    sigma = (0.25 * iod).clamp(min=1.0)[:, None, None]
    w = torch.exp(-torch.cdist(pixels.expand(b, -1, -1), moved) ** 2 / (2 * sigma ** 2))  # (B, S·S, 68)
    field = (w @ moves) / (w.sum(-1, keepdim=True) + 1e-3) * w.max(-1, keepdim=True).values
    source = (2 * (pixels - field) + 1) / size - 1  # normalised, align_corners=False
    warped = F.grid_sample(images, source.reshape(b, size, size, 2).to(images), padding_mode="border",
                           align_corners=False)
    return warped, moved


def finetune(
    config: Config,
    generator: nn.Module,
    discriminator: nn.Module,
    psi: Tensor,
    w: Tensor,
    images: Tensor,
    sketches: Tensor,
    steps: int,
    landmarks: Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
    content_loss: nn.Module | None = None,
    shot_penalty: Tensor | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[nn.Module, Tensor, list[float]]:
    """Fine-tune copies of G (with ψ) and D (with w) on K frames.

    Args:
        generator, discriminator: meta-learned networks (not modified; copies are trained).
        psi: (P,) initial AdaIN parameters P·ê. w: (N,) initial discriminator row ê.
        images, sketches: (K, 3, S, S) in [-1, 1], on the networks' device.
        landmarks: (K, 68, 2) of the images; with ``train.finetune_warp`` or
            ``train.finetune_jaw_drop`` > 0 the shots are randomly warped each step and their
            sketches redrawn (:func:`random_similarity_warp`, :func:`random_jaw_drop`). A
            warp-guided G needs them: each shot is rendered from the nearest *other* shot warped
            onto its (moved) landmarks, as at inference (from itself when K = 1).
        steps: optimiser steps (each: one G step, ``disc_steps`` D steps).
        shot_penalty: (K,) added to the shots' landmark distances when the guide picks them
            (:meth:`~talkinghead.models.guide.WarpGuide.shot_penalty`), as at inference.
        on_progress: called after each step (:mod:`talkinghead.progress`); may raise to stop.

    Returns:
        (fine-tuned G in eval mode, fine-tuned ψ (P,), per-step content loss history).
    """
    tc, lc = config.train, config.loss
    device = images.device
    G = copy.deepcopy(generator).train()
    D = copy.deepcopy(discriminator).train()
    psi = nn.Parameter(psi.detach().clone().float())
    w = nn.Parameter(w.detach().clone().float())
    guide = WarpGuide.for_generator(G, config)
    if guide is not None and landmarks is None:
        raise ValueError("fine-tuning a warp-guided G needs the shots' landmarks")
    if steps <= 0:
        return G.eval(), psi.detach(), []
    content = content_loss if content_loss is not None else build_content_loss(lc, device, warn=False)
    fused = device.type == "cuda"
    opt_g = torch.optim.Adam(list(G.parameters()) + [psi], lr=tc.finetune_lr_generator, betas=tc.betas,
                             fused=fused)
    opt_d = torch.optim.Adam(list(D.parameters()) + [w], lr=tc.finetune_lr_discriminator, betas=tc.betas,
                             fused=fused)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if tc.amp and device.type == "cuda" else contextlib.nullcontext())

    generator_rng = torch.Generator().manual_seed(seed)
    k = images.shape[0]
    batch = min(k, tc.finetune_batch_size)
    history: list[float] = []
    bar = ProgressBar(range(steps), "fine-tuning", show=progress, on_progress=on_progress, unit="step",
                      dynamic_ncols=True)
    for _ in bar:
        pick = torch.randperm(k, generator=generator_rng)[:batch].to(device)
        real, sketch = images[pick], sketches[pick]
        moved = landmarks[pick.cpu()] if landmarks is not None else None
        if (tc.finetune_warp > 0 or tc.finetune_jaw_drop > 0) and landmarks is not None:
            if tc.finetune_jaw_drop > 0:
                real, moved = random_jaw_drop(real, moved, generator_rng, tc.finetune_jaw_drop)
            if tc.finetune_warp > 0:
                real, moved = random_similarity_warp(real, moved, generator_rng, tc.finetune_warp)
            sketch = landmarks_to_sketch_batch(moved.numpy(), real.shape[-1]).to(device)
        guide_image = None
        if guide is not None:
            with torch.no_grad():
                guide_image = guide(images[None].expand(len(pick), -1, -1, -1, -1),
                                    landmarks[None].expand(len(pick), -1, -1, -1).to(device),
                                    moved.float().to(device), exclude=pick,
                                    penalty=None if shot_penalty is None else shot_penalty.to(device)[None])
        with autocast:
            fake = G(sketch, psi, guide_image)
            if tc.finetune_adversarial:
                loss_g, terms = generator_losses(fake, real, sketch, D, {"w": w}, content, lc)
            else:
                cnt = content(fake, real)
                loss_g, terms = cnt["total"], {f"content/{k}": v for k, v in cnt.items()}
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for _ in range(tc.disc_steps if tc.finetune_adversarial else 0):
            with autocast:
                loss_d, _ = discriminator_losses(real, fake, sketch, D, {"w": w})
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        history.append(float(terms["content/total"].detach()))
        bar.set_postfix(content=f"{history[-1]:.3f}", refresh=False)
    return G.eval(), psi.detach(), history

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
from tqdm import tqdm

from talkinghead.config import Config
from talkinghead.data.sketch import landmarks_to_sketch_batch
from talkinghead.train.steps import build_content_loss, discriminator_losses, generator_losses


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
) -> tuple[nn.Module, Tensor, list[float]]:
    """Fine-tune copies of G (with ψ) and D (with w) on K frames.

    Args:
        generator, discriminator: meta-learned networks (not modified; copies are trained).
        psi: (P,) initial AdaIN parameters P·ê. w: (N,) initial discriminator row ê.
        images, sketches: (K, 3, S, S) in [-1, 1], on the networks' device.
        landmarks: (K, 68, 2) of the images; with ``train.finetune_warp`` > 0 the shots are
            randomly warped each step and their sketches redrawn (see :func:`random_similarity_warp`).
        steps: optimiser steps (each: one G step, ``disc_steps`` D steps).

    Returns:
        (fine-tuned G in eval mode, fine-tuned ψ (P,), per-step content loss history).
    """
    tc, lc = config.train, config.loss
    device = images.device
    G = copy.deepcopy(generator).train()
    D = copy.deepcopy(discriminator).train()
    psi = nn.Parameter(psi.detach().clone().float())
    w = nn.Parameter(w.detach().clone().float())
    if steps <= 0:
        return G.eval(), psi.detach(), []
    content = content_loss if content_loss is not None else build_content_loss(lc, device)
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
    bar = tqdm(range(steps), desc="fine-tuning", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        pick = torch.randperm(k, generator=generator_rng)[:batch].to(device)
        real, sketch = images[pick], sketches[pick]
        if tc.finetune_warp > 0 and landmarks is not None:
            real, moved = random_similarity_warp(real, landmarks[pick.cpu()], generator_rng, tc.finetune_warp)
            sketch = landmarks_to_sketch_batch(moved.numpy(), real.shape[-1]).to(device)
        with autocast:
            fake = G(sketch, psi)
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

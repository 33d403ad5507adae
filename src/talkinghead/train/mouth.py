"""Train the mouth generator (:mod:`talkinghead.models.mouth`) on a prepared data set's mouths.

Every valid frame of the training identities' clips gives a canonical mouth crop
(:func:`~talkinghead.data.mouth.cut_mouth`). An example is a target frame whose lips are apart
and a shot: another frame of the same clip whose mouth opens less (as an avatar's shot usually
does). The target's inner-lip polygon, grown by a few pixels, is blanked; the generator fills it,
and the loss is the L1 error inside it. Augmentations mimic what the renderer hands over at
inference: flips, lighting, and a target softer than the shot (a rendered face is).

    talkinghead train-mouth DATASET --out mouth.safetensors --steps 6000

The loop is written top to bottom in :func:`train_mouth`; one epoch of crops is cut once
(:func:`cut_dataset`) and kept in memory (about 28 KB per frame at 96 px).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from talkinghead.checkpoint import save_mouth_checkpoint
from talkinghead.config import MouthNetConfig
from talkinghead.data.mouth import apply_affine, cut_mouth, generator_mask, lip_opening
from talkinghead.data.store import ClipReader, clip_rows, load_index
from talkinghead.errors import TalkingHeadError
from talkinghead.models.mouth import MouthCritic, MouthGenerator
from talkinghead.progress import ProgressBar



@dataclass
class MouthTrainConfig:
    """How the mouth generator is trained (saved in its checkpoint)."""

    net: MouthNetConfig = field(default_factory=MouthNetConfig)
    steps: int = 6000
    batch_size: int = 16
    lr: float = 2e-4
    #: Weight of a hinge adversarial loss from a patch critic (0: L1 alone). L1 alone gives the
    #: average mouth, whose teeth are faint; the critic asks for teeth that look like teeth.
    adversarial: float = 0.0
    #: Targets open at least this much (inner-lip gap, inter-ocular distances): the inside shows.
    #: The interior is only used where a target opens wider than every shot, mostly wide open.
    min_opening: float = 0.04
    #: Most frames per clip cut (evenly spaced), so long clips do not dominate.
    frames_per_clip: int = 400
    seed: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "net": self.net.to_dict()}


@dataclass
class MouthCrops:
    """Canonical mouth crops of many frames, with what the sampler needs."""

    crops: np.ndarray  # (N, S, S, 3) uint8
    inner: np.ndarray  # (N, 8, 2) float32 inner-lip points in crop pixels
    opening: np.ndarray  # (N,) inner-lip gap in inter-ocular distances (data.mouth.lip_opening)
    clip: np.ndarray  # (N,) int clip number

    def __len__(self) -> int:
        return len(self.crops)


def cut_dataset(root: str | Path, identities: Iterable[str] | None, net: MouthNetConfig,
                frames_per_clip: int, progress: bool = True) -> MouthCrops:
    """Cut every clip's valid frames (at most ``frames_per_clip``, evenly spaced) of a prepared
    data set (``talkinghead prepare``; crops of 256 px or more keep the teeth) into mouth crops."""
    rows = clip_rows(load_index(root), identities)
    if not rows:
        raise TalkingHeadError(f"{root}: no clips of the training identities")
    crops, inner, opening, clip = [], [], [], []
    for number, row in enumerate(ProgressBar(rows, "cut mouths", show=progress, unit="clip")):
        reader = ClipReader(Path(root) / row.path)
        picks = reader.valid_indices
        if len(picks) > frames_per_clip:
            picks = picks[np.linspace(0, len(picks) - 1, frames_per_clip).round().astype(int)]
        marks = reader.landmarks[picks].astype(np.float64)
        for t, m in zip(picks, marks):
            crop, matrix = cut_mouth(reader.frame(int(t)), m, net.size, net.span)
            crops.append(crop)
            inner.append(apply_affine(matrix, m[60:68]).astype(np.float32))
        opening.append(lip_opening(torch.from_numpy(marks.astype(np.float32))).numpy())
        clip += [number] * len(picks)
    return MouthCrops(np.stack(crops), np.stack(inner), np.concatenate(opening).astype(np.float32), np.array(clip))


def sample_pairs(data: MouthCrops, n: int, rng: np.random.Generator,
                 min_opening: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (target, shot) index pairs: targets whose lips are at least ``min_opening`` apart,
    each with a frame of its clip opening less (any frame of the clip when none does)."""
    open_idx = np.flatnonzero(data.opening >= min_opening)
    if not len(open_idx):
        raise TalkingHeadError("no frame of the training clips shows an open mouth")
    targets = rng.choice(open_idx, n)
    shots = np.empty(n, int)
    for i, t in enumerate(targets):
        same = np.flatnonzero(data.clip == data.clip[t])
        less = same[data.opening[same] < data.opening[t]]
        shots[i] = rng.choice(less if len(less) else same)
    return targets, shots


def make_batch(data: MouthCrops, targets: np.ndarray, shots: np.ndarray, grow: float,
               rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
    """Tensors for :meth:`MouthGenerator.fill`: ``target``, ``target_mask``, ``shot``,
    ``shot_mask``, and ``real``: the target as the loss sees it (augmented like the input when
    ``rng`` is given, but never blurred: the generator is to draw a sharp mouth in a soft face)."""
    size = data.crops.shape[1]
    out = {k: [] for k in ("target", "target_mask", "shot", "shot_mask", "real")}
    for t, s in zip(targets, shots):
        target, shot = data.crops[t].astype(np.float32), data.crops[s].astype(np.float32)
        t_mask, s_mask = generator_mask(data.inner[t], size, grow), generator_mask(data.inner[s], size, grow)
        if rng is not None:
            gain = (rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)  # lighting, white balance
            target, shot = target * gain, shot * gain
            if rng.random() < 0.5:
                target, shot, t_mask, s_mask = (np.ascontiguousarray(a[:, ::-1]) for a in (target, shot, t_mask, s_mask))
        out["real"].append(np.clip(target, 0, 255))
        if rng is not None and rng.random() < 0.6:  # a rendered face is softer than a real one
            target = cv2.GaussianBlur(target, (0, 0), rng.uniform(0.4, 1.4))
        out["target"].append(np.clip(target, 0, 255))
        out["shot"].append(np.clip(shot, 0, 255))
        out["target_mask"].append(t_mask)
        out["shot_mask"].append(s_mask)
    batch = {}
    for key in ("target", "shot", "real"):
        batch[key] = torch.from_numpy(np.stack(out[key])).permute(0, 3, 1, 2) / 127.5 - 1
    for key in ("target_mask", "shot_mask"):
        batch[key] = torch.from_numpy(np.stack(out[key]))[:, None]
    return batch


def masked_l1(output: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |output − real| over the mask's pixels (weighted by the soft mask)."""
    return ((output - real).abs() * mask).sum() / (mask.sum() * output.shape[1]).clamp(min=1.0)


def train_mouth(data: MouthCrops, config: MouthTrainConfig, out: str | Path,
                holdout: MouthCrops | None = None, progress: bool = True, save_every: int = 1000,
                log: Callable[[str], None] = print, init: dict[str, torch.Tensor] | None = None,
                teacher: MouthGenerator | None = None) -> MouthGenerator:
    """Train (from scratch, or from ``init`` weights) and save to ``out`` (safetensors,
    atomically, every ``save_every`` steps and at the end). ``holdout``: crops of other
    identities, scored every ``save_every`` steps. ``teacher``: learn that generator's output
    instead of the real mouth (a smaller, faster copy of a trained one: its target is one
    sharp mouth per input, not the average of many, so L1 alone keeps it sharp)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = MouthGenerator(config.net)
    if init is not None:
        net.load_state_dict(init)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.5, 0.99))
    critic = MouthCritic() if config.adversarial > 0 else None
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.lr, betas=(0.5, 0.99)) if critic else None
    held = None
    if holdout is not None and len(holdout):
        held = make_batch(holdout, *sample_pairs(holdout, 64, np.random.default_rng(1)), config.net.grow)
    bar = ProgressBar(range(1, config.steps + 1), "train mouth", show=progress, unit="step")
    start, running = time.perf_counter(), None
    for step in bar:
        batch = make_batch(data, *sample_pairs(data, config.batch_size, rng, config.min_opening), config.net.grow, rng)
        filled = net.fill(batch["target"], batch["target_mask"], batch["shot"], batch["shot_mask"])
        if teacher is not None:
            with torch.no_grad():
                batch["real"] = teacher.fill(batch["target"], batch["target_mask"], batch["shot"], batch["shot_mask"])
        loss = masked_l1(filled, batch["real"], batch["target_mask"])
        total = loss
        if critic is not None:
            # The critic's real example has the same (possibly blurred) surroundings as the
            # filled one, so only the inside tells them apart.
            mask = batch["target_mask"]
            real = batch["target"] * (1 - mask) + batch["real"] * mask
            critic_loss = (F.relu(1 - critic(real, mask)).mean() + F.relu(1 + critic(filled.detach(), mask)).mean())
            critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_optimizer.step()
            total = loss - config.adversarial * critic(filled, mask).mean()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(l1=f"{running * 127.5:.1f}")
        if step % save_every == 0 or step == config.steps:
            extra = {"step_time_s": (time.perf_counter() - start) / step, "train_l1": running * 127.5}
            if held is not None:
                extra["holdout_l1"] = evaluate_l1(net, held)
                log(f"step {step}: train L1 {running * 127.5:.1f}, held-out L1 {extra['holdout_l1']:.1f} (0–255)")
            save_mouth_checkpoint(out, config.net, net.state_dict(), step, {"train": config.to_dict(), **extra})
    bar.close()
    return net


@torch.no_grad()
def evaluate_l1(net: MouthGenerator, batch: dict[str, torch.Tensor]) -> float:
    """Mean |filled − real| (0–255) inside the grown polygons of a fixed batch."""
    net.eval()
    filled = net.fill(batch["target"], batch["target_mask"], batch["shot"], batch["shot_mask"])
    net.train()
    return float(masked_l1(filled, batch["real"], batch["target_mask"])) * 127.5


__all__ = ["MouthCrops", "MouthTrainConfig", "cut_dataset", "evaluate_l1", "make_batch", "masked_l1",
           "sample_pairs", "train_mouth"]

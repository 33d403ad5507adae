"""Meta-learning (paper stage 1): one step, readable top to bottom.

Each step draws B episodes (video i, K frames + 1 target), then:

1. E embeds the K (frame, sketch) pairs; ê_i is their mean.        (B, K, N) → (B, N)
2. G renders the target sketch with AdaIN parameters ψ = P·ê_i.    (B, 3, S, S)
3. E and G step on L_CNT + L_ADV + λ_FM·L_FM (+ λ_MCH·|W_i − ê_i| with
   ``loss.embedding_match_pulls_embedder``, as in the paper; off by default, see the config).
4. D steps ``disc_steps`` times on the hinge loss for (real, fake) plus λ_MCH·|W_i − ê_i|
   (the embedding match pulls W_i towards ê_i). With ``train.disc_fresh_batches`` each D step
   after the first scores a fresh batch of episodes, rendered by the current E and G.

:class:`talkinghead.train.trainer.Trainer` runs the loop around :func:`meta_step`: data, DDP,
resumption, logging, checkpoints and stopping.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from talkinghead.config import Config
from talkinghead.data.episodes import to_unit_range
from talkinghead.data.augment import paste_occluders
from talkinghead.losses import ContentLoss, embedding_match_loss
from talkinghead.models.guide import WarpGuide
from talkinghead.train.steps import discriminator_losses, generator_losses

LATEST = "latest.safetensors"


class RenderFromEmbedding(torch.nn.Module):
    """G with ψ = P·ê computed inside forward, so one DDP wrapper covers P and G together."""

    def __init__(self, generator: torch.nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, sketch: torch.Tensor, embedding: torch.Tensor,
                guide: torch.Tensor | None = None) -> torch.Tensor:
        """sketch (B, 3, S, S), embedding ê (B, N), guide (B, 4, S, S) for a warp-guided G → (B, 3, S, S)."""
        return self.generator(sketch, self.generator.psi_from_embedding(embedding), guide)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    path = Path(run_dir) / LATEST
    return path if path.is_file() else None


def autocast(config: Config, device: torch.device):
    """bf16 autocast on CUDA with ``train.amp``; nothing on CPU."""
    if config.train.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def episodes_on_device(batch: dict, device: torch.device) -> dict:
    """Move a collated batch of episodes to ``device`` and map its uint8 images to [-1, 1]
    floats there (they travel as uint8: 4× less loader traffic). Keys are kept."""
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True) if torch.is_tensor(value) else value
        if torch.is_tensor(value) and value.dtype == torch.uint8:
            value = to_unit_range(value)
        out[key] = value
    return out


def reduce_sparse_rows(param: torch.nn.Parameter) -> None:
    """Average a sparse row gradient (D's W) over DDP ranks, as DDP does for dense ones.

    DDP ignores W (a dense all-reduce of a 145k × 512 gradient would cost as much as the step);
    each rank's gradient touches only the rows of its batch, so the ranks swap those rows:
    world × (rows, N) values instead of the whole matrix. A no-op in a single process.
    """
    if param.grad is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    grad = param.grad.coalesce()
    rows, values = grad.indices()[0], grad.values()
    counts = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([rows.numel()], device=rows.device))
    most = int(max(c.item() for c in counts))
    padded_rows = torch.zeros(most, dtype=rows.dtype, device=rows.device)
    padded_values = torch.zeros(most, values.shape[1], dtype=values.dtype, device=values.device)
    padded_rows[:rows.numel()], padded_values[:rows.numel()] = rows, values
    all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
    all_values = [torch.empty_like(padded_values) for _ in range(world)]
    dist.all_gather(all_rows, padded_rows)
    dist.all_gather(all_values, padded_values)
    keep = [slice(0, int(c.item())) for c in counts]
    indices = torch.cat([r[k] for r, k in zip(all_rows, keep)])[None]
    summed = torch.sparse_coo_tensor(indices, torch.cat([v[k] for v, k in zip(all_values, keep)]),
                                     param.shape).coalesce()
    param.grad = summed / world


def episode_guide(episodes: dict, guide: WarpGuide, fuse: int = 1, occlusion: float = 0.0) -> torch.Tensor:
    """The warp-guided G's guide (:class:`~talkinghead.models.guide.WarpGuide`) of ``fuse`` shots
    for each episode's target → (B, 4, S, S); with ``occlusion`` > 0 and B > 1, that fraction of
    rows gets a hand-like patch of the next row's target (:func:`paste_occluders`; B = 1 has no
    other person to take it from)."""
    with torch.no_grad():
        out = guide(episodes["frames"], episodes["landmarks"].float(), episodes["target_landmarks"].float(),
                    fuse=fuse)
        if occlusion > 0 and out.shape[0] > 1:
            donors = episodes["target"].roll(1, dims=0).to(out.dtype)
            out = paste_occluders(out, donors, episodes["target_landmarks"], occlusion)
        return out


def embed_and_render(episodes: dict, E, render, guide: WarpGuide | None = None, fuse: int = 1,
                     occlusion: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """ê from the K shots and G's rendering of the target sketch: (ê (B, N), fake (B, 3, S, S)).
    ``guide`` (a warp-guided G's): G also gets :func:`episode_guide` of ``fuse`` shots
    (``occlusion``: its pasted occluders), stored in ``episodes``."""
    e_hat = E(episodes["frames"], episodes["sketches"]).float().mean(dim=1)  # (B, N)
    if guide is not None and "guide" not in episodes:
        episodes["guide"] = episode_guide(episodes, guide, fuse, occlusion)
    fake = render(episodes["target_sketch"], e_hat, episodes.get("guide"))  # (B, 3, S, S)
    return e_hat, fake


def guide_shots(guide: WarpGuide, config: Config) -> int:
    """Shots fused into this batch's guide: the guide's own (G's ``warp_shots``), or 1 for a random
    ``train.warp_single_shot_fraction`` of batches (one-shot avatars see a lone warped shot)."""
    if guide.fuse > 1 and float(torch.rand(())) < config.train.warp_single_shot_fraction:
        return 1
    return guide.fuse


class OptimizerPair:
    """D's two optimisers stepped as one: Adam for the trunk, sparse Adam for the rows W."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()


@dataclass
class MetaNetworks:
    """What one meta-learning step runs and updates. ``E``, ``render`` and ``D`` are as the step
    calls them (DDP replicas or compiled, in training); ``raw_d`` is D itself, whose per-video rows
    W the embedding match reads and :func:`reduce_sparse_rows` averages."""

    E: torch.nn.Module
    render: torch.nn.Module  # :class:`RenderFromEmbedding` of G
    D: torch.nn.Module
    raw_d: torch.nn.Module
    opt_g: torch.optim.Optimizer  # E and G (with P)
    opt_d: OptimizerPair  # D's trunk and its rows W
    content: ContentLoss
    guide: WarpGuide | None = None  # a warp-guided G's guide (:meth:`WarpGuide.for_generator`); None: G is not

    @classmethod
    def from_models(cls, E, G, D, optimizers: dict[str, torch.optim.Optimizer], content: ContentLoss,
                    config: Config | None = None) -> "MetaNetworks":
        """Unwrapped networks and :func:`~talkinghead.train.trainer.build_optimizers`' dict;
        ``config``'s guide settings for a warp-guided G (default: today's)."""
        return cls(E, RenderFromEmbedding(G), D, D, optimizers["g"],
                   OptimizerPair(optimizers["d"], optimizers["w"]), content,
                   WarpGuide.for_generator(G, config))


@dataclass
class MetaStepResult:
    """What a step reports for logging: its batch, G's rendering and the losses (all on device)."""

    shown: torch.Tensor  # (B, K, 3, S, S): the K shots, or (B, 1, 3, S, S) the guide of a warp-guided G
    target_sketch: torch.Tensor  # (B, 3, S, S)
    target: torch.Tensor  # (B, 3, S, S)
    fake: torch.Tensor  # (B, 3, S, S)
    loss_g: torch.Tensor  # scalar: the E+G objective
    loss_d: torch.Tensor  # scalar: D's objective at its last step
    terms: dict[str, torch.Tensor]  # the unweighted loss terms and ‖ê‖, by name


def meta_step(batch: dict, nets: MetaNetworks, config: Config, device: torch.device,
              disc_batches: tuple[dict, ...] = ()) -> MetaStepResult:
    """One meta-learning step on a batch of episodes: E+G update, then ``disc_steps`` D updates.

    ``batch``: collated episodes (:class:`~talkinghead.data.episodes.EpisodeDataset`), uint8
    images. ``disc_batches``: with ``train.disc_fresh_batches``, ``disc_steps − 1`` more
    batches, one for each D step after the first.
    """
    E, render, D, raw_d, content = nets.E, nets.render, nets.D, nets.raw_d, nets.content
    opt_g, opt_d = nets.opt_g, nets.opt_d
    tc, lc = config.train, config.loss
    guide = nets.guide
    fuse = guide_shots(guide, config) if guide is not None else 1
    episodes = episodes_on_device(batch, device)
    target, target_sketch = episodes["target"], episodes["target_sketch"]  # (B, 3, S, S)
    video_index = episodes["video_index"]  # (B,)

    # E and G: embed the K frames, render the target sketch, step on L_CNT + L_ADV + L_MCH.
    with autocast(config, device):
        e_hat, fake = embed_and_render(episodes, E, render, guide, fuse, tc.guide_occlusion)
        loss_g, terms = generator_losses(fake, target, target_sketch, raw_d,
                                         {"video_index": video_index}, content, lc)
        rows = raw_d.rows(video_index).detach()
        if lc.embedding_match_pulls_embedder:
            mch = embedding_match_loss(rows, e_hat)
            loss_g = loss_g + lc.embedding_match * mch
        else:
            mch = embedding_match_loss(rows, e_hat.detach())
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    # D: hinge on (real, fake) plus the embedding match pulling W_i towards ê_i. The first D
    # step scores the G step's batch; with fresh batches, later ones score new episodes.
    loss_d, d_terms = torch.zeros((), device=device), {}
    d_episodes = [(target, fake, target_sketch, video_index, e_hat)]
    for more in disc_batches[: max(tc.disc_steps - 1, 0)]:
        more = episodes_on_device(more, device)
        with torch.no_grad(), autocast(config, device):
            more_e_hat, more_fake = embed_and_render(more, E, render, guide, fuse, tc.guide_occlusion)
        d_episodes.append((more["target"], more_fake, more["target_sketch"], more["video_index"], more_e_hat))
    for k in range(tc.disc_steps):
        real, fake_k, sketch_k, index_k, e_hat_k = d_episodes[min(k, len(d_episodes) - 1)]
        with autocast(config, device):
            loss_d, d_terms = discriminator_losses(real, fake_k, sketch_k, D, {"video_index": index_k})
            loss_d = loss_d + lc.embedding_match * embedding_match_loss(raw_d.rows(index_k), e_hat_k.detach())
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        reduce_sparse_rows(raw_d.W)
        opt_d.step()
    # ‖ê‖ watches for a collapsed embedder (ê ≡ 0 makes every person look the same).
    terms = {**terms, **d_terms, "embedding_match": mch, "embedding/mean_abs": e_hat.detach().abs().mean()}
    shown = episodes["guide"][:, None, :3] if guide is not None else episodes["frames"]
    return MetaStepResult(shown, target_sketch, target, fake, loss_g, loss_d, terms)


def train_meta(
    data_root: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: Config,
    resume: str | os.PathLike | bool | None = None,
    identities: list[str] | None = None,
    device: str | None = None,
    time_limit_s: float | None = None,
    progress: bool = True,
    init_from: str | os.PathLike | None = None,
    init_networks: tuple[str, ...] = ("E", "G", "D"),
    overwrite: bool = False,
    allow_pixel_loss: bool = False,
) -> Path:
    """Run meta-learning; return the path of the last checkpoint written.

    ``init_from``: start a new run (step 0, fresh optimisers) from the weights of
    ``init_networks`` in another checkpoint of the same preset; the others start from scratch.
    D's per-video rows W are taken only when the videos are the same. A run folder that already
    holds checkpoints is refused unless ``resume`` or ``overwrite``. Stopped by SIGINT/SIGTERM,
    it checkpoints and raises :class:`~talkinghead.train.trainer.TrainingStopped`.
    """
    from talkinghead.train.distributed import cleanup_distributed, init_distributed
    from talkinghead.train.trainer import Trainer

    info = init_distributed(device)
    try:
        trainer = Trainer(data_root, run_dir, config, info, identities=identities, progress=progress,
                          time_limit_s=time_limit_s, allow_pixel_loss=allow_pixel_loss)
        if init_from and resume:
            from talkinghead.errors import TalkingHeadError

            raise TalkingHeadError("--init-from starts a new run; it cannot be combined with --resume")
        if resume:
            trainer.resume(resume)
        else:
            trainer.claim_run_dir(overwrite)
            if init_from:
                trainer.init_from(init_from, tuple(init_networks))
        return trainer.run()
    finally:
        cleanup_distributed()

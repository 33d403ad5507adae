"""Meta-learning (paper stage 1), readable top to bottom.

Each step draws B episodes (video i, K frames + 1 target), then:

1. E embeds the K (frame, sketch) pairs; ê_i is their mean.        (B, K, N) → (B, N)
2. G renders the target sketch with AdaIN parameters ψ = P·ê_i.    (B, 3, S, S)
3. E and G step on L_CNT + L_ADV + λ_FM·L_FM (+ λ_MCH·|W_i − ê_i| with
   ``loss.embedding_match_pulls_embedder``, as in the paper; off by default, see the config).
4. D steps ``disc_steps`` times on the hinge loss for (real, fake) plus λ_MCH·|W_i − ê_i|
   (the embedding match pulls W_i towards ê_i).

The same function runs one CPU process or ``torchrun`` on many GPUs (DDP, rank-0 logging and
checkpointing). Checkpoints are written every ``checkpoint_every`` steps and at exit; with
``resume`` the run continues exactly where it stopped (bit-for-bit on CPU).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from talkinghead.config import Config
from talkinghead.data.episodes import EpisodeDataset, EpisodeSampler
from talkinghead.data.warp import warp_guide
from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path, ensure_writable_dir
from talkinghead.losses import embedding_match_loss
from talkinghead.models import build_models
from talkinghead.train.checkpoint import (
    load_checkpoint,
    load_networks,
    load_optimizers,
    save_checkpoint,
)
from talkinghead.train.distributed import DistInfo, all_reduce_mean, any_rank, cleanup_distributed, init_distributed
from talkinghead.train.steps import build_content_loss, discriminator_losses, generator_losses, image_grid

log = logging.getLogger(__name__)

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


def replica_digests(networks: dict[str, torch.nn.Module], info: DistInfo) -> list[str]:
    """SHA-1 of every rank's weights and buffers. DDP keeps replicas identical; if they ever
    differ (a rank-local update slipped in) we stop rather than save a diverged model."""
    h = hashlib.sha1()
    for name in sorted(networks):
        for key, value in sorted(networks[name].state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    if not info.distributed:
        return [digest]
    digests: list[str] = [""] * info.world_size
    torch.distributed.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise TalkingHeadError(f"DDP replicas diverged (weight digests differ across ranks: {digests})")
    return digests


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    path = Path(run_dir) / LATEST
    return path if path.is_file() else None


def _publish_latest(run_dir: Path, ckpt: Path, keep: int) -> None:
    """Point run_dir/latest.safetensors at ``ckpt`` (hard link, else copy) and prune old ones."""
    with atomic_path(run_dir / LATEST) as tmp:
        tmp.unlink()
        try:
            os.link(ckpt, tmp)
        except OSError:
            import shutil

            shutil.copyfile(ckpt, tmp)
    old = sorted(ckpt.parent.glob("step_*.safetensors"))
    for path in old[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)


def _autocast(config: Config, device: torch.device):
    if config.train.amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def meta_step(batch: dict, E, render, D, raw_d, opt_g, opt_d, content, config: Config,
              device: torch.device):
    """One meta-learning step on a batch of episodes: E+G update, then ``disc_steps`` D updates.

    Returns (guide or first shots, target_sketch, target, fake, loss_g, loss_d, terms) for logging.
    """
    tc, lc = config.train, config.loss
    frames = batch["frames"].to(device, non_blocking=True)  # (B, K, 3, S, S)
    sketches = batch["sketches"].to(device, non_blocking=True)  # (B, K, 3, S, S)
    target = batch["target"].to(device, non_blocking=True)  # (B, 3, S, S)
    target_sketch = batch["target_sketch"].to(device, non_blocking=True)
    video_index = batch["video_index"].to(device, non_blocking=True)  # (B,)
    guide = None
    if config.model.warp_guidance:  # the shot nearest the target, warped onto its landmarks
        with torch.no_grad():
            guide = warp_guide(frames, batch["landmarks"].to(device), batch["target_landmarks"].to(device))

    # E and G: embed the K frames, render the target sketch, step on L_CNT + L_ADV + L_MCH.
    with _autocast(config, device):
        e_hat = E(frames, sketches).float().mean(dim=1)  # (B, N)
        fake = render(target_sketch, e_hat, guide)  # (B, 3, S, S)
        loss_g, terms = generator_losses(fake, target, target_sketch, raw_d,
                                         {"video_index": video_index}, content, lc)
        if lc.embedding_match_pulls_embedder:
            mch = embedding_match_loss(raw_d.W[video_index].detach(), e_hat)
            loss_g = loss_g + lc.embedding_match * mch
        else:
            mch = embedding_match_loss(raw_d.W[video_index].detach(), e_hat.detach())
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    # D: hinge on (real, fake) — the fake is fixed, G does not change between D steps — plus
    # the embedding match pulling W_i towards ê_i.
    for _ in range(tc.disc_steps):
        with _autocast(config, device):
            loss_d, d_terms = discriminator_losses(target, fake, target_sketch, D, {"video_index": video_index})
            loss_d = loss_d + lc.embedding_match * embedding_match_loss(raw_d.W[video_index], e_hat.detach())
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    # ‖ê‖ watches for a collapsed embedder (ê ≡ 0 makes every person look the same).
    terms = {**terms, **d_terms, "embedding_match": mch, "embedding/mean_abs": e_hat.detach().abs().mean()}
    shown = guide[:, :3] if guide is not None else frames[:, 0]
    return shown, target_sketch, target, fake, loss_g, loss_d, terms


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
) -> Path:
    """Run meta-learning; return the path of the last checkpoint written.

    ``init_from``: start a new run (step 0, fresh optimisers) from the weights of
    ``init_networks`` in another checkpoint of the same preset; the others start from scratch.
    D's per-video rows W are taken only when the videos are the same.
    """
    info = init_distributed(device)
    try:
        return _train(data_root, Path(run_dir), config, resume, identities, info, time_limit_s, progress,
                      init_from, tuple(init_networks))
    finally:
        cleanup_distributed()


def _train(data_root, run_dir: Path, config: Config, resume, identities, info: DistInfo,
           time_limit_s, progress, init_from=None, init_networks=("E", "G", "D")) -> Path:
    tc, lc = config.train, config.loss
    torch.manual_seed(tc.seed)

    # -- data ---------------------------------------------------------------------------------
    dataset = EpisodeDataset(data_root, shots=tc.shots, size=config.model.image_size,
                             identities=identities, augment=tc.augment, seed=tc.seed)
    if info.is_main:  # after the data checks, so a bad data path leaves no empty run folder
        ensure_writable_dir(run_dir / "checkpoints")
    videos = [v.key for v in dataset.videos]

    # -- networks and optimisers (paper: Adam, 5e-5 for E and G, 2e-4 for D) --------------------
    E, G, D = build_models(config.model, num_videos=len(videos))
    E, G, D = E.to(info.device), G.to(info.device), D.to(info.device)
    fused = info.device.type == "cuda"  # one kernel per step for all parameters
    opt_g = torch.optim.Adam(list(E.parameters()) + list(G.parameters()), lr=tc.lr_generator,
                             betas=tc.betas, fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=tc.lr_discriminator, betas=tc.betas, fused=fused)
    content = build_content_loss(lc, info.device)

    if init_from and resume:
        raise TalkingHeadError("--init-from starts a new run; it cannot be combined with --resume")
    if init_from:
        unknown = set(init_networks) - {"E", "G", "D"}
        if unknown or not init_networks:
            raise TalkingHeadError(f"--init-networks: expected some of E G D, got {' '.join(init_networks)}")
        source = load_checkpoint(init_from, map_location="cpu")
        same_videos = source.videos == videos
        load_networks(source, {n: m for n, m in {"E": E, "G": G, "D": D}.items() if n in init_networks},
                      exclude=() if same_videos else ("D.W",))
        if info.is_main:
            log.info("initialised %s from %s (step %d)%s", "+".join(init_networks), init_from, source.step,
                     "" if same_videos or "D" not in init_networks else "; D's W rows start fresh (other videos)")

    step = 0
    resume_path = latest_checkpoint(run_dir) if resume is True else resume
    if resume is True and resume_path is None:
        raise TalkingHeadError(f"{run_dir}: nothing to resume (no {LATEST})")
    if resume_path:
        ckpt = load_checkpoint(resume_path, map_location="cpu")
        if ckpt.videos != videos:
            raise TalkingHeadError(
                f"{resume_path}: was trained on other videos ({len(ckpt.videos)} vs {len(videos)} here); "
                "resume with the same data set and split"
            )
        load_networks(ckpt, {"E": E, "G": G, "D": D})
        load_optimizers(ckpt, {"g": opt_g, "d": opt_d})
        step = ckpt.step
        if info.is_main:
            log.info("resumed from %s at step %d", resume_path, step)

    networks = {"E": E, "G": G, "D": D}  # un-wrapped, for checkpoints
    raw_d = D  # G's step scores fakes through the un-wrapped D: no DDP sync of D's unused grads
    render: torch.nn.Module = RenderFromEmbedding(G)
    if info.distributed:
        ids = [info.local_rank] if info.device.type == "cuda" else None
        E, render, D = (DDP(m, device_ids=ids) for m in (E, render, D))
    if tc.compile:
        E, render = torch.compile(E), torch.compile(render)

    sampler = EpisodeSampler(len(dataset), seed=tc.seed, rank=info.rank, world_size=info.world_size,
                             start=step * tc.batch_size)
    loader = DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, num_workers=tc.num_workers,
                        persistent_workers=tc.num_workers > 0, pin_memory=info.device.type == "cuda",
                        prefetch_factor=4 if tc.num_workers > 0 else None)

    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))
        (run_dir / "config.json").write_text(config.to_json())
    bar = tqdm(total=tc.steps, initial=step, disable=not (info.is_main and progress),
               dynamic_ncols=True, desc="meta-learning", unit="step")

    def checkpoint(at_step: int) -> Path:
        path = run_dir / "checkpoints" / f"step_{at_step:07d}.safetensors"
        digests = replica_digests(networks, info)  # collective: every rank takes part
        if info.is_main:
            save_checkpoint(path, config, networks, at_step,
                            optimizers={"g": opt_g, "d": opt_d}, videos=videos,
                            extra={"world_size": info.world_size, "data": str(data_root),
                                   "replica_digests": digests})
            _publish_latest(run_dir, path, tc.keep_checkpoints)
        return path

    last_saved = latest_checkpoint(run_dir) or Path()
    nonfinite = torch.zeros((), dtype=torch.bool, device=info.device)
    start_time = time.perf_counter()
    window_start, window_steps = time.perf_counter(), 0
    batches = iter(loader)
    stop_reason = "done"
    warned_collapse = False
    try:
        while step < tc.steps:
            batch = next(batches)
            frames, target_sketch, target, fake, loss_g, loss_d, terms = meta_step(
                batch, E, render, D, raw_d, opt_g, opt_d, content, config, info.device)

            nonfinite |= ~(torch.isfinite(loss_g) & torch.isfinite(loss_d))
            step += 1
            window_steps += 1
            bar.update(1)

            if step % tc.log_every == 0 or step == tc.steps:
                if any_rank(bool(nonfinite.item()), info):
                    stop_reason = "nonfinite"
                    break
                elapsed = time.perf_counter() - window_start
                scalars = {k: float(v.detach()) for k, v in terms.items()}
                scalars.update({"loss_g": float(loss_g.detach()), "loss_d": float(loss_d.detach())})
                scalars = all_reduce_mean(scalars, info)
                scalars["time/step_s"] = elapsed / window_steps
                scalars["time/images_per_s"] = window_steps * tc.batch_size * info.world_size / elapsed
                window_start, window_steps = time.perf_counter(), 0
                if writer:
                    for key, value in scalars.items():
                        writer.add_scalar(key, value, step)
                if info.is_main and scalars["embedding/mean_abs"] == 0 and not warned_collapse:
                    warned_collapse = True
                    log.warning("step %d: the embedder's output is exactly 0 for every episode (collapsed); "
                                "the generator cannot tell people apart", step)
                bar.set_postfix(G=f"{scalars['loss_g']:.3f}", D=f"{scalars['loss_d']:.3f}",
                                cnt=f"{scalars['content/total']:.3f}", refresh=False)
            if writer and (step % tc.image_every == 0 or step == 1):
                grid = image_grid([frames, target_sketch, target, fake])
                writer.add_image("episodes/source (warp-guided: guide)|sketch|target|generated", grid, step, dataformats="HWC")
                from PIL import Image

                (run_dir / "samples").mkdir(exist_ok=True)
                with atomic_path(run_dir / "samples" / f"step_{step:07d}.png") as tmp:
                    Image.fromarray(grid).save(tmp)
            if step % tc.checkpoint_every == 0:
                if any_rank(bool(nonfinite.item()), info):
                    stop_reason = "nonfinite"
                    break
                last_saved = checkpoint(step)
            if time_limit_s is not None and any_rank(time.perf_counter() - start_time > time_limit_s, info):
                stop_reason = "time limit"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    finally:
        bar.close()
        if writer:
            writer.close()

    if stop_reason == "nonfinite":
        raise TalkingHeadError(
            f"a loss became NaN/Inf at or before step {step}; stopped without saving. "
            f"Last good checkpoint: {last_saved if last_saved.name else 'none'} "
            "(lower the learning rates or disable AMP, then resume from it)"
        )
    if not (last_saved.name and last_saved.name == f"step_{step:07d}.safetensors"):
        last_saved = checkpoint(step)
    if info.is_main:
        log.info("meta-learning stopped (%s) at step %d; checkpoint %s", stop_reason, step, last_saved)
    if stop_reason == "interrupted":
        raise KeyboardInterrupt
    return last_saved

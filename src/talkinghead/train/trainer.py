"""The meta-learning loop around :func:`talkinghead.train.meta.meta_step`.

:class:`Trainer` owns what a long run on many GPUs needs besides the step itself: data and
DDP set-up, resumption (exact batches, the config's current optimiser settings), logging,
checkpoints, and stopping — at the same step on every rank, for a time limit, Ctrl-C or
SIGTERM (a scheduler's pre-emption), always with a final checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from talkinghead.checkpoint import Checkpoint, load_checkpoint, load_networks, load_optimizers, save_checkpoint
from talkinghead.config import Config
from talkinghead.data.episodes import EpisodeDataset, EpisodeSampler, default_num_workers, worker_init
from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path, ensure_writable_dir
from talkinghead.models import build_models
from talkinghead.signals import EXIT_INTERRUPTED, EXIT_TERMINATED, StopRequest, stop_requests
from talkinghead.train import meta
from talkinghead.train.distributed import DistInfo, agree_max, all_reduce_mean, any_rank
from talkinghead.train.meta import LATEST, OptimizerPair, RenderFromEmbedding, latest_checkpoint  # noqa: F401
from talkinghead.losses import build_content_loss
from talkinghead.models.guide import WarpGuide
from talkinghead.train.steps import image_grid

log = logging.getLogger(__name__)

#: Stop codes agreed across ranks (the largest wins): why the loop ends early.
_RUNNING, _TIME_LIMIT, _INTERRUPTED, _TERMINATED = 0, 1, 2, 3
_REASONS = {_TIME_LIMIT: "time limit", _INTERRUPTED: "interrupted", _TERMINATED: "terminated"}


class TrainingStopped(TalkingHeadError):
    """Meta-learning was stopped by Ctrl-C or SIGTERM; every rank checkpointed the same step."""

    def __init__(self, reason: str, step: int, checkpoint: Path):
        self.reason, self.step, self.checkpoint = reason, step, checkpoint
        self.exit_code = EXIT_TERMINATED if reason == "terminated" else EXIT_INTERRUPTED
        super().__init__(f"stopped ({reason}) at step {step}; checkpoint {checkpoint} (continue with --resume)")


def build_optimizers(E, G, D, config: Config, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """Adam as in the paper: ``g`` for E and G (with P), ``d`` for D's trunk and ``w`` (sparse
    Adam, only the rows in the batch move) for D's per-video rows W."""
    tc = config.train
    fused = device.type == "cuda"  # one kernel per step for all parameters
    trunk = [p for name, p in D.named_parameters() if name != "W"]
    rows = torch.optim.SparseAdam([D.W], lr=tc.lr_embedding_rows or 1.0, betas=tc.betas)
    rows.param_groups[0]["lr"] = tc.lr_embedding_rows  # 0 (frozen rows) is valid; the constructor refuses it
    return {
        "g": torch.optim.Adam(list(E.parameters()) + list(G.parameters()), lr=tc.lr_generator,
                              betas=tc.betas, fused=fused),
        "d": torch.optim.Adam(trunk, lr=tc.lr_discriminator, betas=tc.betas, fused=fused),
        "w": rows,
    }


def optimizer_settings(config: Config) -> dict[str, float]:
    tc = config.train
    return {"g": tc.lr_generator, "d": tc.lr_discriminator, "w": tc.lr_embedding_rows}


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


def _publish_latest(run_dir: Path, ckpt: Path, keep: int) -> None:
    """Point run_dir/latest.safetensors at ``ckpt`` (hard link, else copy) and prune old ones."""
    with atomic_path(run_dir / LATEST) as tmp:
        tmp.unlink()
        try:
            os.link(ckpt, tmp)
        except OSError:
            shutil.copyfile(ckpt, tmp)
    old = sorted(ckpt.parent.glob("step_*.safetensors"))
    for path in old[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)


def episode_loader(dataset: EpisodeDataset, config: Config, info: DistInfo, start: int = 0) -> DataLoader:
    """The training DataLoader: this rank's shard of every epoch from item ``start`` on, uint8
    episodes, pinned memory on CUDA, ``train.num_workers`` workers (-1: from the cores)."""
    tc = config.train
    workers = tc.num_workers if tc.num_workers >= 0 else default_num_workers(info.local_world_size)
    sampler = EpisodeSampler(len(dataset), seed=tc.seed, rank=info.rank, world_size=info.world_size, start=start)
    return DataLoader(dataset, batch_size=tc.batch_size, sampler=sampler, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=info.device.type == "cuda",
                      prefetch_factor=2 if workers > 0 else None,
                      worker_init_fn=worker_init if workers > 0 else None)


class Trainer:
    """Meta-learning of E, G and D on one data set, in one process or as one DDP rank.

    ``Trainer(...)`` builds data, networks and optimisers; then optionally :meth:`resume` or
    :meth:`claim_run_dir` + :meth:`init_from`; then :meth:`run`.
    """

    def __init__(self, data_root, run_dir, config: Config, info: DistInfo, identities=None,
                 progress: bool = True, time_limit_s: float | None = None, allow_pixel_loss: bool = False):
        self.data_root, self.run_dir, self.config, self.info = data_root, Path(run_dir), config, info
        self.progress, self.time_limit_s = progress, time_limit_s
        tc, lc = config.train, config.loss
        torch.manual_seed(tc.seed)
        self.dataset = EpisodeDataset(data_root, shots=tc.shots, size=config.model.image_size,
                                      identities=identities, augment=tc.augment, seed=tc.seed)
        self.videos = list(self.dataset.keys)
        self.content = build_content_loss(lc, info.device, require_vgg19=lc.require_vgg19 and not allow_pixel_loss)
        if info.is_main:  # after the data checks, so a bad data path leaves no empty run folder
            ensure_writable_dir(self.run_dir / "checkpoints")
        E, G, D = build_models(config.model, num_videos=len(self.videos))
        self.networks = {"E": E.to(info.device), "G": G.to(info.device), "D": D.to(info.device)}
        self.optimizers = build_optimizers(*self.networks.values(), config, info.device)
        self.step = 0

    # -- starting points --------------------------------------------------------------------
    def claim_run_dir(self, overwrite: bool = False) -> None:
        """A new run must not mix with an old one's checkpoints (pruning would delete the new
        run's, which sort before the old run's higher steps): refuse, or clear them."""
        ckpt_dir = self.run_dir / "checkpoints"
        old = sorted(ckpt_dir.glob("step_*.safetensors")) + ([self.run_dir / LATEST] if latest_checkpoint(self.run_dir) else [])
        if not old:
            return
        if not overwrite:
            raise TalkingHeadError(f"{self.run_dir}: already holds a training run ({old[0].name}…); "
                                   "--resume continues it, --overwrite starts it over")
        if self.info.is_main:
            for path in old:
                path.unlink(missing_ok=True)
            log.info("--overwrite: removed %d checkpoint(s) of the previous run in %s", len(old), self.run_dir)

    def init_from(self, path, networks: tuple[str, ...]) -> None:
        """Start from the weights of ``networks`` in another checkpoint (step 0, fresh optimisers)."""
        unknown = set(networks) - {"E", "G", "D"}
        if unknown or not networks:
            raise TalkingHeadError(f"--init-networks: expected some of E G D, got {' '.join(networks)}")
        source = load_checkpoint(path, map_location="cpu")
        same_videos = source.videos == self.videos
        load_networks(source, {n: m for n, m in self.networks.items() if n in networks},
                      exclude=() if same_videos else ("D.W",))
        if self.info.is_main:
            log.info("initialised %s from %s (step %d)%s", "+".join(networks), path, source.step,
                     "" if same_videos or "D" not in networks else "; D's W rows start fresh (other videos)")

    def resume(self, path: str | os.PathLike | bool) -> None:
        """Continue a run: weights, optimiser moments, RNG and step from the checkpoint; the
        learning rates and betas from the current config (a resume with new rates uses them)."""
        resume_path = latest_checkpoint(self.run_dir) if path is True else Path(path)
        if resume_path is None:
            raise TalkingHeadError(f"{self.run_dir}: nothing to resume (no {LATEST})")
        ckpt = load_checkpoint(resume_path, map_location="cpu")
        if ckpt.videos != self.videos:
            raise TalkingHeadError(
                f"{resume_path}: was trained on other videos ({len(ckpt.videos)} vs {len(self.videos)} here); "
                "resume with the same data set and split"
            )
        saved_world = int(ckpt.extra.get("world_size", 1))
        if saved_world != self.info.world_size:
            raise TalkingHeadError(
                f"{resume_path}: was trained by {saved_world} process(es), this run has {self.info.world_size}; "
                "each rank's batches depend on the process count, so resume with the same count "
                "(torchrun --nnodes × --nproc_per_node), or start a new run from these weights with --init-from"
            )
        load_networks(ckpt, self.networks)
        self._load_optimizer_state(ckpt)
        settings = optimizer_settings(self.config)
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"], group["betas"] = settings[name], tuple(self.config.train.betas)
        self.step = ckpt.step
        if self.info.is_main:
            log.info("resumed from %s at step %d (learning rates E+G %g, D %g, W %g)", resume_path, self.step,
                     settings["g"], settings["d"], settings["w"])

    def _load_optimizer_state(self, ckpt: Checkpoint) -> None:
        if "optim.w" in ckpt.meta:
            load_optimizers(ckpt, self.optimizers)
            return
        # A checkpoint from before W had its own optimiser: one Adam over all of D's parameters.
        D = self.networks["D"]
        legacy = torch.optim.Adam(D.parameters())
        load_optimizers(ckpt, {"g": self.optimizers["g"], "d": legacy})
        for param in D.parameters():
            state = legacy.state.get(param)
            if state:
                target = self.optimizers["w"] if param is D.W else self.optimizers["d"]
                target.state[param] = {**state, "step": torch.as_tensor(state["step"]).float()}

    # -- the loop -----------------------------------------------------------------------------
    @property
    def batches_per_step(self) -> int:
        tc = self.config.train
        return 1 + (max(tc.disc_steps - 1, 0) if tc.disc_fresh_batches else 0)

    def _loader(self) -> DataLoader:
        return episode_loader(self.dataset, self.config, self.info,
                              start=self.step * self.batches_per_step * self.config.train.batch_size)

    def _wrapped(self):
        """(E, render, D, raw D) as the step uses them: DDP replicas, compiled if asked."""
        E, G, D = self.networks["E"], self.networks["G"], self.networks["D"]
        raw_d = D  # G's step scores fakes through the un-wrapped D: D's gradients are not needed there
        render: torch.nn.Module = RenderFromEmbedding(G)
        if self.info.distributed:
            ids = [self.info.local_rank] if self.info.device.type == "cuda" else None
            # W's gradient is sparse and exchanged row by row (meta.reduce_sparse_rows), not by DDP.
            # (".W": DDP's bucketing names a root module's parameters with a leading dot.)
            DDP._set_params_and_buffers_to_ignore_for_model(D, ["W", ".W"])
            E, render, D = (DDP(m, device_ids=ids) for m in (E, render, D))
        if self.config.train.compile:
            E, render, D, raw_d = (torch.compile(m) for m in (E, render, D, raw_d))
        return E, render, D, raw_d

    def checkpoint(self) -> Path:
        """Write RUN/checkpoints/step_N.safetensors and point latest at it (collective: every
        rank verifies that its weights equal the others')."""
        path = self.run_dir / "checkpoints" / f"step_{self.step:07d}.safetensors"
        digests = replica_digests(self.networks, self.info)
        if self.info.is_main:
            save_checkpoint(path, self.config, self.networks, self.step, optimizers=self.optimizers,
                            videos=self.videos, extra={"world_size": self.info.world_size,
                                                       "data": str(self.data_root), "replica_digests": digests})
            _publish_latest(self.run_dir, path, self.config.train.keep_checkpoints)
        return path

    def _stop_code(self, stop: StopRequest, started: float) -> int:
        """This rank's reason to stop, agreed with the others (the largest code wins): a
        host-side collective, so checking every step costs no GPU synchronisation."""
        code = _RUNNING
        if self.time_limit_s is not None and time.perf_counter() - started > self.time_limit_s:
            code = _TIME_LIMIT
        if stop.requested:
            code = _TERMINATED if stop.reason == "terminated" else _INTERRUPTED
        return agree_max(code, self.info)

    def run(self) -> Path:
        """Train up to ``train.steps``; return the last checkpoint. Raises
        :class:`TrainingStopped` (after checkpointing) on Ctrl-C or SIGTERM."""
        tc, info = self.config.train, self.info
        E, render, D, raw_d = self._wrapped()
        nets = meta.MetaNetworks(E, render, D, raw_d, self.optimizers["g"],
                                 meta.OptimizerPair(self.optimizers["d"], self.optimizers["w"]), self.content,
                                 WarpGuide.for_generator(self.networks["G"], self.config))
        writer = None
        if info.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb"))
            (self.run_dir / "config.json").write_text(self.config.to_json())
        bar = tqdm(total=tc.steps, initial=self.step, disable=not (info.is_main and self.progress),
                   dynamic_ncols=True, desc="meta-learning", unit="step")
        last_saved = latest_checkpoint(self.run_dir) or Path()
        nonfinite = torch.zeros((), dtype=torch.bool, device=info.device)
        started = time.perf_counter()
        self._window_start, self._window_steps = time.perf_counter(), 0
        batches = iter(self._loader())
        stop_code, failed = _RUNNING, False
        try:
            with stop_requests() as stop:
                while self.step < tc.steps:
                    fetched = [next(batches) for _ in range(self.batches_per_step)]
                    out = meta.meta_step(fetched[0], nets, self.config, info.device,
                                         disc_batches=tuple(fetched[1:]))
                    nonfinite |= ~(torch.isfinite(out.loss_g) & torch.isfinite(out.loss_d))
                    self.step += 1
                    self._window_steps += 1
                    bar.update(1)
                    at_checkpoint = self.step % tc.checkpoint_every == 0
                    if self.step % tc.log_every == 0 or self.step == tc.steps or at_checkpoint:
                        if any_rank(bool(nonfinite.item()), info):
                            failed = True
                            break
                    if self.step % tc.log_every == 0 or self.step == tc.steps:
                        self._log(writer, bar, out.loss_g, out.loss_d, out.terms)
                    if writer and (self.step % tc.image_every == 0 or self.step == 1):
                        self._save_samples(writer, [out.shown[:, 0], out.target_sketch, out.target, out.fake])
                    if at_checkpoint:
                        last_saved = self.checkpoint()
                    stop_code = self._stop_code(stop, started)
                    if stop_code:
                        break
        finally:
            bar.close()
            if writer:
                writer.close()

        if failed:
            raise TalkingHeadError(
                f"a loss became NaN/Inf at or before step {self.step}; stopped without saving. "
                f"Last good checkpoint: {last_saved if last_saved.name else 'none'} "
                "(lower the learning rates or disable AMP, then resume from it: the resumed run uses "
                "the rates given with --set)"
            )
        if not (last_saved.name and last_saved.name == f"step_{self.step:07d}.safetensors"):
            last_saved = self.checkpoint()
        reason = _REASONS.get(stop_code, "done")
        if info.is_main:
            log.info("meta-learning stopped (%s) at step %d; checkpoint %s", reason, self.step, last_saved)
        if stop_code in (_INTERRUPTED, _TERMINATED):
            raise TrainingStopped(reason, self.step, last_saved)
        return last_saved

    # -- logging ------------------------------------------------------------------------------
    def _log(self, writer, bar, loss_g, loss_d, terms) -> None:
        tc, info = self.config.train, self.info
        window_steps = max(self._window_steps, 1)
        elapsed = time.perf_counter() - self._window_start
        scalars = {k: float(v.detach()) for k, v in terms.items()}
        scalars.update({"loss_g": float(loss_g.detach()), "loss_d": float(loss_d.detach())})
        scalars = all_reduce_mean(scalars, info)
        scalars["time/step_s"] = elapsed / window_steps
        scalars["time/images_per_s"] = window_steps * tc.batch_size * info.world_size / elapsed
        self._window_start, self._window_steps = time.perf_counter(), 0
        if writer:
            for key, value in scalars.items():
                writer.add_scalar(key, value, self.step)
        if info.is_main and scalars["embedding/mean_abs"] == 0 and not getattr(self, "_warned_collapse", False):
            self._warned_collapse = True
            log.warning("step %d: the embedder's output is exactly 0 for every episode (collapsed); "
                        "the generator cannot tell people apart", self.step)
        bar.set_postfix(G=f"{scalars['loss_g']:.3f}", D=f"{scalars['loss_d']:.3f}",
                        cnt=f"{scalars['content/total']:.3f}", refresh=False)

    def _save_samples(self, writer, columns) -> None:
        from PIL import Image

        grid = image_grid(columns)
        writer.add_image("episodes/source (warp-guided: guide)|sketch|target|generated", grid, self.step, dataformats="HWC")
        (self.run_dir / "samples").mkdir(exist_ok=True)
        with atomic_path(self.run_dir / "samples" / f"step_{self.step:07d}.png") as tmp:
            Image.fromarray(grid).save(tmp)

"""The CUDA tier (``pytest -m cuda``): what only a GPU run shows. Skipped without a GPU.

Run it first whenever a GPU is available, together with ``benchmarks/train.py --device cuda``
and ``benchmarks/infer.py --device cuda``, and record the figures with the GPU's name in
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from talkinghead.config import get_preset

if not torch.cuda.is_available():  # one skip for the whole tier, not one per test
    pytest.skip("no CUDA GPU on this machine (CUDA tier)", allow_module_level=True)
pytestmark = pytest.mark.cuda


def test_spectral_norm_sigma_is_fp32_under_cuda_autocast():
    """torch's spectral norm runs its power iteration in bf16 under autocast (noisy σ; torch
    2.3.0 fails outright); ours computes it in fp32: the same weight with or without autocast."""
    from talkinghead.models.blocks import sn

    torch.manual_seed(0)
    layer = sn(torch.nn.Conv2d(64, 64, 3, padding=1), True).cuda().eval()
    plain = layer.weight.detach().clone()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        inside = layer.weight.detach()
        out = layer(torch.randn(2, 64, 16, 16, device="cuda"))
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def _one_step(cfg, compile_: bool):
    from torch.utils.data import default_collate

    from talkinghead.losses import build_content_loss
    from talkinghead.models import build_models
    from talkinghead.models.guide import WarpGuide
    from talkinghead.train.meta import MetaNetworks, OptimizerPair, RenderFromEmbedding, meta_step
    from talkinghead.train.trainer import build_optimizers

    torch.manual_seed(0)
    s, k, b = cfg.model.image_size, cfg.train.shots, cfg.train.batch_size
    batch = default_collate([{
        "frames": torch.randint(0, 256, (k, 3, s, s), dtype=torch.uint8),
        "sketches": torch.randint(0, 256, (k, 3, s, s), dtype=torch.uint8),
        "landmarks": torch.rand(k, 68, 2) * s,
        "target": torch.randint(0, 256, (3, s, s), dtype=torch.uint8),
        "target_sketch": torch.randint(0, 256, (3, s, s), dtype=torch.uint8),
        "target_landmarks": torch.rand(68, 2) * s,
        "video_index": i,
    } for i in range(b)])
    device = torch.device("cuda")
    E, G, D = (m.to(device) for m in build_models(cfg.model, num_videos=b))
    opts = build_optimizers(E, G, D, cfg, device)
    render, raw_d, d_step = RenderFromEmbedding(G), D, D
    if compile_:
        E, render, d_step, raw_d = (torch.compile(m) for m in (E, render, D, D))
    content = build_content_loss(cfg.loss, device)
    nets = MetaNetworks(E, render, d_step, raw_d, opts["g"], OptimizerPair(opts["d"], opts["w"]), content,
                        WarpGuide.for_generator(G, cfg))
    out = meta_step(batch, nets, cfg, device, disc_batches=(batch,))
    return out, D


@pytest.mark.parametrize("compile_", [False, True])
def test_amp_meta_step_is_finite_and_w_gradient_sparse(compile_):
    cfg = get_preset("small").override(["train.amp=true", "train.batch_size=2", "train.shots=2",
                                         "train.disc_fresh_batches=true"])
    out, D = _one_step(cfg, compile_)
    assert torch.isfinite(out.loss_g) and torch.isfinite(out.loss_d) and torch.isfinite(out.fake).all()
    assert D.W.grad is not None and D.W.grad.is_sparse


def test_paper_preset_meta_step_on_gpu():
    cfg = get_preset("paper").override(["train.batch_size=2", "train.shots=2", "loss.face=0"])
    out, _ = _one_step(cfg, compile_=False)
    assert out.fake.shape == (2, 3, 256, 256) and torch.isfinite(out.loss_g) and torch.isfinite(out.loss_d)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs 2 GPUs")
def test_nccl_ddp_two_gpus_keep_identical_weights(synthetic_dataset, tmp_path):
    from talkinghead.checkpoint import load_checkpoint

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "talkinghead.cli", "train", str(synthetic_dataset), "--preset", "tiny",
           "--out", str(tmp_path / "ddp"), "--steps", "4", "--no-progress", "--device", "cuda",
           "--set", "train.checkpoint_every=2", "train.batch_size=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "ddp" / "latest.safetensors")
    digests = ckpt.extra["replica_digests"]
    assert ckpt.step == 4 and len(digests) == 2 and digests[0] == digests[1]


def test_short_real_training_run_on_gpu(synthetic_dataset, tmp_path):
    """tiny preset, 30 steps, AMP and workers on: the content loss falls."""
    from talkinghead.checkpoint import load_checkpoint
    from talkinghead.train.meta import train_meta

    cfg = get_preset("tiny").override(["train.steps=30", "train.checkpoint_every=30", "train.log_every=5",
                                        "train.num_workers=2", "train.amp=true"])
    path = train_meta(synthetic_dataset, tmp_path / "run", cfg, device="cuda", progress=False)
    assert load_checkpoint(path).step == 30
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    content = [e.value for e in events.Scalars("content/total")]
    assert content[-1] < content[0]

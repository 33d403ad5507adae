"""The CUDA tier of output-resolution rendering (``pytest -m cuda``; skipped without a GPU):
the detail layer and paste-back inputs on a GPU agree with the CPU, in fp32 and fp16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.checkpoint import save_checkpoint
from talkinghead.config import get_preset
from talkinghead.data.synthetic import procedural_track, render_synthetic_face
from talkinghead.infer.avatar import Avatar
from talkinghead.models import build_models

if not torch.cuda.is_available():  # one skip for the whole tier, not one per test
    pytest.skip("no CUDA GPU on this machine (CUDA tier)", allow_module_level=True)
pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def avatars(tmp_path_factory):
    cfg = get_preset("small").override(["model.warp_guidance=true", "model.warp_correction=true",
                                        "model.warp_shots=2"])
    torch.manual_seed(0)
    E, G, D = build_models(cfg.model, num_videos=1)
    ckpt = save_checkpoint(tmp_path_factory.mktemp("cuda") / "g.safetensors", cfg, {"E": E, "G": G, "D": D}, 0)
    track = procedural_track(128, frames=12)
    crops = np.stack([render_synthetic_face(l, 128) for l in track[:4]])
    hi = np.stack([render_synthetic_face(l * 4, 512) for l in track[:4]])
    made = {device: Avatar.from_crops(crops, track[:4], ckpt, finetune_steps=0, device=device, progress=False,
                                      crops_hi=hi) for device in ("cpu", "cuda")}
    return made, track


@pytest.mark.parametrize("size", [256, 512])
def test_cuda_output_resolution_matches_cpu(avatars, size):
    made, track = avatars
    cpu = made["cpu"].animate(track, progress=False, size=size).astype(int)
    gpu = made["cuda"].animate(track, progress=False, size=size).astype(int)
    assert gpu.shape == (len(track), size, size, 3)
    assert np.abs(cpu - gpu).mean() < 1.0 and np.abs(cpu - gpu).max() <= 40


def test_cuda_fp16_output_resolution_is_close_to_fp32(avatars):
    made, track = avatars
    full = made["cuda"].animate(track, progress=False, size=512).astype(int)
    half = made["cuda"].animate(track, progress=False, size=512, half=True).astype(int)
    assert np.abs(full - half).mean() < 2.0

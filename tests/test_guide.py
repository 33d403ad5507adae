"""The warp guide in one place: its settings are a config section saved in checkpoints (old
checkpoints get today's values), G's own flag says whether there is a guide, and the settings
change what the guide does."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from talkinghead.config import Config, GuideConfig, get_preset
from talkinghead.errors import TalkingHeadError
from talkinghead.models import build_models
from talkinghead.models.guide import WarpGuide


def test_guide_settings_are_saved_and_old_checkpoints_load_todays(tmp_path):
    from talkinghead.checkpoint import load_checkpoint, save_checkpoint
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT

    bundled = load_checkpoint(BUNDLED_CHECKPOINT)  # written before the section existed
    assert bundled.config.guide == GuideConfig()
    cfg = get_preset("tiny").override(["guide.shot_smoothing=0.5", "guide.hidden_mouth_weight=0"])
    E, G, D = build_models(cfg.model, num_videos=1)
    path = save_checkpoint(tmp_path / "c.safetensors", cfg, {"E": E, "G": G, "D": D}, step=1)
    loaded = load_checkpoint(path).config.guide
    assert loaded.shot_smoothing == 0.5 and loaded.hidden_mouth_weight == 0.0
    legacy = cfg.to_dict()
    del legacy["guide"]
    assert Config.from_dict(legacy).guide == GuideConfig()
    with pytest.raises(TalkingHeadError, match="guide.shot_smoothing"):
        cfg.override(["guide.shot_smoothing=0"])


@pytest.mark.parametrize("guided", [False, True])
def test_the_generator_says_whether_it_is_guided(guided):
    cfg = get_preset("tiny").override([f"model.warp_guidance={guided}", "model.warp_shots=2"])
    _, G, _ = build_models(cfg.model, num_videos=1)
    guide = WarpGuide.for_generator(G, cfg)
    assert (guide is not None) == guided == G.warp_guidance
    if guided:
        assert guide.fuse == G.warp_shots == 2 and guide.config is cfg.guide and guide.mouth is cfg.mouth


def test_settings_change_the_penalties_and_the_fusion():
    errors = torch.tensor([0.0, 0.1, 0.3])
    today = WarpGuide().unreliable_shot_penalty(errors)
    assert today.tolist() == pytest.approx([0.0, 0.005, 0.025])
    stricter = WarpGuide(dataclasses.replace(GuideConfig(), unreliable_landmarks=0.0)).unreliable_shot_penalty(errors)
    assert (stricter[1:] > today[1:]).all()
    # Two shots at different distances: a cooler softmax gives the nearer one more weight.
    size = 32
    base = torch.tensor([[[8.0 + 16 * (i % 8) / 7, 8.0 + 16 * (i // 8) / 8] for i in range(68)]])
    moved = base.clone()
    moved[:, 48:68, 1] += 1.5  # an opened mouth
    shots = torch.stack([torch.full((3, size, size), -0.5), torch.full((3, size, size), 0.5)])[None]
    marks = torch.stack([base[0], moved[0]])[None]
    warm = WarpGuide(dataclasses.replace(GuideConfig(), fusion_temperature=1.0), fuse=2)(shots, marks, base)
    cool = WarpGuide(fuse=2)(shots, marks, base)
    centre = (slice(None), 0, size // 2, size // 2)
    assert cool[centre].item() < warm[centre].item() < 0.01  # both lean to the nearer (darker) shot

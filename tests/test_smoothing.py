"""Driving-landmark smoothing: a steady head, lips that keep up with speech."""

import numpy as np

from talkinghead.data.synthetic import template_landmarks
from talkinghead.infer.expression import open_mouth
from talkinghead.infer.smoothing import smooth_landmarks


def speaking_track(fps: float = 25.0, seconds: float = 4.0, hz: float = 4.0, seed: int = 0):
    """A still head with detector-like jitter on every point, the mouth opening and closing at ``hz``."""
    rng = np.random.default_rng(seed)
    base = template_landmarks(256)[None].astype(np.float64)
    t = np.arange(int(fps * seconds)) / fps
    opening = 0.5 * (1 - np.cos(2 * np.pi * hz * t))  # 0 … 1
    track = np.concatenate([open_mouth(base, 0.0, 0.4 * o) for o in opening])
    return track + rng.normal(0, 0.8, track.shape), track


def test_smoothing_keeps_speech_and_steadies_the_head():
    noisy, clean = speaking_track()
    smooth = smooth_landmarks(noisy, 25.0)
    gap = lambda m: m[:, 66, 1] - m[:, 62, 1]
    # the lips follow a 4 Hz opening with most of its amplitude (the face's 1.5 Hz alone kept under half)
    assert np.ptp(gap(smooth)[25:]) > 0.7 * np.ptp(gap(clean)[25:])
    assert np.corrcoef(gap(smooth)[25:], gap(clean)[25:])[0, 1] > 0.8
    # the still parts (jaw, brows, eyes) lose most of their jitter
    still = list(range(0, 48))
    assert np.abs(np.diff(smooth[:, still], axis=0)).mean() < 0.5 * np.abs(np.diff(noisy[:, still], axis=0)).mean()
    # and the lips stay on the face: no drift of the mouth's centre beyond the jitter
    assert np.abs(smooth[:, 48:68].mean(1) - clean[:, 48:68].mean(1)).max() < 3.0

"""The demo's self-check: does a face detector see a face in rendered frames, and do the
landmarks it finds follow the driving ones?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.eval.metrics import detect_landmarks_on_images, nme
from talkinghead.infer.reenact import mouth_opening


@dataclass
class SelfCheck:
    face_found: float  # fraction of rendered frames where dlib's detector finds a face
    nme: float  # landmarks detected on the output vs the driving landmarks (inter-ocular)
    mouth_correlation: float  # mouth opening of output vs driver, over time


def check_rendering(frames: np.ndarray, driving: np.ndarray, detector=None) -> SelfCheck:
    """Score rendered frames (T, S, S, 3) uint8 against the (T, 68, 2) landmarks that drove them."""
    from talkinghead.data.landmarks import get_detector

    detected, found = detect_landmarks_on_images(frames, driving, detector or get_detector("dlib"))
    ok = np.isfinite(detected).all(axis=(1, 2))
    err = float(np.nanmean(nme(detected[ok], driving[ok]))) if ok.any() else float("nan")
    corr = float("nan")
    if ok.sum() > 2:
        a, b = mouth_opening(detected[ok]), mouth_opening(driving[ok])
        if a.std() > 0 and b.std() > 0:
            corr = float(np.corrcoef(a, b)[0, 1])
    return SelfCheck(float(found.mean()), err, corr)

"""Temporal smoothing of driving landmarks: the One-Euro filter (Casiez, Roussel, Vogel, CHI 2012).

Landmark detectors jitter by a pixel or two from frame to frame; rendered heads then shake. A
One-Euro filter is a low-pass filter whose cut-off rises with speed: slow motion (a still face,
where jitter shows) is smoothed strongly, fast motion (a quick turn, an opening mouth) passes
with little lag. It is causal, so the same filter serves offline tracks and live driving.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Streaming One-Euro filter over arrays of any fixed shape (e.g. (68, 2) landmarks).

    Args:
        min_cutoff: cut-off frequency (Hz) at rest; lower = smoother and laggier when still.
        beta: how fast the cut-off rises with speed; higher = less lag in fast motion.
        d_cutoff: cut-off (Hz) of the speed estimate.
        scale: divides the speed before ``beta`` applies (e.g. the face size in pixels), so one
            setting works for faces of any size.
    """

    def __init__(self, min_cutoff: float = 1.5, beta: float = 1.0, d_cutoff: float = 1.0, scale: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0 or scale <= 0:
            raise ValueError("OneEuroFilter: min_cutoff, d_cutoff and scale must be > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff, self.scale = min_cutoff, beta, d_cutoff, scale
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        """Filter one sample ``x`` taken ``dt`` seconds after the previous one."""
        x = np.asarray(x, np.float64)
        if self._x is None or not np.isfinite(self._x).all():
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dt = max(float(dt), 1e-6)
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        speed = np.abs(self._dx) / self.scale
        cutoff = self.min_cutoff + self.beta * speed
        tau = 1.0 / (2 * math.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        self._x = a * x + (1 - a) * self._x
        return self._x.copy()


def face_scale(landmarks: np.ndarray) -> float:
    """Outer inter-ocular distance of (..., 68, 2) landmarks (median over frames), in pixels."""
    marks = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    d = np.linalg.norm(marks[:, 45] - marks[:, 36], axis=-1)
    d = d[np.isfinite(d)]
    return float(np.median(d)) if len(d) else 1.0


#: The lips (outer and inner, 48–67) and the points they are carried by (nose and eye corners).
MOUTH = slice(48, 68)
ANCHOR = [27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45]
#: Rest cut-off (Hz) of the lips' motion relative to the face: speech moves the lips at 3–6 Hz,
#: which the head's 1.5 Hz would flatten (benchmarks/mouth_follow.py --smoothing-only;
#: docs/model-card.md#mouths).
MOUTH_MIN_CUTOFF = 5.0


class LandmarkSmoother:
    """Streaming One-Euro smoothing of (68, 2) landmarks: the whole face at ``min_cutoff``, and
    the lips' shape (their offset from the nose and eye corners) at ``mouth_min_cutoff``, so
    that speech passes while the head stays steady and the lips stay on the smoothed face.
    ``scale``: the face size in pixels (speeds are taken in face sizes per second)."""

    def __init__(self, scale: float, min_cutoff: float = 1.5, beta: float = 1.0,
                 mouth_min_cutoff: float = MOUTH_MIN_CUTOFF):
        self.face = OneEuroFilter(min_cutoff, beta, scale=scale)
        self.lips = OneEuroFilter(mouth_min_cutoff, beta, scale=scale)

    def __call__(self, landmarks: np.ndarray, dt: float) -> np.ndarray:
        marks = np.asarray(landmarks, np.float64)
        face = self.face(marks, dt)
        lips = self.lips(marks[MOUTH] - marks[ANCHOR].mean(0), dt)
        face[MOUTH] = face[ANCHOR].mean(0) + lips
        return face


def smooth_landmarks(landmarks: np.ndarray, fps: float, min_cutoff: float = 1.5, beta: float = 1.0,
                     mouth_min_cutoff: float = MOUTH_MIN_CUTOFF) -> np.ndarray:
    """One-Euro smoothing of a whole track (T, 68, 2) sampled at ``fps``
    (:class:`LandmarkSmoother`); speed is measured in inter-ocular distances per second, so the
    settings do not depend on the face's size."""
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (T, 68, 2), got {landmarks.shape}")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    smoother = LandmarkSmoother(face_scale(landmarks), min_cutoff, beta, mouth_min_cutoff)
    out = np.empty_like(landmarks)
    for t, marks in enumerate(landmarks):
        out[t] = smoother(marks, 1.0 / fps)
    return out

"""Driving-landmark adaptation for cross-person reenactment.

A driver's raw landmarks carry the driver's face shape (jaw width, eye distance, nose length).
Fed to another person's avatar they deform that person's face — the classic failure of earlier
ports. In *relative* mode (default; FOMM's relative motion, the paper's Fig. 1 right) we keep
the avatar's own face shape and add the driver's motion:

    out_t = ref_avatar + A · (drive_t − ref_driver)

where ``ref_driver`` is a driving frame chosen as the neutral reference (the first, or the one
closest in pose to the avatar) and ``A`` is the similarity transform (scale, rotation) that maps
the driver's reference face onto the avatar's. Global head motion (translation, rotation,
scale change of the whole face) is transferred the same way, through the displacements.

*Absolute* mode only aligns each driving frame to the avatar with one similarity transform
(position, scale and rotation), keeping the driver's face shape; right for self-reenactment.
"""

from __future__ import annotations

import numpy as np

#: Points that barely move with expression (eye corners, nose bridge/tip, jaw corners):
#: the rigid frame of the face used for alignment.
STABLE_POINTS = np.array([0, 16, 27, 28, 29, 30, 31, 35, 36, 39, 42, 45])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping points ``src`` (P, 2) onto ``dst`` (P, 2).

    Returns a 2×3 matrix M with ``dst ≈ src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var = (s ** 2).sum() / len(src)
    scale = (sig * sign).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 matrix to points (..., 2)."""
    return points @ m[:, :2].T + m[:, 2]


def normalised_shape(points: np.ndarray) -> np.ndarray:
    """All 68 landmarks with position and scale removed (what is left is pose and shape)."""
    canon = points - points.mean(0)
    canon /= np.sqrt((canon ** 2).sum(1).mean()) + 1e-9
    return canon


def pick_reference_frame(driving: np.ndarray, avatar_landmarks: np.ndarray) -> int:
    """Index of the driving frame whose head pose is closest to the avatar's (valid frames only)."""
    target = normalised_shape(avatar_landmarks)
    best, best_err = 0, np.inf
    for t, frame in enumerate(driving):
        if not np.isfinite(frame).all():
            continue
        err = np.abs(normalised_shape(frame) - target).mean()
        if err < best_err:
            best, best_err = t, err
    return best


def adapt_landmarks(
    driving: np.ndarray,
    avatar_landmarks: np.ndarray,
    mode: str = "relative",
    reference: int | str = "first",
) -> np.ndarray:
    """Map driving landmarks (T, 68, 2) onto an avatar whose own landmarks are (68, 2).

    Args:
        driving: driver's landmarks in any pixel frame (e.g. the driving video's).
        avatar_landmarks: the avatar's landmarks in its crop (the frame G renders in).
        mode: ``"relative"`` (avatar's face shape + driver's motion) or ``"absolute"``.
        reference: driving frame used as the driver's neutral face: an index, ``"first"``
            (first valid frame) or ``"best"`` (closest pose to the avatar).

    Returns:
        (T, 68, 2) landmarks in the avatar's crop coordinates.
    """
    driving = np.asarray(driving, np.float64)
    avatar = np.asarray(avatar_landmarks, np.float64)
    if driving.ndim != 3 or driving.shape[1:] != (68, 2):
        raise ValueError(f"driving landmarks must be (T, 68, 2), got {driving.shape}")
    if mode not in ("relative", "absolute"):
        raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
    valid = np.isfinite(driving).all(axis=(1, 2))
    if not valid.any():
        raise ValueError("no valid driving landmarks")
    if reference == "best":
        ref_index = pick_reference_frame(driving, avatar)
    elif reference == "first":
        ref_index = int(np.flatnonzero(valid)[0])
    else:
        ref_index = int(reference)
        if not 0 <= ref_index < len(driving):
            from talkinghead.errors import TalkingHeadError

            raise TalkingHeadError(f"reference frame {ref_index}: the driving track has {len(driving)} frames "
                                   f"(0 to {len(driving) - 1})")
    ref_driver = driving[ref_index]
    m = similarity_transform(ref_driver[STABLE_POINTS], avatar[STABLE_POINTS])
    if mode == "absolute":
        out = apply_transform(m, driving)
    else:
        linear = m[:, :2]
        out = avatar[None] + (driving - ref_driver[None]) @ linear.T
    return out.astype(np.float32)

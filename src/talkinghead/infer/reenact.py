"""Driving-landmark adaptation for cross-person reenactment.

A driver's raw landmarks carry the driver's face shape (jaw width, eye distance, nose length).
Fed to another person's avatar they deform that person's face — the classic failure of earlier
ports. In *relative* mode (default; FOMM's relative motion, the paper's Fig. 1 right) we keep
the avatar's own face shape and add the driver's motion:

    out_t = ref_avatar + A · (drive_t − ref_driver)

where ``ref_driver`` is a driving frame chosen as the neutral reference (by default the one
nearest the avatar in head pose, mouths and eyelids aside; or the first; or the closest in all
68 points) and ``A`` is
the similarity transform (scale, rotation) that maps the driver's reference face onto the
avatar's. Global head motion (translation, rotation, scale change of the whole face) is
transferred the same way, through the displacements.

With ``neutral_mouth`` (default) both reference faces have their inner lips closed first
(:func:`close_mouth`): the driver's mouth opening is then carried over as an opening, not as an
offset from whatever its reference frame showed. Without it a reference frame caught
mid-speech shifts every later mouth by its opening (lips crossing when the driver closes,
staying shut when it opens a little), and an avatar photographed with its mouth open never
closes it.

*Absolute* mode only aligns each driving frame to the avatar with one similarity transform
(position, scale and rotation), keeping the driver's face shape; right for self-reenactment.
"""

from __future__ import annotations

import numpy as np

#: Points that barely move with expression (eye corners, nose bridge/tip, jaw corners):
#: the rigid frame of the face used for alignment.
STABLE_POINTS = np.array([0, 16, 27, 28, 29, 30, 31, 35, 36, 39, 42, 45])
#: Names of the reference choices (besides a frame index).
REFERENCES = ("neutral", "first", "best")


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


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T, 68, 2) → (T,) inner-lip gap divided by the inter-ocular distance."""
    landmarks = np.asarray(landmarks)
    gap = np.linalg.norm(landmarks[:, 66] - landmarks[:, 62], axis=-1)
    iod = np.linalg.norm(landmarks[:, 45] - landmarks[:, 36], axis=-1)
    return gap / np.maximum(iod, 1e-6)


def normalised_shape(points: np.ndarray) -> np.ndarray:
    """All 68 landmarks with position and scale removed (what is left is pose and shape)."""
    canon = points - points.mean(0)
    canon /= np.sqrt((canon ** 2).sum(1).mean()) + 1e-9
    return canon


def close_mouth(points: np.ndarray) -> np.ndarray:
    """(68, 2) or (T, 68, 2) → the same face with the inner lips shut: the lower lip and the
    jaw move up by the lips' gap (the upper lip stays), as :func:`~talkinghead.infer.expression.open_mouth`
    with scale 0 does."""
    from talkinghead.infer.expression import open_mouth

    points = np.asarray(points, np.float64)
    single = points.ndim == 2
    out = open_mouth(points[None] if single else points, 0.0)
    return out[0] if single else out


#: Points whose place says the head's pose: all but the eyelids and the inner lips (a blink
#: or a word would otherwise count as a turn of the head).
POSE_POINTS = np.setdiff1d(np.arange(68), [37, 38, 40, 41, 43, 44, 46, 47] + list(range(60, 68)))


def _pose_errors(driving: np.ndarray, avatar_landmarks: np.ndarray, points=slice(None)) -> np.ndarray:
    """(T,) mean difference of each valid driving frame's normalised landmarks (``points``
    only) from the avatar's (inf for invalid frames)."""
    target = normalised_shape(np.asarray(avatar_landmarks)[points])
    errors = np.full(len(driving), np.inf)
    for t, frame in enumerate(driving):
        if np.isfinite(frame).all():
            errors[t] = np.abs(normalised_shape(frame[points]) - target).mean()
    return errors


def pick_neutral_frame(driving: np.ndarray, avatar_landmarks: np.ndarray) -> int:
    """Index of the valid driving frame nearest in head pose to the avatar, both faces with
    their mouths closed (:func:`close_mouth`) and eyelids left out: what a word or a blink does
    does not count, only where the head points and the face's proportions."""
    driving = np.asarray(driving, np.float64)
    valid = np.isfinite(driving).all(axis=(1, 2))
    closed = np.full_like(driving, np.nan)
    closed[valid] = close_mouth(driving[valid])
    errors = _pose_errors(closed, close_mouth(avatar_landmarks), POSE_POINTS)
    return int(np.argmin(errors))


def pick_neutral_pair(driving: np.ndarray, shot_landmarks: np.ndarray) -> tuple[int, int]:
    """(driving frame, shot) indices of the valid driving frame and the avatar shot (K, 68, 2)
    nearest to each other in head pose, as :func:`pick_neutral_frame` measures it."""
    driving = np.asarray(driving, np.float64)
    valid = np.isfinite(driving).all(axis=(1, 2))
    closed = np.full_like(driving, np.nan)
    closed[valid] = close_mouth(driving[valid])
    errors = np.stack([_pose_errors(closed, close_mouth(shot), POSE_POINTS) for shot in np.asarray(shot_landmarks)])
    k, t = np.unravel_index(int(np.argmin(errors)), errors.shape)
    return int(t), int(k)


def pick_reference_frame(driving: np.ndarray, avatar_landmarks: np.ndarray) -> int:
    """Index of the driving frame whose head pose is closest to the avatar's (valid frames only)."""
    errors = _pose_errors(driving, avatar_landmarks)
    return int(np.argmin(errors)) if np.isfinite(errors).any() else 0


def adapt_landmarks(
    driving: np.ndarray,
    avatar_landmarks: np.ndarray,
    mode: str = "relative",
    reference: int | str = "neutral",
    neutral_mouth: bool = True,
) -> np.ndarray:
    """Map driving landmarks (T, 68, 2) onto an avatar whose own landmarks are (68, 2).

    Args:
        driving: driver's landmarks in any pixel frame (e.g. the driving video's).
        avatar_landmarks: the avatar's landmarks in its crop (the frame G renders in): (68, 2),
            or (K, 68, 2) for all its shots: relative mode with ``reference="neutral"`` then
            starts from the shot nearest in head pose to the driver's neutral frame
            (:func:`pick_neutral_pair`; the same person, so the same face shape, and no head
            turn added on top of the driver's); otherwise from the first shot.
        mode: ``"relative"`` (avatar's face shape + driver's motion) or ``"absolute"``.
        reference: driving frame used as the driver's neutral face: an index, ``"neutral"``
            (nearest the avatar's head pose: :func:`pick_neutral_frame`), ``"first"``
            (first valid frame) or ``"best"`` (closest pose to the avatar).
        neutral_mouth: relative mode only: close the inner lips of both reference faces
            (:func:`close_mouth`), so the driver's mouth opening is carried over as an opening.

    Returns:
        (T, 68, 2) landmarks in the avatar's crop coordinates.
    """
    driving = np.asarray(driving, np.float64)
    avatar = np.asarray(avatar_landmarks, np.float64)
    shots = avatar if avatar.ndim == 3 else avatar[None]
    if shots.shape[1:] != (68, 2) or not len(shots):
        raise ValueError(f"avatar landmarks must be (68, 2) or (K, 68, 2), got {avatar.shape}")
    avatar = shots[0]
    if driving.ndim != 3 or driving.shape[1:] != (68, 2):
        raise ValueError(f"driving landmarks must be (T, 68, 2), got {driving.shape}")
    if mode not in ("relative", "absolute"):
        raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
    valid = np.isfinite(driving).all(axis=(1, 2))
    if not valid.any():
        raise ValueError("no valid driving landmarks")
    if reference == "neutral" and mode == "relative" and len(shots) > 1:
        ref_index, shot = pick_neutral_pair(driving, shots)
        avatar = shots[shot]
    elif reference == "neutral":
        ref_index = pick_neutral_frame(driving, avatar)
    elif reference == "best":
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
        if neutral_mouth:
            avatar, ref_driver = close_mouth(avatar), close_mouth(ref_driver)
        out = avatar[None] + (driving - ref_driver[None]) @ linear.T
    return out.astype(np.float32)

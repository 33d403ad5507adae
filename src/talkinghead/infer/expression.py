"""Expression controls on driving landmarks: eye and mouth openness, smile, head turn.

LivePortrait retargets eyes and lips with small learned networks on its implicit keypoints
("large eyes won't close", LivePortrait #36). Our generator is driven by 68 landmarks, so the
same controls are a direct landmark edit, applied after the driver's landmarks were adapted to
the avatar (relative or absolute) and before rendering:

    marks = apply_expression(marks, Expression(eyes=0))   # (T, 68, 2) or (68, 2), crop pixels

* ``eyes``: scale of eye openness. Each upper/lower lid pair moves towards (0: onto) the point
  of the eye's corner line between them, so ``eyes=0`` gives an eye aspect ratio of 0; 1 is
  the identity; above 1 opens wider.
* ``lips``: scale of mouth openness (the inner lips' gap). The upper lip stays, the lower lip,
  lower outer lip and chin move with the jaw; ``lips=0`` closes the inner lips.
* ``mouth``: an extra opening as a fraction of the mouth's width (0: none), to open a mouth that
  is closed (``lips`` cannot: it scales a gap of 0).
* ``smile``: mouth corners moved out and up by this fraction of the mouth's width (0: none;
  negative: down).
* ``yaw``/``pitch``/``roll`` (degrees): a head turn. The 2-D landmarks are lifted onto a 3-D
  face (an ellipsoid as wide as the jaw, the nose standing out of it), rotated and projected
  back orthographically; an approximation that keeps the face's own shape and is exact for
  roll (a rotation in the picture). Positive yaw turns the face towards the picture's right,
  positive pitch raises the chin, positive roll tilts the head clockwise.

Landmark indices are the iBUG 68 points: jaw 0–16, nose 27–35, eyes 36–41 and 42–47, outer lips
48–59, inner lips 60–67.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from talkinghead.errors import TalkingHeadError

#: (corner, corner, (upper, lower) lid pairs) for each eye.
EYES = ((36, 39, ((37, 41), (38, 40))), (42, 45, ((43, 47), (44, 46))))
#: Inner-lip (upper, lower) pairs, left to right.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
#: Points that follow the lower inner lip when the jaw opens, with their share of its motion.
JAW_FOLLOWERS = {55: 0.7, 56: 1.0, 57: 1.0, 58: 1.0, 59: 0.7,
                 5: 0.3, 6: 0.6, 7: 0.85, 8: 1.0, 9: 0.85, 10: 0.6, 11: 0.3}
#: Mouth points moved by a smile, with their share of the corners' motion (left side, right side).
SMILE_LEFT = {48: 1.0, 60: 1.0, 49: 0.5, 59: 0.5, 61: 0.25, 67: 0.25}
SMILE_RIGHT = {54: 1.0, 64: 1.0, 53: 0.5, 55: 0.5, 63: 0.25, 65: 0.25}
#: How far out (along the mouth) and up a smile of 1 moves the corners, in mouth widths.
SMILE_OUT, SMILE_UP = 0.12, 0.18
#: Depth of the nose's points above the face's ellipsoid, in half jaw widths.
NOSE_DEPTH = {27: 0.10, 28: 0.18, 29: 0.27, 30: 0.38, 31: 0.18, 32: 0.24, 33: 0.28, 34: 0.24, 35: 0.18}
#: The face's ellipsoid: depth over half-width.
FACE_DEPTH = 0.8
#: Limits of the controls (what still looks like a face).
RANGES = {"eyes": (0.0, 3.0), "lips": (0.0, 3.0), "mouth": (0.0, 1.0), "smile": (-1.0, 1.0),
          "yaw": (-45.0, 45.0), "pitch": (-30.0, 30.0), "roll": (-45.0, 45.0)}


@dataclass(frozen=True)
class Expression:
    """Expression controls (see the module docstring); the defaults change nothing."""

    eyes: float = 1.0
    lips: float = 1.0
    mouth: float = 0.0
    smile: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            lo, hi = RANGES[f.name]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or not lo <= value <= hi:
                raise TalkingHeadError(f"{f.name}={value!r}: use a number from {lo:g} to {hi:g}")

    @property
    def is_identity(self) -> bool:
        return self == Expression()


def scale_eyes(points: np.ndarray, scale: float) -> np.ndarray:
    """(T, 68, 2) → the same with each eye's lid pairs ``scale`` times as far from their closure
    point (the point of the corner line halfway between them)."""
    out = points.copy()
    for a, b, pairs in EYES:
        corner, axis = points[:, a], points[:, b] - points[:, a]
        axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-6)
        for upper, lower in pairs:
            middle = (points[:, upper] + points[:, lower]) / 2
            closed = corner + ((middle - corner) * axis).sum(-1, keepdims=True) * axis  # (T, 2)
            out[:, upper] = closed + scale * (points[:, upper] - closed)
            out[:, lower] = closed + scale * (points[:, lower] - closed)
    return out


def open_mouth(points: np.ndarray, scale: float, extra: float = 0.0) -> np.ndarray:
    """(T, 68, 2) → the mouth's inner gap times ``scale`` plus ``extra`` mouth widths, by moving
    the lower lip and the chin (the jaw); the upper lip stays."""
    out = points.copy()
    gaps = np.stack([points[:, lower] - points[:, upper] for upper, lower in INNER_LIP_PAIRS], 1)  # (T, 3, 2)
    down = _face_down(points)  # (T, 2)
    width = np.linalg.norm(points[:, 54] - points[:, 48], axis=-1, keepdims=True)  # (T, 1)
    moves = (scale - 1) * gaps + (extra * width)[:, None] * down[:, None]  # (T, 3, 2)
    for (upper, lower), move in zip(INNER_LIP_PAIRS, moves.transpose(1, 0, 2)):
        out[:, lower] = points[:, lower] + move
    mean_move = moves.mean(1)
    for index, share in JAW_FOLLOWERS.items():
        out[:, index] = points[:, index] + share * mean_move
    return out


def _face_down(points: np.ndarray) -> np.ndarray:
    """(T, 68, 2) → (T, 2) unit vector from the eyes towards the mouth."""
    eyes = (points[:, 36] + points[:, 45]) / 2
    mouth = (points[:, 48] + points[:, 54]) / 2
    down = mouth - eyes
    return down / np.maximum(np.linalg.norm(down, axis=-1, keepdims=True), 1e-6)


def add_smile(points: np.ndarray, amount: float) -> np.ndarray:
    """(T, 68, 2) → mouth corners moved out and up by ``amount`` (fraction of the mouth's width)."""
    out = points.copy()
    width = np.linalg.norm(points[:, 54] - points[:, 48], axis=-1, keepdims=True)
    up = -_face_down(points)
    centre = (points[:, 48] + points[:, 54]) / 2
    for corner, side in ((48, SMILE_LEFT), (54, SMILE_RIGHT)):
        outward = points[:, corner] - centre
        outward = outward / np.maximum(np.linalg.norm(outward, axis=-1, keepdims=True), 1e-6)
        move = amount * width * (SMILE_OUT * outward + SMILE_UP * up)
        for index, share in side.items():
            out[:, index] = points[:, index] + share * move
    return out


def turn_head(points: np.ndarray, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """(T, 68, 2) → the face turned by ``yaw``, ``pitch``, ``roll`` degrees (module docstring)."""
    centre = points[:, 27:36].mean(1, keepdims=True)  # the nose: the head turns about it
    right = points[:, 45] - points[:, 36]
    right = right / np.maximum(np.linalg.norm(right, axis=-1, keepdims=True), 1e-6)
    down = np.stack([-right[:, 1], right[:, 0]], -1)  # the eye line turned 90° clockwise (y down)
    rel = points - centre
    u = (rel * right[:, None]).sum(-1)  # (T, 68) across the face
    v = (rel * down[:, None]).sum(-1)  # (T, 68) down the face
    half_width = np.maximum(np.abs(u[:, [0, 16]]).max(1, keepdims=True), 1e-6)  # (T, 1)
    half_height = np.maximum(np.abs(v).max(1, keepdims=True), 1e-6)
    inside = np.clip(1 - (u / half_width) ** 2 - (v / half_height) ** 2, 0, None)
    depth = FACE_DEPTH * half_width * np.sqrt(inside)
    for index, extra in NOSE_DEPTH.items():
        depth[:, index] += extra * half_width[:, 0]
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    # yaw about the face's vertical axis, then pitch about its horizontal one (z towards the viewer).
    u1 = u * math.cos(y) + depth * math.sin(y)
    z1 = -u * math.sin(y) + depth * math.cos(y)
    v1 = v * math.cos(p) - z1 * math.sin(p)
    # roll: a rotation in the picture, clockwise for positive angles (y points down)
    u2 = u1 * math.cos(r) - v1 * math.sin(r)
    v2 = u1 * math.sin(r) + v1 * math.cos(r)
    return centre + u2[..., None] * right[:, None] + v2[..., None] * down[:, None]


def apply_expression(landmarks: np.ndarray, expression: Expression) -> np.ndarray:
    """(T, 68, 2) or (68, 2) landmarks → the same shape with ``expression`` applied (float32)."""
    points = np.asarray(landmarks, np.float32)
    single = points.ndim == 2
    if single:
        points = points[None]
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise TalkingHeadError(f"landmarks must be (68, 2) or (T, 68, 2), got {np.shape(landmarks)}")
    if expression.is_identity:
        out = points.copy()
    else:
        out = points.astype(np.float64)
        if expression.eyes != 1:
            out = scale_eyes(out, expression.eyes)
        if expression.lips != 1 or expression.mouth:
            out = open_mouth(out, expression.lips, expression.mouth)
        if expression.smile:
            out = add_smile(out, expression.smile)
        if expression.yaw or expression.pitch or expression.roll:
            out = turn_head(out, expression.yaw, expression.pitch, expression.roll)
        out = out.astype(np.float32)
    return out[0] if single else out


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """(…, 68, 2) → (…,) eye aspect ratio (Soukupová & Čech 2016), both eyes averaged: lid
    distances over the corner distance; about 0.25–0.35 for an open eye, near 0 closed."""
    points = np.asarray(landmarks, np.float64)
    ratios = []
    for a, b, pairs in EYES:
        lids = sum(np.linalg.norm(points[..., u, :] - points[..., l, :], axis=-1) for u, l in pairs)
        ratios.append(lids / (2 * np.maximum(np.linalg.norm(points[..., b, :] - points[..., a, :], axis=-1), 1e-6)))
    return (ratios[0] + ratios[1]) / 2


def inner_lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(…, 68, 2) → (…,) mean inner-lip gap over the outer eye-corner distance."""
    points = np.asarray(landmarks, np.float64)
    gap = np.mean([np.linalg.norm(points[..., l, :] - points[..., u, :], axis=-1) for u, l in INNER_LIP_PAIRS], 0)
    return gap / np.maximum(np.linalg.norm(points[..., 45, :] - points[..., 36, :], axis=-1), 1e-6)

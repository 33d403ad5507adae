"""A procedural 68-point face: a template shape with controllable mouth opening, smile and
head motion, and a crude rendered face for it.

Used for tests (data sets with known structure, no downloads) and for procedural driving
tracks (talking, nodding, smiling) when no driving video is given.
"""

from __future__ import annotations

import numpy as np


def _arc(x0: float, x1: float, y: float, bend: float, n: int) -> np.ndarray:
    t = np.linspace(0, 1, n)
    return np.stack([x0 + (x1 - x0) * t, y - bend * np.sin(np.pi * t)], 1)


def template_landmarks(size: int, mouth_open: float = 0.0, smile: float = 0.0) -> np.ndarray:
    """A frontal face in the 68-point iBUG order, framed like a prepared crop.

    Args:
        size: crop side in pixels.
        mouth_open: lip gap as a fraction of the crop side (0 closed … ~0.08 wide open).
        smile: mouth-corner lift as a fraction of the side (0 … ~0.03).
    Returns:
        (68, 2) float32 (x, y) pixel coordinates.
    """
    th = np.pi - np.arange(17) * np.pi / 16
    jaw = np.stack([0.5 + 0.26 * np.cos(th), 0.47 + 0.33 * np.sin(th)], 1)
    brow_r = _arc(0.30, 0.45, 0.39, 0.03, 5)
    brow_l = _arc(0.55, 0.70, 0.39, 0.03, 5)
    bridge = np.stack([np.full(4, 0.5), np.linspace(0.45, 0.58, 4)], 1)
    base = np.array([[0.45, 0.61], [0.475, 0.62], [0.5, 0.625], [0.525, 0.62], [0.55, 0.61]])

    def eye(cx: float, inner_right: bool) -> np.ndarray:
        # 6 points: corner, 2 top, corner, 2 bottom (clockwise from the left corner).
        rx, ry, cy = 0.05, 0.018, 0.46
        pts = np.array([[cx - rx, cy], [cx - rx / 3, cy - ry], [cx + rx / 3, cy - ry],
                        [cx + rx, cy], [cx + rx / 3, cy + ry], [cx - rx / 3, cy + ry]])
        return pts

    eye_r, eye_l = eye(0.38, True), eye(0.62, False)
    cx, cy = 0.5, 0.72
    w = 0.11 + smile
    gap = mouth_open
    lift = smile
    # Outer lip: 48 left corner, 49-53 top (left→right), 54 right corner, 55-59 bottom (right→left).
    top_x = cx + w * np.array([-0.6, -0.3, 0.0, 0.3, 0.6])
    top_y = cy - 0.025 - gap / 2 + np.array([0.004, -0.004, 0.0, -0.004, 0.004])
    bot_x = cx + w * np.array([0.6, 0.3, 0.0, -0.3, -0.6])
    bot_y = cy + 0.03 + gap / 2 - np.array([0.008, 0.0, -0.004, 0.0, 0.008])
    outer = np.concatenate([[[cx - w, cy - lift]], np.stack([top_x, top_y], 1),
                            [[cx + w, cy - lift]], np.stack([bot_x, bot_y], 1)])
    # Inner lip: 60 left corner, 61-63 top, 64 right corner, 65-67 bottom.
    iw = w * 0.75
    inner = np.array([[cx - iw, cy - lift], [cx - iw / 2, cy - gap / 2], [cx, cy - gap / 2],
                      [cx + iw / 2, cy - gap / 2], [cx + iw, cy - lift], [cx + iw / 2, cy + gap / 2],
                      [cx, cy + gap / 2], [cx - iw / 2, cy + gap / 2]])
    pts = np.concatenate([jaw, brow_r, brow_l, bridge, base, eye_r, eye_l, outer, inner])
    return (pts * size).astype(np.float32)


def move_landmarks(points: np.ndarray, dx: float = 0.0, dy: float = 0.0, angle_deg: float = 0.0,
                   scale: float = 1.0) -> np.ndarray:
    """Rigidly move (68, 2) landmarks about their centre (a head shift, tilt or zoom)."""
    c = points.mean(0)
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * scale
    return ((points - c) @ rot.T + c + np.array([dx, dy])).astype(np.float32)


def turned_to_profile(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) faces turned towards profile, as dlib marks one: the left half squeezed onto
    the nose line (the hidden far side), the near half widened."""
    points = np.asarray(points, np.float32)
    nose_x = points[..., 27:31, :1].mean(-2, keepdims=True)
    dx = points[..., :1] - nose_x
    return np.concatenate([nose_x + np.where(dx < 0, 0.12, 1.25) * dx, points[..., 1:]], -1).astype(np.float32)


def procedural_track(size: int, frames: int = 100, fps: float = 25.0) -> np.ndarray:
    """A talking, nodding and smiling head: (T, 68, 2) landmarks in a ``size`` crop."""
    t = np.arange(frames) / fps
    out = []
    for ti in t:
        mouth = 0.045 * max(0.0, np.sin(2 * np.pi * 2.2 * ti)) ** 0.7  # syllables ~2 Hz
        smile = 0.02 * max(0.0, np.sin(2 * np.pi * 0.25 * ti))
        pts = template_landmarks(size, mouth_open=mouth, smile=smile)
        pts = move_landmarks(pts, dy=0.02 * size * np.sin(2 * np.pi * 0.5 * ti),
                             angle_deg=4 * np.sin(2 * np.pi * 0.3 * ti))
        out.append(pts)
    return np.stack(out)


def render_synthetic_face(landmarks: np.ndarray, size: int, skin=(200, 160, 130),
                          background=(60, 80, 110)) -> np.ndarray:
    """A crude face image for given landmarks (skin oval, dark eyes, brows, red lips).

    Returns (size, size, 3) uint8 RGB. The face follows the landmarks, so a generator can
    learn the sketch → image mapping on it.
    """
    import cv2

    img = np.full((size, size, 3), background, np.uint8)
    pts = np.asarray(landmarks, np.float32)
    jaw = pts[0:17]
    top = np.stack([jaw[::-1, 0], 2 * pts[27, 1] - jaw[::-1, 1] - 0.1 * size], 1)
    face = np.concatenate([jaw, top]).astype(np.int32)
    cv2.fillPoly(img, [cv2.convexHull(face)], skin, cv2.LINE_AA)
    for idx in (range(36, 42), range(42, 48)):
        cv2.fillPoly(img, [pts[list(idx)].astype(np.int32)], (30, 30, 30), cv2.LINE_AA)
    for idx in (range(17, 22), range(22, 27)):
        cv2.polylines(img, [pts[list(idx)].astype(np.int32)], False, (70, 40, 20), max(1, size // 64),
                      cv2.LINE_AA)
    cv2.fillPoly(img, [pts[48:60].astype(np.int32)], (170, 40, 50), cv2.LINE_AA)
    cv2.fillPoly(img, [pts[60:68].astype(np.int32)], (40, 10, 10), cv2.LINE_AA)
    cv2.polylines(img, [pts[27:36].astype(np.int32)], False, (150, 110, 90), max(1, size // 96), cv2.LINE_AA)
    return img

"""The inside of a mouth where no shot shows one, put on the finished frames at their own
resolution (a 512-px face gets a 512-px mouth), inside the target's inner-lip polygon, faded in
as the target's opening exceeds the widest opening among the avatar's shots
(:func:`interior_level`): where a shot opens as wide, the warped shot guides the mouth
(:func:`~talkinghead.data.mouth.guide_distrust`) and nothing is put there.

Two ways (``mouth.interior``):

* **learned** (:class:`LearnedInterior`, the default): the mouth generator
  (:mod:`talkinghead.models.mouth`) fills a canonical crop of each frame's mouth from the lips
  around it and the person's widest-open shot; the crop is warped back into the frame.
* **drawn** (:func:`draw_interior`): a dark cavity, the upper teeth under the upper lip, the
  lower teeth and the tongue as the jaw drops, coloured like the person. Every layer is a
  closed-form function of each pixel's place between the lips (numpy over a window around the
  mouth, no loops over pixels); teeth keep their size in mouth widths whatever the opening.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from talkinghead.infer.reenact import mouth_opening

#: Upper (left corner → right corner) and lower inner-lip polylines of the 68-point scheme.
UPPER_INNER = (60, 61, 62, 63, 64)
LOWER_INNER = (60, 67, 66, 65, 64)
#: Tooth boundaries across the mouth (0: left inner corner, 1: right), incisors widest.
TOOTH_EDGES = 0.5 + np.array([0.0, 0.085, 0.155, 0.215, 0.265, 0.31, 0.35, 0.39])
#: Upper and lower teeth heights and the tongue's, in inner-mouth widths. These and the colours
#: below were chosen on training identities' clips (benchmarks/mouth_interior.py --split train).
UPPER_TEETH = 0.18
LOWER_TEETH = 0.10
TONGUE = 0.35
#: Lower teeth show from this opening on (inner gap over inner width), fully 0.15 later.
LOWER_TEETH_FROM = 0.15
#: Teeth lie in the mouth's shade: their colour is scaled by this (the lower teeth by 0.8 of it).
TEETH_SHADE = 0.9
#: A shot's inner-lip gap (inter-ocular distances) from which the bright pixels between its lips
#: are taken for its teeth (a narrower gap shows lips and highlights, not teeth).
TEETH_SHOWN_GAP = 0.05
#: The cavity's colour: the lips' scaled per channel (a dark red-brown).
CAVITY = (0.48, 0.26, 0.26)


@dataclass
class MouthPalette:
    """The person's mouth colours, RGB in [0, 255]."""

    lips: np.ndarray
    teeth: np.ndarray
    cavity: np.ndarray
    tongue: np.ndarray


def _polygon(size_hw: tuple[int, int], points: np.ndarray) -> np.ndarray:
    mask = np.zeros(size_hw, np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def mouth_palette(image: np.ndarray, landmarks: np.ndarray) -> MouthPalette:
    """Colours from one (H, W, 3) uint8 shot and its (68, 2) landmarks: the lips' median (the
    ring between the outer and inner lip lines), the teeth's where the shot shows bright
    pixels between its lips, else an off-white as bright as the face allows."""
    image = np.asarray(image)
    hw = image.shape[:2]
    outer = _polygon(hw, landmarks[48:60])
    inner = _polygon(hw, landmarks[60:68])
    ring = outer & ~inner
    pixels = image[ring].astype(np.float32) if ring.sum() >= 4 else image.reshape(-1, 3).astype(np.float32)
    lips = np.median(pixels, 0)
    face = _polygon(hw, landmarks[[1, 2, 3, 13, 14, 15, 35, 31]])
    face_pixels = image[face].astype(np.float32) if face.sum() >= 4 else pixels
    brightness = float(np.clip(np.median(face_pixels.mean(1)) / 150.0, 0.55, 1.05))
    teeth = np.array([236.0, 228.0, 212.0]) * brightness
    shown = image[inner].astype(np.float32)
    gap = float(mouth_opening(landmarks[None])[0])
    if len(shown) >= 12 and gap >= TEETH_SHOWN_GAP:
        light = shown.mean(1)
        bright = shown[(light > np.percentile(face_pixels.mean(1), 60)) & (shown.std(1) < 28)]
        if len(bright) >= 6:
            teeth = np.percentile(bright, 60, axis=0)
    cavity = lips * np.array(CAVITY)
    tongue = lips * np.array([0.92, 0.62, 0.62])
    return MouthPalette(lips.astype(np.float32), np.clip(teeth, 0, 255).astype(np.float32),
                        cavity.astype(np.float32), tongue.astype(np.float32))


def interior_level(opening: np.ndarray, shot_openings: np.ndarray, ramp: float) -> np.ndarray:
    """(T,) target openings and (K,) shot openings (inter-ocular distances) → (T,) in [0, 1]:
    how much of the drawn interior replaces the rendered mouth."""
    widest = float(np.max(shot_openings)) if len(shot_openings) else 0.0
    return np.clip((np.asarray(opening) - widest) / ramp, 0.0, 1.0)


def _smooth(edge: np.ndarray, soft: float) -> np.ndarray:
    """0 → 1 across ``edge`` ∈ [−soft/2, soft/2] pixels (anti-aliased edge)."""
    return np.clip(edge / max(soft, 1e-6) + 0.5, 0.0, 1.0)


def draw_interior(image: np.ndarray, landmarks: np.ndarray, level: float, palette: MouthPalette,
                  blur: float = 0.0) -> np.ndarray:
    """One (H, W, 3) uint8 frame with the interior drawn between its (68, 2) landmarks' inner
    lips at ``level`` ∈ [0, 1] opacity (a copy; the frame itself when there is nothing to draw).
    ``blur``: Gaussian σ in pixels, as soft as the face around it (a face enlarged from the
    network's size is that soft); the interior's own edges are never sharper than 1 px."""
    if level <= 0:
        return image
    marks = np.asarray(landmarks, np.float64)
    left, right = marks[60], marks[64]
    width = float(np.linalg.norm(right - left))
    if not np.isfinite(marks).all() or width < 3:
        return image
    ex = (right - left) / width
    ey = np.array([-ex[1], ex[0]])
    if np.dot(ey, (marks[57] - marks[51])) < 0:  # "down" points from the upper lip to the lower
        ey = -ey
    h, w = image.shape[:2]
    inner = marks[60:68]
    pad = 2 + 2 * blur
    x0, y0 = np.floor(inner.min(0) - pad).astype(int)
    x1, y1 = np.ceil(inner.max(0) + pad).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 <= x0 or y1 <= y0:
        return image
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
    rel = np.stack([xs - left[0], ys - left[1]], -1)
    u = rel @ ex / width  # 0 at the left inner corner, 1 at the right
    t = rel @ ey  # pixels below the corners' line

    def curve(indices):
        pts = marks[list(indices)] - left
        cu, ct = pts @ ex / width, pts @ ey
        order = np.argsort(cu)
        return np.interp(u, cu[order], ct[order])

    top, bottom = curve(UPPER_INNER), curve(LOWER_INNER)
    gap = np.maximum(bottom - top, 0.0)
    d_top, d_bot = t - top, bottom - t
    soft = 1.0
    alpha = _smooth(np.minimum(d_top, d_bot), soft) * _smooth(np.minimum(u, 1 - u) * width, soft)
    alpha *= gap > 0.3
    if not alpha.any():
        return image
    side = np.abs(u - 0.5) * 2  # 0 in the middle, 1 at the corners
    max_gap = float(gap.max())
    depth = np.clip(np.minimum(d_top, d_bot) / max(0.5 * max_gap, 1e-6), 0, 1)
    colour = palette.cavity[None, None] * (1.0 - 0.35 * depth - 0.3 * side ** 3)[..., None]

    open_ratio = max_gap / width
    tongue_h = TONGUE * max_gap * np.sqrt(np.clip(1 - ((u - 0.5) / 0.34) ** 2, 0, 1)) * np.clip((open_ratio - 0.2) / 0.2, 0, 1)
    tongue = _smooth(tongue_h - d_bot, soft * 2)
    tongue_shade = (0.75 + 0.25 * np.clip(d_bot / np.maximum(tongue_h, 1e-6), 0, 1))[..., None]
    colour = colour * (1 - tongue[..., None]) + palette.tongue[None, None] * tongue_shade * tongue[..., None]

    nearest_edge = np.min(np.abs(np.abs(u - 0.5)[..., None] + 0.5 - TOOTH_EDGES), -1)
    gaps_between = 1 - 0.2 * np.exp(-(nearest_edge * width / max(0.7, width * 0.006)) ** 2)
    within = np.clip(np.abs(u - 0.5), 0, TOOTH_EDGES[-1] - 0.5)
    lower_index = np.clip(np.searchsorted(TOOTH_EDGES - 0.5, within.ravel()).reshape(within.shape), 1, len(TOOTH_EDGES) - 1)
    span = (TOOTH_EDGES - 0.5)[lower_index] - (TOOTH_EDGES - 0.5)[lower_index - 1]
    frac = (within - (TOOTH_EDGES - 0.5)[lower_index - 1]) / span  # 0…1 across each tooth
    round_tip = 0.8 + 0.2 * np.sin(np.pi * np.clip(frac, 0, 1))
    recede = (1 - 0.5 * side ** 2)[..., None]

    upper_h = UPPER_TEETH * width * round_tip * (1 - 0.35 * side)
    upper = _smooth(upper_h - d_top, soft) * _smooth(0.8 - side, 2 * soft / width)
    shadow = (0.72 + 0.28 * np.clip(d_top / np.maximum(0.35 * upper_h, 1e-6), 0, 1))[..., None]
    teeth_up = palette.teeth[None, None] * TEETH_SHADE * recede * shadow * gaps_between[..., None]
    colour = colour * (1 - upper[..., None]) + teeth_up * upper[..., None]

    lower_h = LOWER_TEETH * width * round_tip * np.clip((gap / width - LOWER_TEETH_FROM) / 0.15, 0, 1)
    lower = _smooth(lower_h - d_bot, soft) * _smooth(0.62 - side, 2 * soft / width)
    teeth_low = palette.teeth[None, None] * 0.8 * TEETH_SHADE * recede * gaps_between[..., None]
    colour = colour * (1 - lower[..., None]) + teeth_low * lower[..., None]

    sigma = max(0.5, width / 90, blur)
    colour = cv2.GaussianBlur(colour.astype(np.float32), (0, 0), sigma)
    if blur > 1:
        alpha = cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), blur / 2)
    a = (alpha * float(level))[..., None]
    out = image.copy()
    window = out[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    out[y0:y1 + 1, x0:x1 + 1] = np.clip(window * (1 - a) + colour * a, 0, 255).round().astype(np.uint8)
    return out


def draw_interiors(frames: np.ndarray, landmarks: np.ndarray, levels: np.ndarray, palette: MouthPalette,
                   blur: float = 0.0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames, (T, 68, 2) landmarks in their pixels, (T,) levels → frames
    with interiors drawn (in place where drawn); ``blur`` as in :func:`draw_interior`."""
    for t in np.flatnonzero(np.asarray(levels) > 0):
        frames[t] = draw_interior(frames[t], landmarks[t], float(levels[t]), palette, blur)
    return frames


class LearnedInterior:
    """The mouth generator (:mod:`talkinghead.models.mouth`) on finished frames: each frame's
    mouth is cut into the canonical crop, its grown inner-lip polygon filled by the network from
    the surrounding lips and the person's shot, and the filled crop warped back at the frame's
    own resolution (a 512-px face gets its mouth from a crop about as wide as the mouth there,
    not from the 128-px generator), faded in by each frame's level."""

    def __init__(self, net, shot: np.ndarray, shot_landmarks: np.ndarray):
        """``net``: a :class:`~talkinghead.models.mouth.MouthGenerator`; ``shot``: (H, W, 3) uint8
        image of the person (the avatar's shot whose mouth opens widest) and its (68, 2) landmarks."""
        import torch

        from talkinghead.data.mouth import cut_mouth_for_generator

        self.net = net.eval()
        self.session = onnx_session(self.net)
        cfg = net.config
        crop, mask, _ = cut_mouth_for_generator(shot, shot_landmarks, cfg.size, cfg.span, cfg.grow)
        self.shot = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
        self.shot_mask = torch.from_numpy(mask)[None, None]

    def fill(self, frames: np.ndarray, landmarks: np.ndarray, levels: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """(T, H, W, 3) uint8 frames, (T, 68, 2) landmarks in their pixels, (T,) levels → the
        frames with the mouths of those whose level is above 0 replaced (in place)."""
        import torch

        from talkinghead.data.mouth import cut_mouth_for_generator

        cfg = self.net.config
        todo = [t for t in np.flatnonzero(np.asarray(levels) > 0)
                if np.isfinite(landmarks[t]).all() and np.linalg.norm(landmarks[t][54] - landmarks[t][48]) >= 3]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            crops, masks, matrices = [], [], []
            for t in chunk:
                crop, mask, matrix = cut_mouth_for_generator(frames[t], landmarks[t], cfg.size, cfg.span, cfg.grow)
                crops.append(crop)
                masks.append(mask)
                matrices.append(matrix)
            target = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
            mask = torch.from_numpy(np.stack(masks))[:, None]
            filled = self.run(target, mask)
            filled = ((filled.permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255).numpy()
            for t, crop, matrix in zip(chunk, filled, matrices):
                frames[t] = paste_mouth(frames[t], crop, matrix, landmarks[t], float(levels[t]), cfg.grow)
        return frames

    def run(self, target, mask):
        """(B, 3, S, S) target crops and (B, 1, S, S) masks → the filled crops (torch)."""
        import torch

        n = len(target)
        shot, shot_mask = self.shot.expand(n, -1, -1, -1), self.shot_mask.expand(n, -1, -1, -1)
        if self.session is None:
            with torch.no_grad():
                return self.net.fill(target, mask, shot, shot_mask)
        inputs = self.net.inputs(target, mask, shot, shot_mask).numpy()
        out = torch.from_numpy(self.session.run(None, {"x": inputs})[0])
        return target * (1 - mask) + out * mask


def onnx_session(net):
    """An onnxruntime session running ``net`` (about twice PyTorch's speed on a CPU for this
    small network), or None where onnxruntime is not installed or the export fails."""
    import io
    import logging
    import warnings

    import torch

    from talkinghead.infer.onnx_export import cpu_session

    try:
        import onnxruntime
    except ImportError:
        return None
    size = net.config.size
    example = torch.zeros(1, 8, size, size)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(net, example, buffer, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
        return cpu_session(onnxruntime, buffer.getvalue(), torch.get_num_threads())
    except Exception as exc:  # exporter and runtime raise many types; PyTorch still works
        logging.getLogger(__name__).debug(f"mouth generator stays in PyTorch ({exc})")
        return None


def paste_mouth(image: np.ndarray, crop: np.ndarray, matrix: np.ndarray, landmarks: np.ndarray, level: float,
                grow: float) -> np.ndarray:
    """Warp a filled (S, S, 3) float mouth crop back into (H, W, 3) uint8 ``image`` (a copy)
    through the inverse of its (2, 3) image → crop ``matrix``, inside the frame's inner-lip
    polygon grown as the network's was, at ``level`` opacity. Only a window around the mouth
    is touched (a 512-px frame is not warped whole)."""
    from talkinghead.data.mouth import inner_lip_polygon_mask

    h, w = image.shape[:2]
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # crop pixels per image pixel
    grow_px = grow / scale
    inner = np.asarray(landmarks, np.float64)[60:68]
    pad = int(np.ceil(grow_px + 3))
    x0, y0 = np.maximum(np.floor(inner.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(inner.max(0)).astype(int) + pad, [w - 1, h - 1])
    if x1 <= x0 or y1 <= y0:
        return image
    size = (int(x1 - x0 + 1), int(y1 - y0 + 1))
    to_window = cv2.invertAffineTransform(matrix)  # crop → image
    to_window[:, 2] -= (x0, y0)
    mouth = cv2.warpAffine(crop.astype(np.float32), to_window, size, flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REPLICATE)
    alpha = inner_lip_polygon_mask(inner - (x0, y0), (size[1], size[0]), grow_px, max(0.5, 0.35 / scale))
    alpha = (alpha * level)[..., None]
    out = image.copy()
    window = out[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    out[y0:y1 + 1, x0:x1 + 1] = np.clip(window * (1 - alpha) + mouth * alpha, 0, 255).round().astype(np.uint8)
    return out

"""Piecewise-affine landmark warping: move an image's face onto other landmarks.

The classical warp of talking-head work (and the guide of the warp-guided generator): the image
plane is cut into triangles whose corners are the 68 landmarks, 10 forehead points above the
brows and 16 fixed points on (just outside) the image border; each triangle of the target
landmarks takes its pixels from the same triangle of the source landmarks by one affine map.
The map is continuous, covers the whole frame, and sends every source landmark exactly onto
its target.

Only the head moves: a soft head mask (the jaw line and a forehead/hair region above the
brows, grown by a margin) of the source and of the target decides where the warp applies; the
displacement fades to zero outside it, so the background stays rigid.

Everything is batched torch (matmuls, ``argmax``, ``gather``, ``grid_sample``): it runs in
data-loader workers, in CPU inference, on a GPU and in an ONNX graph. One triangulation (a
Delaunay triangulation of a mean face) serves every face, so batches share it.

Where the source hides part of the face (the far cheek of a face in profile), the triangles
that should hold it are squeezed to slivers in the source, and warping them onto a face seen
from the front smears a few pixels of the nose edge across the whole cheek. Those triangles
are filled from their mirror images instead (the visible cheek, reflected), as frontalisation
by soft symmetry does (Hassner et al., CVPR 2015; :data:`OCCLUSION_MAGNIFICATION`).

Degenerate input never gives NaN: triangles of (near) zero area are skipped, pixels outside
every triangle use the nearest triangle's map, and a sample whose landmarks are not finite is
left unwarped (its source landmarks are used as the target).

This module is geometry only: which shots a warp-guided G's guide warps, and how they are
weighted, is :mod:`talkinghead.models.guide`; the occluders pasted over guides in training are
:mod:`talkinghead.data.augment`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from talkinghead.data.landmarks import MIRROR_68

#: Mean 68-point face in a VoxCeleb2-style crop ([0, 1] units; mean of the bundled driving track
#: after the crop framing of :mod:`talkinghead.data.crop`). Only the triangulation uses it.
TEMPLATE_68 = np.array([
    0.243, 0.252, 0.246, 0.329, 0.257, 0.407, 0.269, 0.482, 0.291, 0.553, 0.330, 0.617, 0.379, 0.670,
    0.438, 0.710, 0.506, 0.722, 0.570, 0.709, 0.623, 0.669, 0.669, 0.618, 0.706, 0.560, 0.728, 0.492,
    0.740, 0.419, 0.751, 0.346, 0.757, 0.272, 0.294, 0.203, 0.332, 0.172, 0.383, 0.167, 0.434, 0.174,
    0.482, 0.192, 0.557, 0.197, 0.603, 0.182, 0.651, 0.178, 0.698, 0.184, 0.729, 0.216, 0.520, 0.238,
    0.520, 0.286, 0.521, 0.333, 0.522, 0.382, 0.465, 0.418, 0.491, 0.427, 0.517, 0.435, 0.542, 0.429,
    0.566, 0.421, 0.352, 0.238, 0.382, 0.224, 0.414, 0.227, 0.440, 0.249, 0.410, 0.252, 0.378, 0.250,
    0.583, 0.254, 0.611, 0.233, 0.643, 0.234, 0.669, 0.249, 0.645, 0.259, 0.614, 0.259, 0.414, 0.534,
    0.448, 0.509, 0.487, 0.498, 0.512, 0.507, 0.539, 0.500, 0.572, 0.513, 0.599, 0.538, 0.570, 0.573,
    0.538, 0.592, 0.509, 0.595, 0.481, 0.591, 0.445, 0.572, 0.428, 0.535, 0.486, 0.520, 0.511, 0.523,
    0.538, 0.521, 0.585, 0.538, 0.538, 0.558, 0.510, 0.562, 0.483, 0.557,
], np.float64).reshape(68, 2)

#: Forehead points sit above the brows by this fraction of the chin → top-of-nose vector.
FOREHEAD_RISE = 0.35
#: Border points: 5 per side on a square this fraction of the size outside the image.
BORDER_MARGIN = 0.1
#: Head mask: 1 up to this fraction of the chin → top-of-nose distance outside the jaw and
#: forehead polygon, then fading to 0 over another ``HEAD_MASK_FEATHER`` of it.
HEAD_MASK_GROW = 0.1
HEAD_MASK_FEATHER = 0.25
#: Symmetric fill: a target triangle whose source triangle is magnified more than this (area
#: ratio), or folded, is taken to be hidden in the source, and is filled from its mirror image
#: when that one is not magnified at all (≤ :data:`MIRROR_MAGNIFICATION`: the visible side holds
#: every pixel the target needs). The far cheek of a profile, squeezed onto the nose line, is
#: magnified 5-80× or folded, its mirror 0.1-0.3×; a head turned 45° magnifies its far cheek
#: about 1.5-2×; an opening mouth magnifies both sides alike (4-6×), so it is never mirrored.
OCCLUSION_MAGNIFICATION = 4.0
MIRROR_MAGNIFICATION = 1.0
#: Jaw line (left ear → chin → right ear) and brows (left to right) in the 68-point scheme.
_JAW = list(range(0, 17))
_BROWS = list(range(17, 27))


def forehead_points(landmarks: Tensor) -> Tensor:
    """(..., 68, 2) → (..., 10, 2): points above the brows that move rigidly with the face."""
    up = landmarks[..., 27, :] - landmarks[..., 8, :]
    return landmarks[..., 17:27, :] + FOREHEAD_RISE * up[..., None, :]


def border_points(size: int, dtype=torch.float32, device=None) -> Tensor:
    """(16, 2) fixed points on a square just outside an S×S image (pixel centres at 0..S-1)."""
    lo, hi = -0.5 - BORDER_MARGIN * size, size - 0.5 + BORDER_MARGIN * size
    ticks = torch.linspace(lo, hi, 5, dtype=dtype, device=device)
    top = torch.stack([ticks, torch.full_like(ticks, lo)], -1)
    bottom = torch.stack([ticks, torch.full_like(ticks, hi)], -1)
    left = torch.stack([torch.full_like(ticks[1:-1], lo), ticks[1:-1]], -1)
    right = torch.stack([torch.full_like(ticks[1:-1], hi), ticks[1:-1]], -1)
    return torch.cat([top, bottom, left, right])


def control_points(landmarks: Tensor, size: int) -> Tensor:
    """(B, 68, 2) → (B, 94, 2): landmarks, forehead points, border points."""
    border = border_points(size, landmarks.dtype, landmarks.device).expand(landmarks.shape[0], -1, -1)
    return torch.cat([landmarks, forehead_points(landmarks), border], dim=1)


#: Index of each control point's mirror image (:func:`control_points`): landmarks by
#: :data:`~talkinghead.data.landmarks.MIRROR_68`, forehead points reversed (they rise from the
#: brows), border points reflected (top and bottom reversed, left ↔ right).
MIRROR_CONTROL_POINTS = np.concatenate([
    MIRROR_68, 68 + np.arange(9, -1, -1), 78 + np.arange(4, -1, -1), 83 + np.arange(4, -1, -1),
    91 + np.arange(3), 88 + np.arange(3)]).astype(np.int64)


def _triangulation() -> np.ndarray:
    from scipy.spatial import Delaunay

    template = torch.from_numpy(TEMPLATE_68[None] * 100.0)
    points = control_points(template.float(), 100)[0].numpy()
    return Delaunay(points).simplices.astype(np.int64)


#: (T, 3) vertex indices into :func:`control_points`, shared by every face.
TRIANGLES = _triangulation()


def _template_orientation() -> np.ndarray:
    points = control_points(torch.from_numpy(TEMPLATE_68[None] * 100.0), 100)[0].numpy()
    a, b, c = (points[TRIANGLES[:, i]] for i in range(3))
    return np.sign((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


#: (T,) ±1: the orientation of each triangle on the mean face.
TEMPLATE_ORIENTATION = _template_orientation()


def _pixel_grid(size: int, dtype, device, resolution: int | None = None) -> Tensor:
    """(3, R·R) homogeneous (x, y, 1), row-major: the pixel centres of an R×R grid laid over the
    S×S frame, in the frame's pixel units (R = S: the frame's own pixel centres)."""
    resolution = resolution or size
    coords = (torch.arange(resolution, dtype=dtype, device=device) + 0.5) * (size / resolution) - 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones_like(xs).reshape(-1)])


def _det3(m: Tensor) -> Tensor:
    """Determinants of (..., 3, 3) matrices, written out: ONNX has no general det/inverse."""
    return (m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
            - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
            + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0]))


def _inverse3(m: Tensor) -> Tensor:
    """Inverses of invertible (..., 3, 3) matrices by the adjugate."""
    rows = []
    for i in range(3):
        row = []
        for j in range(3):  # cofactor C[j, i] (transposed: the adjugate)
            r = [k for k in range(3) if k != j]
            c = [k for k in range(3) if k != i]
            minor = m[..., r[0], c[0]] * m[..., r[1], c[1]] - m[..., r[0], c[1]] * m[..., r[1], c[0]]
            row.append(minor if (i + j) % 2 == 0 else -minor)
        rows.append(torch.stack(row, -1))
    return torch.stack(rows, -2) / _det3(m)[..., None, None]


def _triangle_maps(source: Tensor, target: Tensor, size: int,
                   with_mirror: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Per triangle of the target: (B, T, 3, 3) to barycentric, (B, T, 2, 3) barycentric → source
    point, (B, T) whether it is usable (not degenerate), (B, T) its magnification (target area ÷
    source area; 1e9 where the source triangle is folded or has no area), and with ``with_mirror``
    the same map and magnification from the source triangle's mirror image (else None, None)."""
    finite = (torch.isfinite(source).all(-1).all(-1) & torch.isfinite(target).all(-1).all(-1))[:, None, None]
    source = torch.where(finite, source, 0.0)
    target = torch.where(finite, target, source)  # no usable landmarks: identity
    tris = torch.from_numpy(TRIANGLES).to(source.device)
    points = control_points(source.double(), size)  # (B, 94, 2)
    src = points[:, tris]  # (B, T, 3, 2)
    dst = control_points(target.double(), size)[:, tris]
    ones = torch.ones(*dst.shape[:-1], 1, dtype=dst.dtype, device=dst.device)
    corners = torch.cat([dst, ones], -1).transpose(-1, -2)  # (B, T, 3, 3): columns (x, y, 1)
    orientation = torch.from_numpy(TEMPLATE_ORIENTATION).to(dst)
    det = _det3(corners) * orientation  # 2 × area, in px², > 0 when not folded
    # A triangle is used only if it keeps the mean face's orientation: where landmarks cross
    # (a closed mouth's inner lips, noisy points) a folded triangle would cover its neighbours.
    usable = det > 1e-3
    eye = torch.eye(3, dtype=dst.dtype, device=dst.device)
    to_bary = _inverse3(torch.where(usable[..., None, None], corners, eye))  # (B, T, 3, 3)

    def from_source(src_tris: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        src_det = sign * _det3(torch.cat([src_tris, ones], -1).transpose(-1, -2)) * orientation
        magnification = torch.where(src_det > 1e-3, det.abs() / src_det.clamp(min=1e-3), 1e9)
        return (src_tris.transpose(-1, -2) @ to_bary).float(), magnification.float()  # (B, T, 2, 3), (B, T)

    affine, magnification = from_source(src, 1.0)
    mirror_affine = mirror_magnification = None
    if with_mirror:  # the mirror of a triangle: its corners' mirror points, a reflection (reversed orientation)
        mirror_tris = torch.from_numpy(MIRROR_CONTROL_POINTS[TRIANGLES]).to(source.device)
        mirror_affine, mirror_magnification = from_source(points[:, mirror_tris], -1.0)
    return to_bary.float(), affine, usable, magnification, mirror_affine, mirror_magnification


def piecewise_affine_map(source: Tensor, target: Tensor, size: int, resolution: int | None = None) -> Tensor:
    """For every pixel of the target frame, where to sample the source frame.

    Args:
        source, target: (B, 68, 2) landmarks in pixels of the S×S frames.
        resolution: evaluate the map on an R×R grid over the frame (see :func:`_pixel_grid`).
    Returns:
        (B, R, R, 2) source pixel coordinates (x, y), in S×S frame pixels, for each grid point.
    """
    b, r = source.shape[0], resolution or size
    to_bary, affine, usable = _triangle_maps(source, target, size)[:3]
    pixels = _pixel_grid(size, torch.float32, source.device, r)  # (3, R·R)
    return _apply_map(to_bary, affine, usable, pixels).reshape(b, r, r, 2)


def symmetric_map(source: Tensor, target: Tensor, size: int,
                  resolution: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """:func:`piecewise_affine_map`, and for the triangles the source hides, their mirrors' map.

    Returns:
        (B, R, R, 2) the plain map, and either None (no triangle needs the fill; never while
        tracing, so an exported graph keeps it) or ((B, R, R, 2) the mirrored map, in the
        source's own frame, and (B, R, R) where to use it, 0 or 1).
    """
    b, r = source.shape[0], resolution or size
    to_bary, affine, usable, magnification, mirror_affine, mirror_magnification = _triangle_maps(
        source, target, size, with_mirror=True)
    use = (magnification > OCCLUSION_MAGNIFICATION) & (mirror_magnification <= MIRROR_MAGNIFICATION)  # (B, T)
    pixels = _pixel_grid(size, torch.float32, source.device, r)  # (3, R·R)
    if not (torch.jit.is_tracing() or bool(use.any())):
        return _apply_map(to_bary, affine, usable, pixels).reshape(b, r, r, 2), None
    # Same target triangles, so one search serves both maps and the flag.
    table = torch.cat([affine.flatten(2), mirror_affine.flatten(2), use[..., None].float()], -1)  # (B, T, 13)
    rows = _triangle_rows(to_bary, usable, pixels, table)  # (B, P, 13)
    direct = _affine_points(rows[..., :6], pixels).reshape(b, r, r, 2)
    mirror = _affine_points(rows[..., 6:12], pixels).reshape(b, r, r, 2)
    return direct, (mirror, rows[..., 12].reshape(b, r, r))


def _triangle_rows(to_bary: Tensor, usable: Tensor, points: Tensor, table: Tensor) -> Tensor:
    """For homogeneous points (3, P), the row of ``table`` (B, T, W) of the target triangle that
    contains each (or is nearest to it) → (B, P, W). to_bary (B, T, 3, 3): corners → barycentric."""
    b, t = to_bary.shape[:2]
    # Rows ordered (B, 3, T, 3): each barycentric coordinate's scores are contiguous per point, so
    # the min over the three and the argmax over triangles run along the innermost axis.
    flat = to_bary.transpose(1, 2).reshape(b, 3 * t, 3).transpose(1, 2)  # (B, 3, 3T), one GEMM
    penalty = torch.where(usable, 0.0, -1e9).float()[:, None, :]  # (B, 1, T)
    width = table.shape[-1]
    out = torch.empty(b, points.shape[1], width, device=points.device)
    # Points per pass: ~0.5 M scores stay in the CPU cache (several times faster than one big
    # pass); a traced graph takes all points in one pass.
    chunk = points.shape[1] if torch.jit.is_tracing() else max(1, 2 ** 19 // (int(b) * t * 3))
    for start in range(0, points.shape[1], chunk):
        bary = points[:, start:start + chunk].T[None] @ flat  # (B, p, 3T)
        score = torch.minimum(torch.minimum(bary[..., :t], bary[..., t:2 * t]), bary[..., 2 * t:]) + penalty
        best = score.argmax(dim=-1)  # (B, p): the containing (or nearest) triangle
        out[:, start:start + chunk] = torch.gather(table, 1, best[..., None].expand(-1, -1, width))
    return out


def _affine_points(rows: Tensor, points: Tensor) -> Tensor:
    """Apply per-point affine maps (B, P, 6), rows of a (2, 3) matrix, to points (3, P) → (B, P, 2)."""
    return (rows.reshape(*rows.shape[:2], 2, 3) * points.T[None, :, None, :]).sum(-1)


def _apply_map(to_bary: Tensor, affine: Tensor, usable: Tensor, points: Tensor) -> Tensor:
    """Map homogeneous points (3, P) through each sample's piecewise-affine map → (B, P, 2).

    to_bary (B, T, 3, 3): target corners → barycentric; affine (B, T, 2, 3): the triangle's map.
    """
    return _affine_points(_triangle_rows(to_bary, usable, points, affine.flatten(2)), points)


def map_points(source: Tensor, target: Tensor, points: Tensor, size: int) -> Tensor:
    """Where :func:`piecewise_affine_map` sends arbitrary target-frame points (B, Q, 2) → (B, Q, 2)."""
    to_bary, affine, usable = _triangle_maps(source, target, size)[:3]
    ones = torch.ones(*points.shape[:-1], 1, dtype=torch.float32, device=points.device)
    homogeneous = torch.cat([points.float(), ones], -1)  # (B, Q, 3)
    return torch.cat([_apply_map(to_bary[i:i + 1], affine[i:i + 1], usable[i:i + 1], homogeneous[i].T)
                      for i in range(points.shape[0])])


def head_mask(landmarks: Tensor, size: int, grow: float = HEAD_MASK_GROW,
              feather: float = HEAD_MASK_FEATHER, resolution: int | None = None,
              upsample: bool = True) -> Tensor:
    """Soft mask of the head: the polygon of the jaw line and the forehead points, grown by
    ``grow`` and faded out over ``feather`` (both in units of the chin → top-of-nose distance).

    Args:
        landmarks: (B, 68, 2) pixels.
        resolution: evaluate on an R×R grid over the frame (it is smooth), then upsample to
            S×S unless ``upsample`` is False.
    Returns:
        (B, 1, S, S) (or (B, 1, R, R)) in [0, 1].
    """
    b, r = landmarks.shape[0], resolution or size
    marks = torch.nan_to_num(landmarks.float(), nan=-1e4)
    poly = torch.cat([marks[:, _JAW], forehead_points(marks).flip(1)], dim=1)  # (B, E, 2)
    a, c = poly, poly.roll(-1, dims=1)  # edges a → c
    pixels = _pixel_grid(size, torch.float32, landmarks.device, r)[:2].T  # (P, 2)
    p = pixels[None, :, None, :]  # (1, P, 1, 2)
    a_, c_ = a[:, None], c[:, None]  # (B, 1, E, 2)
    edge = c_ - a_
    t = (((p - a_) * edge).sum(-1) / (edge.pow(2).sum(-1) + 1e-9)).clamp(0, 1)
    dist = (p - (a_ + t[..., None] * edge)).norm(dim=-1).amin(dim=-1)  # (B, P)
    # Even-odd rule: count edges crossed by a ray to the right of each pixel.
    ay, cy = a_[..., 1], c_[..., 1]
    straddles = (ay > p[..., 1]) != (cy > p[..., 1])
    x_cross = a_[..., 0] + (p[..., 1] - ay) * edge[..., 0] / torch.where(edge[..., 1] == 0, 1e-9, edge[..., 1])
    inside = ((straddles & (p[..., 0] < x_cross)).sum(-1) % 2) == 1  # (B, P)
    signed = torch.where(inside, dist, -dist)
    scale = (marks[:, 27] - marks[:, 8]).norm(dim=-1).clamp(min=1.0)[:, None]  # (B, 1)
    u = ((signed + (grow + feather) * scale) / (feather * scale)).clamp(0, 1)
    mask = (u * u * (3 - 2 * u)).reshape(b, 1, r, r)  # smoothstep
    return _resize(mask, size) if upsample else mask


def _motion_weight(source: Tensor, target: Tensor, size: int, target_mask: Tensor | None = None,
                   coarse: int | None = None) -> Tensor:
    """(B, 1, R, R), R = ``coarse`` (default S/2): how much of the warp applies, the union of both
    head masks."""
    coarse = coarse or max(8, size // 2)
    fine = max(8, coarse // 2)
    if target_mask is None:
        target_mask = head_mask(target, size, resolution=fine, upsample=False)
    weight = torch.maximum(target_mask, head_mask(source, size, resolution=fine, upsample=False))
    return _resize(weight, coarse)


def motion_mask(source: Tensor, target: Tensor, size: int) -> Tensor:
    """(B, 1, S, S) in [0, 1]: where :func:`warp_image` moves pixels (with ``rigid_background``);
    every pixel where it is 0 keeps its value exactly."""
    return _resize(_motion_weight(source, target, size), size)


def warp_image(image: Tensor, source: Tensor, target: Tensor, rigid_background: bool = True,
               symmetric_fill: bool = True, map_resolution: int | None = None) -> tuple[Tensor, Tensor]:
    """Warp images from their landmarks onto target landmarks.

    Args:
        image: (B, C, S, S). source: (B, 68, 2) its landmarks. target: (B, 68, 2).
        rigid_background: fade the warp to the identity outside the source and target head
            masks (else the whole frame bends with the head).
        symmetric_fill: fill triangles the source hides from their mirror images
            (:data:`OCCLUSION_MAGNIFICATION`).
        map_resolution: the grid (R×R) the dense map is computed on before it is upsampled to
            S×S (default S/2; the masks at R/2). A large image warps at the cost of a small one.
    Returns:
        warped (B, C, S, S), and a (B, 1, S, S) mask in [0, 1] of where the warped pixels are the
        target's head and come from inside the source image (the guide's trust map).
    """
    b, _, size, _ = image.shape
    # The map is continuous and piecewise affine, the masks smooth: both are evaluated on a
    # half-resolution grid (quarter for the masks) and upsampled, 4-16× less work per frame.
    coarse = map_resolution or max(8, size // 2)
    pixels = _pixel_grid(size, torch.float32, image.device, coarse)[:2].T.reshape(1, coarse, coarse, 2)
    if symmetric_fill:
        direct, fill = symmetric_map(source, target, size, coarse)
    else:
        direct, fill = piecewise_affine_map(source, target, size, coarse), None
    target_mask = head_mask(target, size, resolution=max(8, coarse // 2), upsample=False)
    weight = (_motion_weight(source, target, size, target_mask, coarse).permute(0, 2, 3, 1)
              if rigid_background else None)
    warped, inside = _sample(image, direct - pixels, weight)
    if fill is not None:
        mirror, use = fill
        mirrored, mirror_inside = _sample(image, mirror - pixels, weight)
        # Colours, not coordinates, are blended: the seam between the two maps is a fold.
        # Feathered over ~3 coarse pixels, so the fill fades into its neighbours, not a cut-out.
        use = F.avg_pool2d(use[:, None], 3, stride=1, padding=1, count_include_pad=False)
        use = _resize(F.avg_pool2d(use, 3, stride=1, padding=1, count_include_pad=False), size).to(image.dtype)
        warped = use * mirrored + (1 - use) * warped
        inside = use * mirror_inside + (1 - use) * inside
    return warped, _resize(target_mask, size).to(image.dtype) * inside


def _sample(image: Tensor, shift: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """Sample (B, C, S, S) images at their pixel centres plus a coarse (B, R, R, 2) shift, faded by
    ``weight`` (B, R, R, 1) if given → (B, C, S, S), and (B, 1, S, S) 1 where inside the image."""
    size = image.shape[-1]
    if weight is not None:
        shift = shift * weight
    shift = _resize(shift.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)
    coords = _pixel_grid(size, torch.float32, image.device)[:2].T.reshape(1, size, size, 2) + shift
    normalised = (2 * coords + 1) / size - 1  # align_corners=False
    # Bicubic: bilinear resampling at sub-pixel offsets loses fine detail; clamped, as cubic overshoots.
    warped = F.grid_sample(image, normalised.to(image.dtype), mode="bicubic", padding_mode="border",
                           align_corners=False)
    lo, hi = image.amin(dim=(1, 2, 3), keepdim=True), image.amax(dim=(1, 2, 3), keepdim=True)
    warped = torch.minimum(torch.maximum(warped, lo), hi)  # per sample
    return warped, (normalised.abs() <= 1).all(-1)[:, None].to(image.dtype)


def _resize(grid: Tensor, size: int) -> Tensor:
    """Bilinear resize of (B, C, R, R) to (B, C, S, S), pixel centres aligned (align_corners=False)."""
    if grid.shape[-1] == size:
        return grid
    b, c, r, _ = grid.shape  # one channel at a time: torch's CPU kernel is several times faster so
    flat = F.interpolate(grid.reshape(b * c, 1, r, r), size=(size, size), mode="bilinear", align_corners=False)
    return flat.reshape(b, c, size, size)

"""Training augmentation for a warp-guided G: hand-like occluders pasted over the guide."""

from __future__ import annotations

import torch
from torch import Tensor

#: :func:`paste_occluders`: where a pasted "hand" is centred — a random one of these landmarks
#: (eyes, nose, mouth), the parts a hand in a shot covers.
OCCLUDER_CENTRES = (36, 39, 42, 45, 30, 33, 48, 51, 54, 57, 62, 66)


def paste_occluders(images: Tensor, donors: Tensor, landmarks: Tensor, probability: float) -> Tensor:
    """Training augmentation for a warp-guided G: a hand-like patch over part of the face.

    A shot with a hand over the face is warped like any other, and G learned to trust the warp:
    it copies the hand. Pasting four finger-shaped pieces of *another* image (``donors``: the
    batch's other targets, so skin and face texture at the same place in the crop) over the
    guide while the target stays clean teaches G to distrust what the sketch does not explain.

    Args:
        images: (B, C, S, S), C ≥ 3: the guide; only its first 3 channels are pasted over
            (the trust mask still claims a valid warp, as it would for a real hand).
        donors: (B, 3, S, S) in the same range. landmarks: (B, 68, 2) where the face is.
        probability: chance of an occluder per row.
    Returns:
        (B, C, S, S), a new tensor.
    """
    b, _, size, _ = images.shape
    device, dtype = images.device, images.dtype
    hit = torch.rand(b, device=device) < probability
    if not bool(hit.any()):
        return images
    marks = landmarks.to(device=device, dtype=torch.float32)
    eye_distance = (marks[:, 45] - marks[:, 36]).norm(dim=-1).clamp(min=2.0)  # (B,)
    pick = torch.randint(len(OCCLUDER_CENTRES), (b,), device=device)
    centre = marks[torch.arange(b, device=device), torch.tensor(OCCLUDER_CENTRES, device=device)[pick]]
    centre = centre + (torch.rand(b, 2, device=device) - 0.5) * 0.5 * eye_distance[:, None]
    angle = torch.rand(b, device=device) * torch.pi  # fingers at any slant
    length = eye_distance * (0.6 + 0.6 * torch.rand(b, device=device))  # half-length of a finger
    width = eye_distance * 0.15  # half-width
    ys, xs = torch.meshgrid(torch.arange(size, device=device, dtype=torch.float32) + 0.5,
                            torch.arange(size, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    dx, dy = xs[None] - centre[:, 0, None, None], ys[None] - centre[:, 1, None, None]  # (B, S, S)
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    along, across = dx * cos + dy * sin, -dx * sin + dy * cos
    mask = torch.zeros(b, size, size, device=device)
    for finger in (-1.5, -0.5, 0.5, 1.5):  # four fingers side by side, the outer ones shorter
        offset = across - finger * 1.9 * width[:, None, None]
        reach = length[:, None, None] * (1.0 - 0.15 * abs(finger))
        inside = 1.0 - (along / reach) ** 2 - (offset / width[:, None, None]) ** 2
        mask = torch.maximum(mask, (inside * 4.0).clamp(0.0, 1.0))  # soft edge
    mask = (mask * hit[:, None, None]).to(dtype)[:, None]  # (B, 1, S, S)
    out = images.clone()
    out[:, :3] = images[:, :3] * (1 - mask) + donors.to(dtype) * mask
    return out

"""FID, only with the standard Inception weights and only when they are already on disk.

FID computed with random or substitute weights would be a number without meaning, so where
pytorch-fid and its weights (``pt_inception-2015-12-05-6726825d.pth`` in torch's hub cache)
are not present, FID is reported as unavailable, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


def _weights_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS


def fid_available() -> tuple[bool, str]:
    try:
        import pytorch_fid  # noqa: F401
    except ImportError:
        return False, "FID unavailable: pytorch-fid is not installed (pip install pytorch-fid)"
    if not _weights_path().is_file():
        return False, f"FID unavailable: Inception weights not found offline ({_weights_path()})"
    return True, "FID with pytorch-fid's standard Inception weights"


def compute_fid(real: np.ndarray, fake: np.ndarray) -> float | None:
    """FID between (N, H, W, 3) uint8 image sets, or None when unavailable (see fid_available)."""
    ok, _reason = fid_available()
    if not ok:
        return None
    import torch
    from pytorch_fid.fid_score import calculate_frechet_distance
    from pytorch_fid.inception import InceptionV3

    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    def stats(images: np.ndarray):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            feats = torch.cat([model(x[i:i + 32])[0].squeeze(-1).squeeze(-1) for i in range(0, len(x), 32)])
        f = feats.numpy().astype(np.float64)
        return f.mean(0), np.cov(f, rowvar=False)

    mu1, s1 = stats(real)
    mu2, s2 = stats(fake)
    return float(calculate_frechet_distance(mu1, s1, mu2, s2))

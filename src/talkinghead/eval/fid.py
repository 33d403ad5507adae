"""FID, only with the standard Inception weights and only when they are already on disk.

FID computed with random or substitute weights would be a number without meaning, so FID is
computed only when one of these is usable offline (nothing is ever downloaded):

* pytorch-fid, with ``pt_inception-2015-12-05-6726825d.pth`` in torch's hub cache
  (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``);
* torchmetrics (with torch-fidelity), with ``weights-inception-2015-12-05-6726825d.pth`` there.

Both are the TF Inception-v3 of the FID paper ported to PyTorch (pool3, 2048-d). Neither is a
dependency of this project. Both need torchvision, which the CPU reference machines lack; there
:func:`fid_available` says why and :func:`compute_fid` returns None.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np

PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
#: Backward-compatible name.
WEIGHTS = PYTORCH_FID_WEIGHTS

# backend name → (modules that must import, weight file name)
_BACKENDS = {
    "pytorch-fid": (("pytorch_fid.inception", "pytorch_fid.fid_score"), PYTORCH_FID_WEIGHTS),
    "torchmetrics": (("torchmetrics.image.fid", "torch_fidelity"), TORCH_FIDELITY_WEIGHTS),
}


def _checkpoints_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def _usable_backend() -> tuple[str | None, str]:
    """(backend, "") when one is usable, else (None, reason)."""
    ckpt = _checkpoints_dir()
    notes, import_errors = [], []
    for name, (modules, weights) in _BACKENDS.items():
        path = ckpt / weights
        installed = all(_installed(m) for m in modules)
        if not path.is_file():
            notes.append(f"{name}: {path} missing{'' if installed else ', package not installed'}")
            continue
        if not installed:
            notes.append(f"{name}: weights present but {modules[0].split('.')[0]} is not installed")
            import_errors.append(name)
            continue
        try:
            for m in modules:
                importlib.import_module(m)
        except Exception as exc:  # e.g. torchvision missing
            notes.append(f"{name}: weights present but cannot import {m} ({type(exc).__name__}: {exc})")
            import_errors.append(name)
            continue
        return name, ""
    if import_errors:
        return None, "FID unavailable: " + "; ".join(notes)
    return None, "FID unavailable: Inception weights not found offline (" + "; ".join(notes) + ")"


def fid_available() -> tuple[bool, str]:
    """(True, description) when FID can be computed offline with standard weights, else
    (False, "FID unavailable: ..." with the reason)."""
    backend, reason = _usable_backend()
    if backend is None:
        return False, reason
    return True, f"FID with {backend}'s standard Inception-v3 weights (pool3, 2048-d)"


def _as_uint8_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    if len(images) < 2:
        raise ValueError("FID needs at least 2 images per set")
    return images


def compute_fid(real_images: np.ndarray, fake_images: np.ndarray, batch_size: int = 32) -> float | None:
    """FID between two (N, H, W, 3) uint8 RGB image sets, or None when unavailable (see
    :func:`fid_available`). Images are resized to 299² inside the Inception network."""
    real = _as_uint8_batch(real_images)
    fake = _as_uint8_batch(fake_images)
    backend, _reason = _usable_backend()
    if backend is None:
        return None
    import torch

    def batches(images: np.ndarray):
        for i in range(0, len(images), batch_size):
            yield torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2)

    if backend == "pytorch-fid":
        from pytorch_fid.fid_score import calculate_frechet_distance
        from pytorch_fid.inception import InceptionV3

        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()  # loads the cached weights

        def stats(images: np.ndarray):
            with torch.no_grad():
                feats = torch.cat([model(x.float() / 255.0)[0].flatten(1) for x in batches(images)])
            f = feats.double().numpy()
            return f.mean(0), np.cov(f, rowvar=False)

        return float(calculate_frechet_distance(*stats(real), *stats(fake)))

    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=2048, normalize=False)
    with torch.no_grad():
        for x in batches(real):
            metric.update(x, real=True)
        for x in batches(fake):
            metric.update(x, real=False)
        return float(metric.compute())

"""FID (Heusel et al. 2017), only with the standard Inception weights and only from a local file.

FID computed with random or substitute weights would be a number without meaning, so FID is
computed only when one of these files is on disk (nothing is ever downloaded):

* ``$TALKINGHEAD_INCEPTION`` (a path);
* pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth`` in torch's hub cache
  (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``).

Both are the TF Inception-v3 of the FID paper; :mod:`talkinghead.eval.inception` runs either
without torchvision or those packages. The features are pool3 (2048-d); the distance is
pytorch-fid's computation (``scipy.linalg.sqrtm``, with its offset for singular products).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
#: Backward-compatible name.
WEIGHTS = PYTORCH_FID_WEIGHTS
#: Environment variable naming an Inception weight file in either format.
ENV_VAR = "TALKINGHEAD_INCEPTION"


def _checkpoints_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights() -> tuple[Path | None, str]:
    """(path, "") of a local Inception weight file, or (None, why not)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        if Path(explicit).is_file():
            return Path(explicit), ""
        return None, f"FID unavailable: ${ENV_VAR}={explicit} does not exist"
    looked = [_checkpoints_dir() / name for name in (PYTORCH_FID_WEIGHTS, TORCH_FIDELITY_WEIGHTS)]
    for path in looked:
        if path.is_file():
            return path, ""
    return None, ("FID unavailable: Inception weights not found offline ("
                  + "; ".join(f"{p} missing" for p in looked) + f"; or set ${ENV_VAR})")


def fid_available() -> tuple[bool, str]:
    """(True, description) when FID can be computed offline with standard weights, else
    (False, "FID unavailable: ..." with the reason)."""
    path, reason = find_inception_weights()
    if path is None:
        return False, reason
    return True, f"FID with the standard Inception-v3 weights `{path.name}` (pool3, 2048-d)"


def _as_uint8_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    if len(images) < 2:
        raise ValueError("FID needs at least 2 images per set")
    return images


def inception_features(images: np.ndarray, model, batch_size: int = 32) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB → (N, 2048) float64 pool3 features."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).permute(0, 3, 1, 2)
            out.append(model(x.to(device)).double().cpu().numpy())
    return np.concatenate(out)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½), as pytorch-fid computes it."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():  # singular product: offset the diagonals
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two (N, D) feature sets.

    With fewer samples than dimensions (an evaluation's few hundred frames against D = 2048)
    Σ = AAᵀ/(n−1) has rank < D and tr (Σ1 Σ2)^½ is exactly the nuclear norm of
    A1ᵀA2 / √((n1−1)(n2−1)) (the square roots of Σ1 Σ2's eigenvalues are its singular values):
    an n1×n2 SVD instead of a D×D matrix square root, and no offset for singularity.
    """
    n1, n2, dim = len(real), len(fake), real.shape[1]
    if max(n1, n2) >= dim:
        return frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    a1, a2 = real - real.mean(0), fake - fake.mean(0)
    cross = np.linalg.svd(a1 @ a2.T / np.sqrt((n1 - 1) * (n2 - 1)), compute_uv=False).sum()
    diff = real.mean(0) - fake.mean(0)
    return float(diff.dot(diff) + (a1 * a1).sum() / (n1 - 1) + (a2 * a2).sum() / (n2 - 1) - 2 * cross)


def load_fid_model(device: str = "cpu"):
    """The Inception network from the local weight file, or None when there is none."""
    from talkinghead.eval.inception import load_inception

    path, _ = find_inception_weights()
    return None if path is None else load_inception(path).to(device)


def compute_fid(real_images: np.ndarray, fake_images: np.ndarray, batch_size: int = 32,
                model=None) -> float | None:
    """FID between two (N, H, W, 3) uint8 RGB image sets, or None when no weights are on disk
    (see :func:`fid_available`). ``model``: an Inception network to use instead of the file's
    (tests pass a randomly initialised one). Images are resized to 299² inside the network."""
    real = _as_uint8_batch(real_images)
    fake = _as_uint8_batch(fake_images)
    model = model if model is not None else load_fid_model()
    if model is None:
        return None
    return fid_from_features(inception_features(real, model, batch_size), inception_features(fake, model, batch_size))


class FIDFeatures:
    """Inception features of every evaluated (video, K): the real targets and each method's
    frames, saved as ``FOLDER/NAME.fid.npz`` beside the per-video results, so that a resumed
    evaluation's FID still covers every video. :meth:`scores` gives FID per (K, method)."""

    def __init__(self, folder: Path, model, weights: Path):
        self.folder, self.model, self.weights = Path(folder), model, weights

    @classmethod
    def create(cls, folder) -> "FIDFeatures | None":
        """None when no Inception weights are on disk (the report then says why)."""
        import torch

        from talkinghead.eval.inception import load_inception

        path, _ = find_inception_weights()
        if path is None:
            return None
        return cls(folder, load_inception(path).to("cuda" if torch.cuda.is_available() else "cpu"), path)

    def add(self, name: str, outputs: dict[str, np.ndarray], real: np.ndarray) -> None:
        """Store the Inception features of one (video, K): every method's ``outputs``
        {method: (T, H, W, 3)} and the ``real`` (T, H, W, 3) frames."""
        from talkinghead.fileio import atomic_path

        arrays = {"real": inception_features(real, self.model)}
        arrays.update({m: inception_features(frames, self.model) for m, frames in outputs.items()})
        with atomic_path(self.folder / f"{name}.fid.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def scores(self, rows: list[dict]) -> tuple[dict[tuple[int, str], float], str]:
        """FID per (K, method) over all ``rows`` (per-video results), and the report's note."""
        # The per-video file name of run_evaluation: identity/video → identity__video, plus K.
        names = {(r["video"].replace("/", "__") + f"__K{r['shots']}", r["shots"]) for r in rows}
        missing = [n for n, _ in names if not (self.folder / f"{n}.fid.npz").is_file()]
        if missing:
            return {}, (f"FID: not computed: {len(missing)} of {len(names)} (video, K) pairs were evaluated "
                        f"without Inception features (e.g. {missing[0]}); delete their per_video results to redo them")
        features: dict[tuple[int, str], list[np.ndarray]] = {}
        for name, k in sorted(names):
            with np.load(self.folder / f"{name}.fid.npz") as data:
                for method in data.files:
                    features.setdefault((k, method), []).append(data[method])
        scores, counts = {}, set()
        for (k, method), parts in features.items():
            if method == "real":
                continue
            real, fake = np.concatenate(features[(k, "real")]), np.concatenate(parts)
            if len(real) >= 2 and len(fake) >= 2:
                scores[(k, method)] = fid_from_features(real, fake)
                counts.add(len(fake))
        note = (f"FID: Inception-v3 pool3 features (`{self.weights.name}`) of all generated vs all real target "
                f"frames per row ({', '.join(str(c) for c in sorted(counts))} frames each); with so few "
                "frames FID is biased upwards: compare rows, not papers.")
        return scores, note

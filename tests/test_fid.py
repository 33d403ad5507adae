"""FID against a reference implementation, both running one randomly initialised Inception-v3
of the standard architecture: the code path is exercised without the real weights.

The reference network is torch-fidelity's (``pip install --no-deps torch-fidelity``: its
Inception module needs only torch, though the package lists torchvision); the reference
distance is computed independently here from eigenvalues instead of a matrix square root.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from talkinghead.eval.fid import compute_fid, fid_available, fid_from_features, inception_features
from talkinghead.eval.inception import FIDInceptionV3, load_inception


def _torch_fidelity_inception():
    """torch-fidelity's Inception module, imported without its package __init__ (which
    imports torchvision)."""
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        pytest.skip("torch-fidelity not installed (pip install --no-deps torch-fidelity)")
    if "torch_fidelity" not in sys.modules:
        package = types.ModuleType("torch_fidelity")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["torch_fidelity"] = package
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3


def _random_inception(seed: int = 0) -> FIDInceptionV3:
    torch.manual_seed(seed)
    model = FIDInceptionV3()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):  # variance-preserving, so features are not ~0 after 90 layers
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics, so every layer matters
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.8, 1.2)
    return model.eval()


def _reference_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 Σ √λ(Σ1 Σ2). Σ1 Σ2 = A1 (A1ᵀ A2 A2ᵀ) / c, so its non-zero
    eigenvalues are those of the small (A1ᵀ A2)(A2ᵀ A1) / c, computed here with eigvals."""
    a1, a2 = real - real.mean(0), fake - fake.mean(0)
    c = (len(real) - 1) * (len(fake) - 1)
    eig = np.linalg.eigvals((a1 @ a2.T) @ (a2 @ a1.T) / c)
    mu = real.mean(0) - fake.mean(0)
    return float(mu @ mu + (a1 ** 2).sum() / (len(real) - 1) + (a2 ** 2).sum() / (len(fake) - 1)
                 - 2 * np.sqrt(np.clip(eig.real, 0, None)).sum())


@pytest.mark.parametrize("samples", [10, 80])
def test_low_rank_distance_equals_pytorch_fid_formula(samples):
    """Fewer samples than dimensions takes the exact SVD route; it must equal the D×D matrix
    square root route (pytorch-fid's), and so must the full-rank case (n ≥ D uses it directly)."""
    from talkinghead.eval.fid import fid_from_features, frechet_distance

    rng = np.random.default_rng(samples)
    real = rng.normal(size=(samples, 64)) @ rng.normal(size=(64, 64))
    fake = rng.normal(0.3, 1.2, size=(samples + 3, 64)) @ rng.normal(size=(64, 64))
    expected = frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False),
                                eps=1e-10)
    assert abs(fid_from_features(real, fake) - expected) <= 1e-6 * expected


def test_fid_matches_reference_with_random_inception(tmp_path):
    Reference = _torch_fidelity_inception()
    model = _random_inception()
    weights = tmp_path / "random_inception.pth"
    torch.save(model.state_dict(), weights)
    # The same file loads into both networks (strictly: the architectures are the same).
    reference = Reference("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    ours = load_inception(weights)

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (3, 299, 299, 3), dtype=np.uint8)
    fake = np.clip(real.astype(int) + rng.integers(-60, 60, real.shape), 0, 255).astype(np.uint8)

    with torch.no_grad():
        ref_real = reference(torch.from_numpy(real).permute(0, 3, 1, 2))[0].double().numpy()
        ref_fake = reference(torch.from_numpy(fake).permute(0, 3, 1, 2))[0].double().numpy()
    our_real, our_fake = inception_features(real, ours), inception_features(fake, ours)
    assert our_real.shape == (3, 2048) and np.abs(our_real).max() > 1e-2  # not a vanishing signal
    np.testing.assert_allclose(our_real, ref_real, rtol=1e-4, atol=1e-5 * np.abs(ref_real).max())
    np.testing.assert_allclose(our_fake, ref_fake, rtol=1e-4, atol=1e-5 * np.abs(ref_fake).max())

    fid = fid_from_features(our_real, our_fake)  # what compute_fid returns (tested end to end below)
    expected = _reference_fid(ref_real, ref_fake)
    assert fid > 0 and abs(fid - expected) <= 1e-3 * expected
    assert abs(fid_from_features(our_real, our_real)) <= 1e-6 * expected  # a set against itself: 0


def test_fid_uses_a_local_weight_file(tmp_path, monkeypatch):
    """With a weight file named by $TALKINGHEAD_INCEPTION, FID is computed from it."""
    weights = tmp_path / "inception.pth"
    torch.save(_random_inception(1).state_dict(), weights)
    monkeypatch.setenv("TALKINGHEAD_INCEPTION", str(weights))
    ok, description = fid_available()
    assert ok and "inception.pth" in description
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)  # resized to 299 inside
    b = rng.integers(0, 128, (2, 64, 64, 3), dtype=np.uint8)
    assert compute_fid(a, b) > 0
    monkeypatch.setenv("TALKINGHEAD_INCEPTION", str(tmp_path / "missing.pth"))
    ok, reason = fid_available()
    assert not ok and "missing.pth does not exist" in reason


def test_report_has_an_fid_column_only_where_computed(tmp_path):
    """Evaluation wiring: features saved per (video, K) give FID per (K, method); rows whose
    features are missing make the report say so instead of a partial FID."""
    from pathlib import Path

    from talkinghead.eval.fid import FIDFeatures
    from talkinghead.eval.report import write_report

    rng = np.random.default_rng(0)
    metrics = {m: {"ssim": [0.5] * 3, "psnr": [20.0] * 3, "csim": [0.8] * 3, "nme": [0.1] * 3,
                   "face_found": [1.0] * 3} for m in ("nearest source", "FF", "FT")}
    rows = [{"video": f"person{i}/v", "identity": f"person{i}", "shots": 1, "ft_steps": 5, "targets": [0, 1, 2],
             "metrics": metrics} for i in range(2)]
    features = FIDFeatures(tmp_path, model=None, weights=Path("pt_inception-2015-12-05-6726825d.pth"))
    np.savez(tmp_path / "person0__v__K1.fid.npz", real=rng.normal(size=(3, 8)),
             **{m: rng.normal(size=(3, 8)) + 1 for m in ("nearest source", "FF", "FT")})
    scores, note = features.scores(rows)
    assert scores == {} and "1 of 2 (video, K) pairs" in note
    np.savez(tmp_path / "person1__v__K1.fid.npz", real=rng.normal(size=(3, 8)),
             **{m: rng.normal(size=(3, 8)) + 1 for m in ("nearest source", "FF", "FT")})
    scores, note = features.scores(rows)
    assert set(scores) == {(1, "nearest source"), (1, "FF"), (1, "FT")} and all(v > 0 for v in scores.values())
    write_report(rows, [], tmp_path, checkpoint="`x`", failures=[], fid=scores, fid_note=note)
    report = (tmp_path / "report.md").read_text()
    assert "FID ↓" in report and f"{scores[(1, 'FF')]:.1f}" in report and "6 frames each" in report
    assert "fid" in (tmp_path / "results.csv").read_text().splitlines()[0]
    write_report(rows, [], tmp_path, checkpoint="`x`", failures=[], fid=None, fid_note="FID: unavailable (test)")
    assert "FID ↓" not in (tmp_path / "report.md").read_text()

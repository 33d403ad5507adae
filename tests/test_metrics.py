"""Evaluation metrics against known values and scikit-image; identity split sanity."""

import csv

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from talkinghead.data.synthetic import move_landmarks, template_landmarks
from talkinghead.eval.fid import compute_fid, fid_available
from talkinghead.eval.metrics import detect_landmarks_on_images, nme, psnr, ssim
from talkinghead.eval.splits import load_split
from talkinghead.errors import TalkingHeadError


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_ssim_psnr_equal_scikit_image(shared_faces):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(structural_similarity(a, b, channel_axis=-1, data_range=255), abs=1e-12)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-12)
    real = cv2.resize(_rgb(shared_faces / "images" / "macron.png"), (128, 128))
    blurred = cv2.GaussianBlur(real, (5, 5), 0)
    assert ssim(real, blurred) == pytest.approx(
        structural_similarity(real, blurred, channel_axis=-1, data_range=255), abs=1e-12)
    assert 0 < ssim(real, blurred) < 1 and ssim(real, real) == pytest.approx(1.0)
    assert psnr(real, real) == float("inf") and 20 < psnr(real, blurred) < 60


def test_nme_known_values():
    ref = template_landmarks(128)
    assert nme(ref, ref) == 0.0
    iod = np.linalg.norm(ref[45] - ref[36])
    shifted = ref + np.array([0.1 * iod, 0.0], np.float32)
    assert nme(shifted, ref) == pytest.approx(0.1, rel=1e-5)
    batch = np.stack([ref, shifted, np.full_like(ref, np.nan)])
    per_frame = nme(batch, np.stack([ref, ref, ref]))
    assert per_frame[0] == 0 and per_frame[1] == pytest.approx(0.1, rel=1e-5) and np.isnan(per_frame[2])
    assert np.nanmean(per_frame) == pytest.approx(0.05, rel=1e-5)
    with pytest.raises(ValueError):
        nme(ref[:10], ref[:10])


def test_csim_same_image_same_person_different_people(shared_faces):
    from talkinghead.data.video import read_frames
    from talkinghead.eval.identity import FaceIdentity

    ident = FaceIdentity()
    einstein = _rgb(shared_faces / "images" / "einstein.jpg")
    taylor = _rgb(shared_faces / "images" / "taylor.png")
    assert ident.csim(einstein, einstein) == pytest.approx(1.0, abs=1e-5)
    different = ident.csim(einstein, taylor)
    frames = read_frames(shared_faces / "clips" / "vox_oliver.mp4", max_frames=120)
    same_person = ident.csim(frames[0], frames[119])
    assert different < 0.85, different
    assert same_person > 0.9 and same_person > different + 0.1, (same_person, different)
    assert np.isnan(ident.csim(einstein, np.full((100, 100, 3), 127, np.uint8)))


def test_detect_landmarks_on_real_and_blank_images(shared_faces):
    from talkinghead.data.landmarks import detect_largest_face, get_detector

    det = get_detector("dlib")
    face = cv2.resize(_rgb(shared_faces / "images" / "vox_federer.jpg"), (128, 128))
    truth, _, _ = detect_largest_face(face, det)
    blank = np.full_like(face, 90)
    found_lm, found = detect_landmarks_on_images(np.stack([face, blank]), np.stack([truth, truth]), det)
    assert found.tolist() == [True, False]
    assert nme(found_lm[0], truth) < 0.05
    assert np.isfinite(found_lm[1]).all()  # measured in the expected box even without a face


def test_fid_is_never_computed_without_weights():
    ok, reason = fid_available()
    if not ok:
        assert "unavailable" in reason
        images = np.zeros((2, 64, 64, 3), np.uint8)
        assert compute_fid(images, images) is None


def test_bundled_split_is_disjoint_and_complete(shared_faces):
    split = load_split("faces")
    assert set(split["train"]).isdisjoint(split["dev"]) and len(split["dev"]) >= 5
    with open(shared_faces / "manifest.csv") as f:
        videos = {r["identity"] for r in csv.DictReader(f) if not r["kind"].startswith("image")}
    assert set(split["train"]) | set(split["dev"]) == videos


def test_split_files(tmp_path):
    txt = tmp_path / "heldout.txt"
    txt.write_text("# held out\nalice\nbob\n")
    assert load_split(txt) == {"train": [], "dev": ["alice", "bob"]}
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": ["a"], "dev": ["a"]}')
    with pytest.raises(TalkingHeadError, match="both train and dev"):
        load_split(bad)
    with pytest.raises(TalkingHeadError, match="nope.txt"):
        load_split(tmp_path / "nope.txt")

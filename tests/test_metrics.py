"""Evaluation metrics against known values and scikit-image; identity split sanity."""

import csv

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from talkinghead.data.synthetic import move_landmarks, template_landmarks
from talkinghead.eval.fid import compute_fid, fid_available
from talkinghead.eval.metrics import (PSNR_CAP, detect_landmarks_on_images, mean_nme, mean_psnr, nme,
                                      nme_of_images, psnr, ssim)
from talkinghead.eval.splits import load_split, train_identities
from talkinghead.errors import TalkingHeadError


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_ssim_psnr_equal_scikit_image():
    from skimage import data

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    real = np.ascontiguousarray(data.astronaut()[60:435])  # 375 x 512, not square
    _, jpeg = cv2.imencode(".jpg", real, [cv2.IMWRITE_JPEG_QUALITY, 20])
    pairs = [(a, b), (a, rng.integers(0, 256, a.shape, dtype=np.uint8)),
             (real, cv2.GaussianBlur(real, (5, 5), 0)), (real, cv2.imdecode(jpeg, cv2.IMREAD_COLOR)),
             (np.full((9, 7, 3), 40, np.uint8), np.full((9, 7, 3), 41, np.uint8))]
    for x, y in pairs:
        assert ssim(x, y) == pytest.approx(structural_similarity(x, y, channel_axis=-1, data_range=255), abs=1e-9)
        assert psnr(x, y) == pytest.approx(peak_signal_noise_ratio(x, y, data_range=255), abs=1e-9)
    # batches give the per-frame values
    batch_a, batch_b = np.stack([a, a, b]), np.stack([b, a, a])
    np.testing.assert_allclose(ssim(batch_a, batch_b), [ssim(a, b), 1.0, ssim(b, a)], atol=1e-12)
    np.testing.assert_allclose(psnr(batch_a, batch_b), [psnr(a, b), np.inf, psnr(b, a)], atol=1e-12)
    assert 0 < ssim(real, pairs[2][1]) < 1 and ssim(real, real) == pytest.approx(1.0)
    assert 20 < psnr(real, pairs[2][1]) < 60
    with pytest.raises(ValueError):
        ssim(a, b[:32])
    with pytest.raises(ValueError):
        ssim(a[:5, :5], b[:5, :5])  # smaller than skimage's 7x7 window


def test_psnr_of_identical_images_is_inf_and_mean_is_capped():
    a = np.zeros((16, 16, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr(a, a) == float("inf")
    finite = psnr(a, b)
    assert np.isfinite(finite) and finite < PSNR_CAP
    assert mean_psnr([finite, float("inf")]) == pytest.approx((finite + PSNR_CAP) / 2)
    assert mean_psnr(psnr(np.stack([a, a]), np.stack([a, b]))) == pytest.approx((finite + PSNR_CAP) / 2)
    assert mean_psnr([float("nan"), 30.0]) == 30.0 and np.isnan(mean_psnr([]))


def test_nme_known_values():
    ref = template_landmarks(128)
    assert nme(ref, ref) == 0.0
    iod = np.linalg.norm(ref[45] - ref[36])
    shifted = ref + np.array([0.1 * iod, 0.0], np.float32)
    assert nme(shifted, ref) == pytest.approx(0.1, rel=1e-5)
    diagonal = ref + np.array([0.06, 0.08], np.float32) * iod  # |(0.06, 0.08)| = 0.1
    assert nme(diagonal, ref) == pytest.approx(0.1, rel=1e-5)
    assert nme(2 * shifted, 2 * ref) == pytest.approx(0.1, rel=1e-5)  # scale-free
    missing_point = ref.copy()
    missing_point[30] = np.nan
    batch = np.stack([ref, shifted, np.full_like(ref, np.nan), missing_point])
    per_frame = nme(batch, np.stack([ref, ref, ref, ref]))
    assert per_frame.shape == (4,) and per_frame[0] == 0 and per_frame[1] == pytest.approx(0.1, rel=1e-5)
    assert np.isnan(per_frame[2]) and np.isnan(per_frame[3])
    mean, excluded = mean_nme(per_frame)
    assert mean == pytest.approx(0.05, rel=1e-5) and excluded == 2
    assert np.isnan(nme(ref, np.zeros_like(ref)))  # degenerate reference: no eye distance
    with pytest.raises(ValueError):
        nme(ref[:10], ref[:10])


def test_csim_same_image_and_same_person(astronaut_png, rendered_driver):
    from talkinghead.data.landmarks import detect_largest_face
    from talkinghead.data.video import read_frames
    from talkinghead.eval.identity import FaceIdentity

    ident = FaceIdentity()
    portrait = _rgb(astronaut_png)
    emb = ident.embed(portrait)
    assert emb.shape == (128,) and emb.dtype == np.float32 and np.linalg.norm(emb) == pytest.approx(1, abs=1e-5)
    assert ident.csim(portrait, portrait) == pytest.approx(1.0, abs=1e-5)
    # Same person, another pose and expression: first vs last frame of a talking clip. dlib's
    # "same person" rule (distance 0.6) is a cosine of ~0.92.
    frames = read_frames(rendered_driver)
    same_person = ident.csim(frames[0], frames[-1])
    assert same_person > 0.92, same_person
    # Given landmarks are used instead of detection (same landmarks → same embedding).
    lm, _, _ = detect_largest_face(frames[0], ident._detector)
    assert ident.csim(frames[0], frames[-1], landmarks_a=lm) == pytest.approx(same_person, abs=1e-5)
    blank = np.full((100, 100, 3), 127, np.uint8)
    assert ident.embed(blank) is None and np.isnan(ident.csim(portrait, blank))
    assert np.isnan(ident.csim(frames[0], frames[1], landmarks_a=np.full((68, 2), np.nan)))


def test_csim_tells_different_people_apart(shared_faces):
    from talkinghead.data.video import read_frames
    from talkinghead.eval.identity import FaceIdentity

    ident = FaceIdentity()
    einstein = _rgb(shared_faces / "images" / "einstein.jpg")
    taylor = _rgb(shared_faces / "images" / "taylor.png")
    different = ident.csim(einstein, taylor)
    frames = read_frames(shared_faces / "clips" / "vox_oliver.mp4", max_frames=130)
    same_person = ident.csim(frames[0], frames[-1])  # head turned
    assert different < 0.85, different
    assert same_person > different + 0.1, (same_person, different)


def test_landmarks_and_face_rate_on_real_and_blank_images(astronaut_png):
    from talkinghead.data.landmarks import detect_largest_face, get_detector

    det = get_detector("dlib")
    face = cv2.resize(_rgb(astronaut_png)[:400, 56:456], (128, 128), interpolation=cv2.INTER_AREA)
    truth, _, _ = detect_largest_face(face, det)
    blank = np.full_like(face, 90)
    found_lm, found = detect_landmarks_on_images(np.stack([face, blank]), np.stack([truth, truth]), det)
    assert found.tolist() == [True, False]
    assert nme(found_lm[0], truth) < 0.05
    assert np.isfinite(found_lm[1]).all()  # measured in the expected box even without a face
    # Missing driving landmarks: the detected face is used; with no face either, NaN (excluded).
    no_lm = np.full_like(truth, np.nan)
    score = nme_of_images(np.stack([face, face, blank, blank]), np.stack([truth, no_lm, truth, no_lm]), det)
    assert score.face_found.tolist() == [True, True, False, False] and score.face_found_rate == 0.5
    assert np.isfinite(score.landmarks[1]).all() and np.isnan(score.landmarks[3]).all()
    assert score.excluded == 2 and np.isnan(score.per_frame[1]) and np.isnan(score.per_frame[3])
    assert score.nme == pytest.approx(np.mean(score.per_frame[[0, 2]])) and score.per_frame[0] < 0.05


def test_fid_is_never_computed_without_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: no weights anywhere
    ok, reason = fid_available()
    assert not ok and reason.startswith("FID unavailable: Inception weights not found offline (")
    assert str(tmp_path) in reason
    images = np.zeros((2, 32, 32, 3), np.uint8)
    assert compute_fid(images, images) is None


def test_bundled_split_is_disjoint_and_complete(shared_faces):
    split = load_split("faces")
    train, dev = set(split["train"]), set(split["dev"])
    assert train.isdisjoint(dev) and len(train) == len(split["train"]) and len(dev) == len(split["dev"])
    with open(shared_faces / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if not r["kind"].startswith("image")]
    videos = {r["identity"] for r in rows}
    assert train | dev == videos
    assert 0.15 <= len(dev) / len(videos) <= 0.25
    clips = {i: sum(r["identity"] == i for r in rows) for i in dev}
    assert clips["vox_aldridge"] == 3 and clips["aoc"] == 2


def test_split_files(tmp_path):
    txt = tmp_path / "heldout.txt"
    txt.write_text("# held out\nalice\n\nbob  # a comment\n")
    split = load_split(txt)
    assert split == {"train": [], "dev": ["alice", "bob"]}
    assert train_identities(split, ["carol", "bob", "alice", "dave"]) == ["carol", "dave"]
    assert train_identities(load_split("faces"), ["vox_aldridge", "obama", "unknown"]) == ["obama"]
    lst = tmp_path / "heldout.json"
    lst.write_text('["alice"]')
    assert load_split(lst) == {"train": [], "dev": ["alice"]}
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": ["a"], "dev": ["a"]}')
    with pytest.raises(TalkingHeadError, match="both train and dev"):
        load_split(bad)
    bad.write_text('{"train": "a"}')
    with pytest.raises(TalkingHeadError, match="list of identity names"):
        load_split(bad)
    bad.write_text("{not json")
    with pytest.raises(TalkingHeadError, match="not valid JSON"):
        load_split(bad)
    with pytest.raises(TalkingHeadError, match="nope.txt"):
        load_split(tmp_path / "nope.txt")


def test_landmarks_on_small_frames_are_found_on_an_enlarged_copy(astronaut_png, rendered_driver):
    """On 128 px frames the enlarged measurement is closer to the landmarks found at full
    resolution, and mapped back without a shift (pixel centres, not corners)."""
    from talkinghead.data.landmarks import detect_largest_face, get_detector
    from talkinghead.data.video import read_frames

    det = get_detector("dlib")
    plain_err, big_err, shift = [], [], []
    portrait, rendered = _rgb(astronaut_png), read_frames(rendered_driver)
    for image in (portrait, np.ascontiguousarray(portrait[:, ::-1]), rendered[0], rendered[-1]):
        full, _, _ = detect_largest_face(image, det)
        centre = (full.min(0) + full.max(0)) / 2
        scale = 128 / (1.8 * (full.max(0) - full.min(0)).max())
        to_small = np.array([[scale, 0, 64 - centre[0] * scale], [0, scale, 64 - centre[1] * scale]], np.float32)
        small = cv2.warpAffine(image, to_small, (128, 128), flags=cv2.INTER_AREA)
        truth = full @ to_small[:, :2].T + to_small[:, 2]
        plain, _ = detect_landmarks_on_images(small[None], truth[None], det, enlarge_to=0)
        big, found = detect_landmarks_on_images(small[None], truth[None], det)
        assert found[0]
        plain_err.append(nme(plain[0], truth))
        big_err.append(nme(big[0], truth))
        shift.append((big[0] - truth).mean(0))
    assert np.mean(big_err) < 0.9 * np.mean(plain_err) and max(big_err) < 0.02
    assert np.abs(np.mean(shift, axis=0)).max() < 0.2  # a corner-based mapping is off by 0.375 px

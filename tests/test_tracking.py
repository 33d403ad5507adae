"""The face tracker (talkinghead.data.tracking): it stays on the face a fresh detection sees, it
notices a wrong state, and live and batch tracking are the same tracker."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.data.tracking import OFF_FACE, FaceTracker, TrackCheck, fresh_landmarks, landmark_error


@pytest.fixture(scope="module")
def detector():
    from talkinghead.data.landmarks import get_detector

    return get_detector("dlib")


@pytest.fixture(scope="module")
def dafoe_frames(shared_faces):
    """A turned head that swings fast (1280×720): the stretch where the old tracker slid onto the
    ear (frames 30–80, 0.4–1.1 inter-ocular distances off)."""
    from talkinghead.data.video import read_frames

    return read_frames(shared_faces / "clips" / "dafoe.mp4", max_frames=80)


def test_turned_head_track_stays_on_the_face_a_fresh_detection_sees(detector, dafoe_frames):
    from talkinghead.data.tracking import track_landmarks

    landmarks, valid, stats = track_landmarks(dafoe_frames, detector)
    check = TrackCheck()
    for t in range(0, len(dafoe_frames), 2):
        check.add(t, landmarks[t], fresh_landmarks(dafoe_frames[t], detector))
    summary = check.summary()
    assert summary["checked"] >= 35, summary  # the detection finds the face; the track keeps it
    errors = np.array(check.errors)
    off = [(t, round(e, 2)) for t, e in zip(check.frames, errors) if e > OFF_FACE]
    assert not off, f"frames off the face (not marked lost): {off}"
    assert summary["median"] < 0.05, summary
    assert valid.mean() > 0.9, stats  # not by giving up: nearly every frame has landmarks
    assert stats["detections"] < 0.3 * len(dafoe_frames), stats  # and still a tracker


def test_a_corrupted_track_is_caught_and_redetected_within_the_check_interval(detector, rendered_driver):
    from talkinghead.data.landmarks import landmark_extent
    from talkinghead.data.video import read_frames

    frames = read_frames(rendered_driver, max_frames=40)
    tracker = FaceTracker(detector, verify_every=12)
    for frame in frames[:20]:
        good = tracker(frame)
    assert good.landmarks is not None
    # The state moved by one face width: the next box lies beside the face.
    width = landmark_extent(good.landmarks)[1]
    tracker._previous = good.landmarks + np.array([width, 0], np.float32)
    statuses = []
    for t in range(20, 20 + tracker.verify_every):
        result = tracker(frames[t])
        statuses.append(result.status)
        if result.status == "redetected":
            break
    assert "redetected" in statuses, statuses
    reference = fresh_landmarks(frames[t], detector)
    assert landmark_error(result.landmarks, reference) < 0.1
    assert tracker.stats["redetected"] >= 1


def test_live_and_batch_track_the_same_landmarks(detector, rendered_driver):
    from talkinghead.data.tracking import track_landmarks
    from talkinghead.data.video import read_frames
    from talkinghead.infer.live import LiveDriver

    frames = read_frames(rendered_driver, max_frames=30)
    blank = np.full_like(frames[0], 40)
    frames = list(frames[:12]) + [blank] * 3 + list(frames[12:])  # a lost stretch in between
    batch, valid, _ = track_landmarks(frames, detector, redetect_every=3)
    driver = LiveDriver(np.zeros((68, 2), np.float32), detector, verify_every=3)
    tracked = []
    live_tracker = driver.tracker

    def recording(image):
        tracked.append(live_tracker(image))
        return tracked[-1]

    driver.tracker = recording
    states = [driver(frame, 0.04 * t)[1] for t, frame in enumerate(frames)]
    live = np.stack([np.full((68, 2), np.nan, np.float32) if r.landmarks is None else r.landmarks for r in tracked])
    np.testing.assert_array_equal(live, batch)
    assert [s == "ok" for s in states] == list(valid)
    assert live_tracker.stats["held"] + live_tracker.stats["lost"] == int((~valid).sum()) >= 3

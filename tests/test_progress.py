"""Progress through explicit callbacks (talkinghead.progress): every step reported, and a
callback that raises stops the work at that step."""

from __future__ import annotations

import numpy as np
import pytest

from talkinghead.progress import ProgressBar


def test_progress_bar_reports_each_step():
    seen = []
    items = list(ProgressBar(range(3), "counting", show=False, on_progress=lambda *a: seen.append(a)))
    assert items == [0, 1, 2]
    assert seen == [("counting", 0, 3), ("counting", 1, 3), ("counting", 2, 3), ("counting", 3, 3)]


class Stop(Exception):
    pass


def test_a_raising_callback_stops_rendering_and_fine_tuning(astronaut_avatar):
    from skimage import data

    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import BUNDLED_CHECKPOINT

    batches = []
    marks = np.repeat(astronaut_avatar.reference_landmarks[None], 5, axis=0)
    astronaut_avatar.animate(marks, batch_size=2, progress=False, on_progress=lambda *a: batches.append(a))
    assert batches[-1] == ("rendering", 3, 3)

    steps = []

    def stop_at_two(stage, done, total):
        steps.append((stage, done, total))
        if stage == "fine-tuning" and done == 2:
            raise Stop()

    with pytest.raises(Stop):
        Avatar.from_images([data.astronaut()], BUNDLED_CHECKPOINT, finetune_steps=50, device="cpu", progress=False,
                           on_progress=stop_at_two)
    assert ("detecting faces", 1, 1) in steps and steps[-1] == ("fine-tuning", 2, 50)

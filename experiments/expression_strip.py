"""Figures and numbers for the expression controls (docs/app.md), on what the package ships:
an FF avatar of scikit-image's astronaut on the bundled model, driven by the bundled track.

    python benchmarks/expression_strip.py            # writes docs/eyes_closed.png, docs/expression_controls.png

* eyes_closed.png: 8 frames of the track (every 30th, no blink in them) rendered as driven (top)
  and with ``--eyes 0`` (bottom), at the model's 128 px; the table printed gives dlib's eye
  aspect ratio on every frame (dlib on the frame enlarged to 256 px, as the test does), beside
  the same measure on a real blink and on open eyes of a real clip cropped to 128 px when
  /work/shared is present.
* expression_controls.png: the avatar in its own pose, then each control on its own: eyes 0,
  mouth 0.4, smile 0.8 and -0.6, yaw -25/+25, pitch -15/+15, roll 20; sketches above.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

REAL_CLIP = Path(__file__).resolve().parents[2] / "shared/data/faces/clips/lp_d18.mp4"
#: Frames of REAL_CLIP with the eyes open and closed (a blink), found by dlib on the full frames.
REAL_OPEN, REAL_BLINK = (85, 86, 88, 90), (94, 95, 96, 97)


def dlib_ear(frames, detector) -> np.ndarray:
    from talkinghead.data.landmarks import detect_largest_face
    from talkinghead.infer.expression import eye_aspect_ratio

    return np.array([eye_aspect_ratio(detect_largest_face(cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC),
                                                          detector)[0]) for f in frames])


def real_reference(detector) -> dict[str, np.ndarray]:
    """dlib's eye aspect ratio of a real face's open eyes and blink, cropped to 128 px first."""
    from talkinghead.data.crop import crop_square, square_box_from_landmarks
    from talkinghead.data.landmarks import detect_largest_face
    from talkinghead.data.video import read_frames

    frames = read_frames(REAL_CLIP, max_frames=100)
    crops = {}
    for name, picks in (("open", REAL_OPEN), ("blink", REAL_BLINK)):
        crops[name] = [crop_square(frames[i], square_box_from_landmarks(detect_largest_face(frames[i], detector)[0]),
                                   128) for i in picks]
    return {name: dlib_ear(c, detector) for name, c in crops.items()}


def main() -> None:
    from skimage import data

    from talkinghead.data.landmarks import get_detector
    from talkinghead.data.sketch import landmarks_to_sketch
    from talkinghead.infer.avatar import Avatar
    from talkinghead.infer.bundled import ASSETS, BUNDLED_CHECKPOINT
    from talkinghead.infer.expression import Expression, apply_expression
    from talkinghead.infer.reenact import adapt_landmarks

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"))
    args = parser.parse_args()
    out = Path(args.out)
    avatar = Avatar.from_images([data.astronaut()], BUNDLED_CHECKPOINT, finetune_steps=0, device="cpu",
                                progress=False)
    detector = get_detector("dlib")
    track = np.load(ASSETS / "demo_track.npy")[::30]
    driven = adapt_landmarks(track, avatar.reference_landmarks, mode="relative", reference=0)
    rows, ratios = [], {}
    for eyes in (1.0, 0.0):
        frames = avatar.animate(apply_expression(driven, Expression(eyes=eyes)), progress=False, consecutive=False)
        rows.append(np.concatenate(list(frames), axis=1))
        ratios[eyes] = dlib_ear(frames, detector)
    cv2.imwrite(str(out / "eyes_closed.png"), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    print("| frame | " + " | ".join(str(i * 30) for i in range(len(track))) + " |")
    print("|---|" + "---:|" * len(track))
    for eyes, values in ratios.items():
        print(f"| eyes {eyes:g} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    if REAL_CLIP.is_file():
        for name, values in real_reference(detector).items():
            print(f"real {name} (lp_d18, 128-px crops): " + ", ".join(f"{v:.3f}" for v in values))

    controls = [Expression(), Expression(eyes=0), Expression(mouth=0.4), Expression(smile=0.8),
                Expression(smile=-0.6), Expression(yaw=-25), Expression(yaw=25), Expression(pitch=-15),
                Expression(pitch=15), Expression(roll=20)]
    marks = np.stack([apply_expression(avatar.reference_landmarks, e) for e in controls])
    frames = avatar.animate(marks, progress=False, consecutive=False)
    sketches = np.stack([landmarks_to_sketch(m, avatar.size) for m in marks])
    grid = np.concatenate([np.concatenate(list(sketches), 1), np.concatenate(list(frames), 1)], 0)
    cv2.imwrite(str(out / "expression_controls.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {out / 'eyes_closed.png'} and {out / 'expression_controls.png'}")


if __name__ == "__main__":
    main()

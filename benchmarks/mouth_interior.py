"""Is the mouth's inside right when it opens? Issue 27's measure, at the clips' own resolution.

    python benchmarks/mouth_interior.py                        # dev clips, K = 1 and 8
    python benchmarks/mouth_interior.py --split train --clips 6 --shots 1

For each clip of the split (its first ``MAX_FRAMES`` frames, tracked at native resolution):
the first frame is the only shot (K = 1; K = 8 adds 7 frames of the first half, evenly spaced,
the first frame staying the paste-back source). Frames whose mouth opens wider than the first
frame's by more than ``OPEN_MARGIN`` inter-ocular distances (inner-lip gap 62–66) are rendered
as ``animate --source FIRST --absolute --paste-back`` does (at the source face's own resolution,
two-layer render, head paste-back; feed-forward avatar unless ``--steps``), and scored by the mean |output − real| (0–255, RGB) inside the real frame's
inner-lip polygon. Beside it, with no learning: the first frame unchanged, and the classical
warp (the first frame piecewise-affine warped onto the frame's landmarks at native resolution,
pasted back the same way). ``model, guide as before``: the guide's mouth distrust and the
interior off (the bundled model as it was); ``model, drawn interior``: both on, the interior
drawn by rules; ``model (default)``: both on, the interior from the mouth generator.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from mouth_clips import clip_frames, clip_track, mouth_opening, split_clips  # noqa: E402

OPEN_MARGIN = 0.15
METHODS = ("shot unchanged", "classical warp", "model, guide as before", "model, drawn interior", "model (default)")


def inner_lip_mask(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(landmarks[60:68] * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def classical_warp(image: np.ndarray, box: np.ndarray, shot_marks: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
    """The first frame warped onto each (68, 2) native-pixel target inside its face box at the
    box's own size, pasted back as ``--paste-back`` does."""
    from talkinghead.data.crop import crop_square, landmarks_to_crop
    from talkinghead.data.warp import warp_image
    from talkinghead.infer.paste import paste_head

    side = int(round(float(box[2])))
    crop = crop_square(image, box, side)
    tensor = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    source = torch.from_numpy(landmarks_to_crop(shot_marks, box, side)[None]).float()
    out = []
    for target in targets:
        goal = torch.from_numpy(landmarks_to_crop(target, box, side)[None]).float()
        warped, _ = warp_image(tensor, source, goal)
        face = ((warped[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().byte().numpy()
        out.append(paste_head(image, face, box, goal[0].numpy(), source[0].numpy()))
    return out


def model_frames(avatar, track: np.ndarray, picks: np.ndarray, variant: str) -> list[np.ndarray]:
    """``animate --absolute --paste-back`` frames ``picks`` of ``track`` (native pixels)."""
    from talkinghead.infer.driving import paste_frame
    from talkinghead.infer.reenact import adapt_landmarks

    mouth = avatar.config.mouth  # the renderer reads these settings at every call
    saved = copy.copy(mouth)
    mouth.draw_interior = variant != "model, guide as before"
    mouth.guide_distrust = variant != "model, guide as before"
    mouth.interior = "drawn" if variant == "model, drawn interior" else saved.interior
    adapted = adapt_landmarks(track, avatar.reference_landmarks, mode="absolute")[picks]
    rendered = avatar.animate(adapted, progress=False, consecutive=False)  # at the face's own resolution
    out = [paste_frame(avatar, face, marks) for face, marks in zip(rendered, adapted)]
    mouth.draw_interior, mouth.guide_distrust, mouth.interior = saved.draw_interior, saved.guide_distrust, saved.interior
    return out


def save_mouths(path: Path, frames: list[np.ndarray], outputs: dict, picks: np.ndarray, track: np.ndarray) -> None:
    """The widest-open frames' mouths: real | each method, one row per frame (JPEG)."""
    from PIL import Image

    rows = []
    for row, t in enumerate(sorted(range(len(picks)), key=lambda i: -mouth_opening(track[picks[i]][None])[0])[:3]):
        marks = track[picks[t]]
        centre = marks[48:68].mean(0)
        half = int(np.linalg.norm(marks[45] - marks[36]) * 0.8)
        x, y = int(centre[0]), int(centre[1])
        cut = lambda img: cv2.resize(np.pad(img, ((half, half), (half, half), (0, 0)))[y:y + 2 * half, x:x + 2 * half],
                                     (192, 192), interpolation=cv2.INTER_AREA)
        rows.append(np.concatenate([cut(frames[picks[t]])] + [cut(outputs[m][t]) for m in METHODS], 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, 0)).save(path, quality=90)


def score_clip(clip, shots: int, steps: int | None, pictures: Path | None = None,
               mouth_weights: str = "") -> dict[str, tuple[float, int]] | None:
    from talkinghead.infer.avatar import Avatar

    track, valid = clip_track(clip)
    opening = mouth_opening(track)
    picks = np.flatnonzero(valid & (opening > opening[0] + OPEN_MARGIN))
    if not len(picks):
        return None
    frames = list(clip_frames(clip))
    half = len(frames) // 2
    extra = np.linspace(0, half - 1, shots).round().astype(int)[1:] if shots > 1 else []
    images = [frames[0]] + [frames[i] for i in extra]
    avatar = Avatar.from_images(images, finetune_steps=steps, progress=False)
    avatar.config.mouth.weights = mouth_weights
    outputs = {"shot unchanged": [frames[0]] * len(picks),
               "classical warp": classical_warp(frames[0], avatar.source_box, track[0], track[picks])}
    for variant in METHODS[2:]:
        outputs[variant] = model_frames(avatar, track, picks, variant)
    if pictures is not None:
        save_mouths(pictures / f"{clip.name}_k{shots}.jpg", frames, outputs, picks, track)
    result = {}
    for name, outs in outputs.items():
        errors = []
        for out, t in zip(outs, picks):
            mask = inner_lip_mask(frames[t].shape[:2], track[t])
            errors.append(np.abs(out[mask].astype(np.float32) - frames[t][mask].astype(np.float32)).mean())
        result[name] = (float(np.mean(errors)), len(picks))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=0, help="fine-tuning steps (default 0: feed-forward)")
    parser.add_argument("--clips", type=int, default=0, help="only the first N clips with open mouths (0: all)")
    parser.add_argument("--mouth-weights", default="", help="mouth generator file (default: the bundled one)")
    parser.add_argument("--pictures", type=Path, default=None,
                        help="save each clip's widest mouths (real | methods) as JPEG here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    for k in args.shots:
        rows = []
        for clip in split_clips(args.split):
            if args.clips and len(rows) >= args.clips:
                break
            result = score_clip(clip, k, args.steps, args.pictures, args.mouth_weights)
            if result is not None:
                rows.append((clip.name, result))
                print(clip.name, {m: round(v[0], 1) for m, v in result.items()}, flush=True)
        print(f"\n{args.split} split, K = {k}: mean |output − real| inside the real inner lips, frames opening "
              f"> {OPEN_MARGIN} IOD wider than the first frame")
        print("| clip (frames) | " + " | ".join(METHODS) + " |")
        print("|---|" + "---:|" * len(METHODS))
        for name, result in rows:
            print(f"| {name} ({result[METHODS[0]][1]}) | " + " | ".join(f"{result[m][0]:.1f}" for m in METHODS) + " |")
        weights = np.array([r[METHODS[0]][1] for _, r in rows], float)
        means = [np.average([r[m][0] for _, r in rows], weights=weights) for m in METHODS]
        print(f"| **all {int(weights.sum())} frames** | " + " | ".join(f"**{v:.1f}**" for v in means) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

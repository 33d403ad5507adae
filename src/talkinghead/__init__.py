"""talkinghead: few-shot adversarial talking-head models (Zakharov et al., ICCV 2019).

The Python API mirrors the CLI::

    from talkinghead import Avatar
    avatar = Avatar.from_images(["face.jpg"])   # the bundled model unless checkpoint=...
    frames = avatar.animate(landmarks)          # (T, 68, 2) in the avatar's crop pixels -> (T, S, S, 3) uint8
    frames = avatar.animate_track(track)        # a driving video's track, mapped onto this face
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Avatar", "Config", "get_preset", "landmarks_to_sketch", "__version__"]


def __getattr__(name: str):
    # Lazy imports keep `import talkinghead` (and the CLI's start-up) fast.
    if name == "Avatar":
        from talkinghead.infer.avatar import Avatar

        return Avatar
    if name in ("Config", "get_preset"):
        from talkinghead import config

        return getattr(config, name)
    if name == "landmarks_to_sketch":
        from talkinghead.data.sketch import landmarks_to_sketch

        return landmarks_to_sketch
    raise AttributeError(f"module 'talkinghead' has no attribute {name!r}")

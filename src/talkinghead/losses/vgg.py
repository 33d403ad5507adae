"""VGG19 feature extractor for the content loss, without torchvision.

:class:`VGG19Features` reproduces torchvision's ``vgg19().features`` module by module, so
torchvision's ImageNet checkpoint (``vgg19-dcbb9e9d.pth``; keys ``features.N.weight`` /
``features.N.bias``) loads as is. It returns the activations the paper uses
(conv1_1 … conv5_1 after ReLU; torchvision indices 1, 6, 11, 20, 29).

:func:`load_vgg19` finds those weights offline or returns ``None`` with one warning; random
VGG weights are never used in place of pretrained ones.
"""

from __future__ import annotations

import functools

import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from talkinghead.errors import TalkingHeadError

log = logging.getLogger(__name__)

#: torchvision's configuration "E" (VGG19): conv widths, "M" = 2x2 max pool.
VGG19_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)
#: Indices in ``features`` of the ReLUs after conv1_1, conv2_1, conv3_1, conv4_1, conv5_1.
PAPER_LAYERS: tuple[int, ...] = (1, 6, 11, 20, 29)
#: File name of torchvision's ImageNet VGG19 weights in the torch hub cache.
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
#: Environment variable naming a VGG19 weight file (.pth/.pt or .safetensors).
ENV_VAR = "TALKINGHEAD_VGG19"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg19_layers() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for item in VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, int(item), kernel_size=3, padding=1), nn.ReLU()]
            cin = int(item)
    return nn.Sequential(*layers)


class VGG19Features(nn.Module):
    """torchvision-compatible VGG19 trunk returning activations at ``layers``.

    Input (B, 3, H, W) in [-1, 1]; it is mapped to [0, 1] and ImageNet-normalised inside.
    Output: list of (B, C_l, H_l, W_l), one per index in ``layers`` (ascending).
    Only ``features.0`` … ``features.max(layers)`` run; the rest is kept so that a full
    torchvision state dict loads strictly.
    """

    def __init__(self, layers: tuple[int, ...] = PAPER_LAYERS):
        super().__init__()
        self.features = _vgg19_layers()
        self.layers = tuple(sorted(layers))
        if not self.layers or self.layers[-1] >= len(self.features):
            raise ValueError(f"layer indices must lie in 0..{len(self.features) - 1}")
        # Non-persistent: the state dict holds exactly torchvision's ``features.*`` keys.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = ((x + 1.0) * 0.5 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted = set(self.layers)
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                out.append(x)
                if index == self.layers[-1]:
                    break
        return out


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors from a .safetensors file or a torch file, without unpickling arbitrary objects."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a tensor file, disallowed pickle content
        raise TalkingHeadError(f"{path}: not a readable VGG19 weight file ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TalkingHeadError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state


def vgg19_from_file(path: str | os.PathLike) -> VGG19Features:
    """Build :class:`VGG19Features` from a torchvision-format file (``features.*`` keys; any
    ``classifier.*`` keys are ignored). Raises :class:`TalkingHeadError` if it does not fit."""
    path = Path(path)
    state = _read_state_dict(path)
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    model = VGG19Features()
    try:
        model.load_state_dict(features, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2]
        raise TalkingHeadError(f"{path}: not torchvision VGG19 weights ({first})") from None
    return model.eval().requires_grad_(False)


def load_vgg19(path: str | None = None, warn: bool = True) -> VGG19Features | None:
    """Pretrained VGG19 features, frozen and in eval mode, or ``None`` if none are available.

    Looks in order at (1) ``path``, (2) ``$TALKINGHEAD_VGG19``, (3) the torch hub cache
    ``<torch.hub.get_dir()>/checkpoints/vgg19-dcbb9e9d.pth`` (where torchvision puts it).
    A path given explicitly (argument or variable) that does not exist is an error, not a
    fallback, so a typo cannot silently change the loss. If nothing is found, returns ``None``
    (the content loss then uses a pixel L1 term instead) and logs why: a warning with ``warn``
    (training, where it matters), else at debug level, shown with ``--verbose`` (fine-tuning an
    avatar: the bundled model was meta-learned with the same stand-in).
    """
    explicit = path or os.environ.get(ENV_VAR) or None
    if explicit:
        if not Path(explicit).is_file():
            source = "argument" if path else f"${ENV_VAR}"
            raise TalkingHeadError(f"{explicit}: VGG19 weight file not found (from {source})")
        return vgg19_from_file(explicit)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    if cached.is_file():
        return vgg19_from_file(cached)
    (log.warning if warn else log.debug)(
        "no VGG19 ImageNet weights found (looked at $%s and %s); the content loss uses "
        "pixel L1 instead of VGG19 features. Put torchvision's %s there or set $%s to use them.",
        ENV_VAR, cached, TORCHVISION_FILE, ENV_VAR,
    )
    return None

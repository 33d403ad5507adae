"""dlib's face-recognition ResNet, ported to PyTorch as a differentiable face-feature network.

The paper's content loss uses VGGFace features; those weights are not available offline.
dlib's 128-d face descriptor network (``dlib_face_recognition_resnet_model_v1.dat``, shipped
by the ``face_recognition_models`` package) is: it is a face-identity network of the same
kind, so its activations serve the same purpose.

The ``.dat`` file is dlib's binary ``serialize()`` output of ``anet_type`` from dlib's
``dnn_face_recognition_ex.cpp``. :func:`parse_dlib_face_model` reads it in pure Python and
numpy (no pickle, ~10 ms, so no cache is needed). The format, as found in the file and in
dlib's ``serialize.h`` / ``dnn/core.h`` / ``dnn/layers.h`` / ``dnn/tensor.h``:

* integers: one control byte (low 4 bits = number of bytes that follow, bit 0x80 = negative),
  then the magnitude, little-endian (so 0 is ``01 00``).
* floats/doubles: two integers, ``mantissa`` (int64) and ``exponent`` (int16); the value is
  ``ldexp(mantissa, exponent)``. bools: one ASCII byte ``'0'``/``'1'``. strings: length, bytes.
* tensors: version ``2``, four integers (num_samples, k, nr, nc), then the values as raw
  little-endian float32. alias tensors: version ``1`` and four integers (shape only; they are
  views into the owning layer's flat ``params`` tensor, at offset 0 then after the first).
* ``add_loss_layer``: version 1, the loss (``"loss_metric_2"``, margin, distance threshold),
  then the subnetwork. Each ``add_layer`` (version 2) writes its *subnetwork first* and its
  own layer after it, so the file holds every wrapper's version outermost-first, then the
  input layer, then the layers' details innermost-first, i.e. in forward order. Per layer:
  details, three bools, then ``x_grad``, ``cached_output``, ``params_grad`` (empty here).
  Tag/skip wrappers write only their version (1) and have no trailing record. The innermost
  ``add_layer`` (version 3) wraps the input layer (``"input_rgb_image_sized"``, the RGB mean,
  150, 150) and adds ``grad_final`` and ``sample_expansion_factor``.
* layer details: ``con_4`` = params, num_filters, nr, nc, stride_y, stride_x, padding_y,
  padding_x, filters alias (out, in, kh, kw), biases alias, four doubles (learning-rate and
  weight-decay multipliers); ``affine_`` = params (gamma then beta, per channel), gamma alias,
  beta alias, mode (0 = per channel); ``relu_``, ``add_prev_``: nothing; ``max_pool_2`` /
  ``avg_pool_2`` = nr, nc, stride_y, stride_x, padding_y, padding_x (nr = nc = 0 means "whole
  image"); ``fc_2`` = num_outputs, num_inputs, params (num_inputs × num_outputs; ``y = x·W``),
  weights alias, biases alias (empty), bias mode, four doubles.

The architecture (checked against the file while loading) is::

    input 150x150 RGB: (pixel - mean) / 256
    con 32 7x7 /2 (no padding) -> affine -> relu -> max_pool 3x3 /2 (no padding)
    level4: 3 x residual(32)
    level3: residual_down(64),  3 x residual(64)
    level2: residual_down(128), 2 x residual(128)
    level1: residual_down(256), 2 x residual(256)
    level0: residual_down(256)
    avg_pool_everything -> fc 128 (no bias)

    residual(N)(x)      = relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    residual_down(N)(x) = relu(avg_pool2x2/2(x) (+) affine(con3x3(relu(affine(con3x3/2(x))))))

where the stride-2 convolution has no padding and ``(+)`` is dlib's ``add_prev``: the output
has the larger size in every dimension and each input is zero-padded at the end (extra
channels; also the 3x3 vs 4x4 maps at level1). The affine layers are folded into the
preceding convolutions. :meth:`DlibFaceResNet.descriptor_raw` equals dlib's
``compute_face_descriptor`` (which does *not* L2-normalise; its norms are ~1.3–1.6; dlib's
same-person threshold is a Euclidean distance of 0.6 between such raw descriptors);
:meth:`DlibFaceResNet.forward` returns the L2-normalised descriptor.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.errors import TalkingHeadError

log = logging.getLogger(__name__)

#: File name of dlib's face recognition network (shipped by ``face_recognition_models``).
DLIB_FACE_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: Environment variable naming the file explicitly.
ENV_VAR = "TALKINGHEAD_DLIB_FACE_MODEL"
#: Side of dlib's aligned face chip, and the padding dlib uses to extract it.
CHIP_SIZE = 150
CHIP_PADDING = 0.25

#: (out_channels, downsample) for each residual block of each level, input side first.
_LEVELS: tuple[tuple[tuple[int, bool], ...], ...] = (
    ((32, False),) * 3,  # level4
    ((64, True),) + ((64, False),) * 3,  # level3
    ((128, True),) + ((128, False),) * 2,  # level2
    ((256, True),) + ((256, False),) * 2,  # level1
    ((256, True),),  # level0
)
#: Names of the activations :meth:`DlibFaceResNet.features` returns (descriptor last).
FEATURE_NAMES: tuple[str, ...] = ("stem", "level4", "level3", "level2", "level1", "level0", "descriptor")


# ---------------------------------------------------------------------------------------
# Parsing dlib's serialize() format


class _FormatError(Exception):
    pass


class _Reader:
    """Cursor over the bytes of a dlib-serialised object."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _FormatError(f"unexpected end of file ({len(self.data)} bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise _FormatError(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        specials = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        if exponent in specials:
            return specials[exponent]
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise _FormatError(f"bad bool byte {byte!r}")
        return byte == b"1"

    def str(self, max_len: int = 256) -> str:
        n = self.int()
        if not 0 <= n <= max_len:
            raise _FormatError(f"implausible string length {n}")
        try:
            return self._take(n).decode("ascii")
        except UnicodeDecodeError:
            raise _FormatError("non-ASCII layer name") from None

    def version(self, *allowed: int) -> int:
        v = self.int()
        if v not in allowed:
            raise _FormatError(f"unexpected version {v} (expected {' or '.join(map(str, allowed))})")
        return v

    def tensor(self) -> np.ndarray:
        self.version(2)
        dims = [self.int() for _ in range(4)]
        if any(d < 0 for d in dims):
            raise _FormatError(f"negative tensor dimension {dims}")
        n = math.prod(dims)
        raw = self._take(4 * n)
        return np.frombuffer(raw, dtype="<f4").reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        self.version(1)
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


@dataclass
class DlibLayer:
    """One computational layer of a dlib network, as stored in the file."""

    kind: str  # "con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc"
    config: dict = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib DNN: input mean, chip size, loss settings and layers in forward order.

    ``wrappers`` is the sequence of wrapper versions, outermost first (2 = layer, 1 = tag or
    skip, 3 = layer on top of the input); it records where tags/skips sit between layers.
    """

    input_mean: tuple[float, float, float]
    input_size: tuple[int, int]
    loss: dict
    layers: list[DlibLayer]
    wrappers: list[int]


def _split(params: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    flat = params.reshape(-1)
    out, offset = [], 0
    for shape in shapes:
        n = math.prod(shape)
        if offset + n > flat.size:
            raise _FormatError(f"parameter block of {flat.size} values too small for {shapes}")
        out.append(flat[offset : offset + n].reshape(shape))
        offset += n
    if offset != flat.size:
        raise _FormatError(f"parameter block of {flat.size} values does not match {shapes}")
    return out


def _read_layer(r: _Reader) -> DlibLayer:
    name = r.str()
    if name == "con_4":
        params = r.tensor()
        keys = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        cfg = {k: r.int() for k in keys}
        fshape, bshape = r.alias(), r.alias()
        [r.float() for _ in range(4)]  # learning-rate / weight-decay multipliers
        weight, bias = _split(params, [fshape, bshape])
        return DlibLayer("con", cfg, {"weight": weight, "bias": bias.reshape(-1)})
    if name == "affine_":
        params = r.tensor()
        gshape, bshape = r.alias(), r.alias()
        mode = r.int()
        gamma, beta = _split(params, [gshape, bshape])
        return DlibLayer("affine", {"mode": mode}, {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)})
    if name == "relu_":
        return DlibLayer("relu")
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name in ("max_pool_2", "avg_pool_2"):
        keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return DlibLayer(name[:-2], {k: r.int() for k in keys})
    if name == "fc_2":
        cfg = {"num_outputs": r.int(), "num_inputs": r.int()}
        params = r.tensor()
        wshape, bshape = r.alias(), r.alias()
        cfg["bias_mode"] = r.int()
        [r.float() for _ in range(4)]
        weight, bias = _split(params, [wshape, bshape])
        return DlibLayer("fc", cfg, {"weight": weight.reshape(wshape[0], wshape[1]), "bias": bias.reshape(-1)})
    raise _FormatError(f"unsupported layer type {name!r}")


def parse_dlib_face_model(path: str | os.PathLike) -> DlibNet:
    """Parse a dlib ``loss_metric`` network file (e.g. the face recognition ResNet).

    Raises :class:`TalkingHeadError` naming the file if it cannot be read or is not such a
    network (truncated, corrupt, another network type).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TalkingHeadError(f"{path}: cannot read dlib face model ({exc.strerror or exc})") from None
    r = _Reader(data)
    try:
        r.version(1)  # add_loss_layer
        loss_name = r.str()
        if loss_name != "loss_metric_2":
            raise _FormatError(f"loss {loss_name!r} is not loss_metric_2")
        loss = {"margin": r.float(), "distance_threshold": r.float()}
        wrappers: list[int] = []
        while True:
            wrappers.append(r.version(1, 2, 3))
            if wrappers[-1] == 3:
                break
            if len(wrappers) > 10_000:
                raise _FormatError("no input layer found")
        if r.str() != "input_rgb_image_sized":
            raise _FormatError("input layer is not input_rgb_image_sized")
        mean = (r.float(), r.float(), r.float())
        size = (r.int(), r.int())
        layers = [_read_layer(r)]
        [r.bool() for _ in range(3)]
        [r.tensor() for _ in range(3)]  # x_grad, cached_output, grad_final
        r.int()  # sample_expansion_factor
        for version in reversed(wrappers[:-1]):
            if version == 2:
                layers.append(_read_layer(r))
                [r.bool() for _ in range(3)]
                [r.tensor() for _ in range(3)]  # x_grad, cached_output, params_grad
        if r.pos != len(data):
            raise _FormatError(f"{len(data) - r.pos} unexpected bytes after the network")
    except _FormatError as exc:
        raise TalkingHeadError(f"{path}: not a valid dlib face recognition model ({exc} at byte {r.pos})") from None
    return DlibNet(mean, size, loss, layers, wrappers)


# ---------------------------------------------------------------------------------------
# The PyTorch network


def _add_padded(a: Tensor, b: Tensor) -> Tensor:
    """dlib's ``add_prev``: sum of two (B, C, H, W) maps, the smaller zero-padded at the end."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: Tensor) -> Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _Residual(nn.Module):
    """dlib's ``ares`` (``down=False``) / ``ares_down`` (``down=True``) with affines folded in."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(y, shortcut))


class DlibFaceResNet(nn.Module):
    """PyTorch port of dlib's face recognition ResNet (input 150x150 aligned face chips).

    Build with :func:`load_dlib_face_resnet`; a bare instance has random weights.
    """

    def __init__(self, input_mean: tuple[float, float, float] = (122.782, 117.001, 104.298)):
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(input_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        levels, cin = [], 32
        for level in _LEVELS:
            blocks = []
            for cout, down in level:
                blocks.append(_Residual(cin, cout, down))
                cin = cout
            levels.append(nn.Sequential(*blocks))
        self.levels = nn.ModuleList(levels)
        self.fc = nn.Linear(256, 128, bias=False)

    def _normalise(self, chips: Tensor) -> Tensor:
        if chips.dim() != 4 or chips.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB chips, got {tuple(chips.shape)}")
        return (chips - self.input_mean.to(chips.dtype)) / 256.0

    def features(self, chips: Tensor) -> list[Tensor]:
        """Activations after the stem (conv/affine/relu/max-pool) and after each of the five
        levels (:data:`FEATURE_NAMES`), then the L2-normalised (B, 128) descriptor.

        ``chips``: (B, 3, 150, 150) RGB in [0, 255] (float). For 150x150 the maps are
        32@35, 32@35, 64@17, 128@8, 256@4, 256@2.
        """
        x = F.max_pool2d(F.relu(self.stem(self._normalise(chips))), 3, 2)
        out = [x]
        for level in self.levels:
            x = level(x)
            out.append(x)
        out.append(F.normalize(self.fc(x.mean(dim=(2, 3))), dim=1))
        return out

    def descriptor_raw(self, chips: Tensor) -> Tensor:
        """The un-normalised (B, 128) output, equal to dlib's ``compute_face_descriptor``."""
        x = F.max_pool2d(F.relu(self.stem(self._normalise(chips))), 3, 2)
        for level in self.levels:
            x = level(x)
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, chips: Tensor) -> Tensor:
        """(B, 3, 150, 150) RGB in [0, 255] -> (B, 128) L2-normalised descriptors."""
        return F.normalize(self.descriptor_raw(chips), dim=1)

    @classmethod
    def from_dlib(cls, net: DlibNet, source: str = "dlib model") -> "DlibFaceResNet":
        """Build from a parsed file, checking that its layers are exactly ``anet_type``'s."""
        model = cls(net.input_mean)
        layers = list(net.layers)

        def fail(msg: str) -> TalkingHeadError:
            return TalkingHeadError(f"{source}: not dlib's face recognition ResNet ({msg})")

        def take(kind: str, **expect) -> DlibLayer:
            if not layers:
                raise fail(f"network ends where a {kind} layer was expected")
            layer = layers.pop(0)
            if layer.kind != kind:
                raise fail(f"found a {layer.kind} layer where a {kind} layer was expected")
            for key, value in expect.items():
                if layer.config.get(key) != value:
                    raise fail(f"{kind} layer has {key}={layer.config.get(key)}, expected {value}")
            return layer

        def conv_affine(conv: nn.Conv2d) -> None:
            stride, pad = conv.stride[0], conv.padding[0]
            c = take("con", num_filters=conv.out_channels, nr=conv.kernel_size[0], nc=conv.kernel_size[1],
                     stride_y=stride, stride_x=stride, padding_y=pad, padding_x=pad)
            a = take("affine", mode=0)
            w, b = c.params["weight"], c.params["bias"]
            g, beta = a.params["gamma"], a.params["beta"]
            if w.shape != tuple(conv.weight.shape) or b.shape != (conv.out_channels,) or g.shape != b.shape or beta.shape != b.shape:
                raise fail(f"parameter shapes {w.shape}/{g.shape} do not fit {tuple(conv.weight.shape)}")
            w64, g64 = w.astype(np.float64), g.astype(np.float64)
            conv.weight.data.copy_(torch.from_numpy((w64 * g64[:, None, None, None]).astype(np.float32)))
            conv.bias.data.copy_(torch.from_numpy((b.astype(np.float64) * g64 + beta).astype(np.float32)))

        if net.input_size != (CHIP_SIZE, CHIP_SIZE):
            raise fail(f"input size {net.input_size}, expected {CHIP_SIZE}x{CHIP_SIZE}")
        conv_affine(model.stem)
        take("relu")
        take("max_pool", nr=3, nc=3, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
        for level in model.levels:
            for block in level:
                conv_affine(block.conv1)
                take("relu")
                conv_affine(block.conv2)
                if block.down:
                    take("avg_pool", nr=2, nc=2, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
                take("add_prev")
                take("relu")
        take("avg_pool", nr=0, nc=0)
        fc = take("fc", num_outputs=128, num_inputs=256)
        if fc.params["weight"].shape != (256, 128) or fc.params["bias"].size:
            raise fail(f"fc weight shape {fc.params['weight'].shape}, expected (256, 128) and no bias")
        model.fc.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(fc.params["weight"].T)))
        if layers:
            raise fail(f"{len(layers)} unexpected layers after the fc layer")
        return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------
# Finding and loading the weights


def find_dlib_face_model() -> Path | None:
    """Path of ``dlib_face_recognition_resnet_model_v1.dat``, or ``None`` if not installed.

    Looks at ``$TALKINGHEAD_DLIB_FACE_MODEL`` (returned as is, even if missing, so that
    :func:`load_dlib_face_resnet` can report it), then in the ``face_recognition_models``
    package (located without importing it: its ``__init__`` needs ``pkg_resources``).
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "models" / DLIB_FACE_MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def load_dlib_face_resnet(path: str | os.PathLike | None = None) -> DlibFaceResNet | None:
    """dlib's face recognition ResNet as a frozen, eval-mode :class:`DlibFaceResNet`.

    ``path`` (or ``$TALKINGHEAD_DLIB_FACE_MODEL``) given but missing, or a corrupt file:
    :class:`TalkingHeadError` naming the file. Nothing found: one warning, ``None``.
    """
    found = Path(path) if path is not None else find_dlib_face_model()
    if found is None:
        log.warning(
            "dlib's face recognition model (%s) not found (set $%s or install the "
            "face_recognition_models package); face-feature losses are disabled.",
            DLIB_FACE_MODEL_FILE, ENV_VAR,
        )
        return None
    if not found.is_file():  # only an explicit path can be missing here
        source = "argument" if path is not None else f"${ENV_VAR}"
        raise TalkingHeadError(f"{found}: dlib face model not found (from {source})")
    net = parse_dlib_face_model(found)
    return DlibFaceResNet.from_dlib(net, source=str(found))


# ---------------------------------------------------------------------------------------
# Wrapper for our face crops


class FaceFeatures(nn.Module):
    """Face-identity features of our face crops, for a content loss (frozen).

    Input: (B, 3, H, W) in [-1, 1], a square face crop as produced by ``prepare`` (whole
    head with margin, face centred, face width ≈ 50–55 % of the side). The central square of
    side ``crop_fraction`` × min(H, W), centred at (``center_x``, ``center_y``) × (W, H), is
    resized to 150x150 (bilinear, antialiased; differentiable), mapped to [0, 255] and passed
    through :meth:`DlibFaceResNet.features`.

    ``crop_fraction`` default 0.78: dlib's chip (padding 0.25) maps the landmark template,
    which spans the face width (jaw to jaw), onto the central 1/1.5 = 2/3 of the chip, so the
    chip side is 1.5 × face width ≈ 1.5 × 0.52 of our crop side.

    Output: list of (B, C_l, H_l, W_l) activations and the (B, 128) descriptor, as
    :meth:`DlibFaceResNet.features` (``layers`` selects indices into it; default all).
    """

    def __init__(self, net: DlibFaceResNet, crop_fraction: float = 0.78, center_x: float = 0.5,
                 center_y: float = 0.5, layers: tuple[int, ...] | None = None):
        super().__init__()
        if not 0.0 < crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must lie in (0, 1], got {crop_fraction}")
        self.net = net.eval().requires_grad_(False)
        self.crop_fraction = crop_fraction
        self.center = (center_x, center_y)
        self.layers = None if layers is None else tuple(layers)

    def train(self, mode: bool = True) -> "FaceFeatures":
        super().train(mode)
        self.net.eval()  # frozen: always in eval mode
        return self

    def chips(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, 150, 150) in [0, 255]: the crop dlib's net sees."""
        h, w = x.shape[-2:]
        side = max(1, round(self.crop_fraction * min(h, w)))
        top = min(max(0, round(self.center[1] * h - side / 2)), h - side)
        left = min(max(0, round(self.center[0] * w - side / 2)), w - side)
        crop = x[:, :, top : top + side, left : left + side]
        if side != CHIP_SIZE:
            crop = F.interpolate(crop, size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear",
                                 align_corners=False, antialias=side > CHIP_SIZE)
        return (crop + 1.0) * 127.5

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.net.features(self.chips(x))
        if self.layers is None:
            return feats
        return [feats[i] for i in self.layers]

"""Checkpoints: one safetensors file, tensors only, with the JSON config in its header.

Tensor names::

    E.<param>, G.<param>, D.<param>          network weights (state_dict keys)
    optim.<name>.<param#>.<state>            Adam moments (training checkpoints only)
    rng.torch                                CPU RNG state (exact resumption)

Header metadata (strings): ``format``, ``version``, ``config`` (Config JSON), ``step``,
``videos`` (JSON list of the video keys behind D's rows W), ``optim.<name>`` (param-group
JSON), ``extra`` (JSON). Nothing is ever unpickled, so a checkpoint from anywhere is safe to open.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from talkinghead.config import Config
from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path

FORMAT_NAME = "talkinghead-checkpoint"
FORMAT_VERSION = 1
NETWORKS = ("E", "G", "D")


@dataclass
class Checkpoint:
    """A loaded checkpoint: config, step, and flat tensors by name."""

    path: Path
    config: Config
    step: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def videos(self) -> list[str]:
        return json.loads(self.meta.get("videos", "[]"))

    @property
    def extra(self) -> dict[str, Any]:
        return json.loads(self.meta.get("extra", "{}"))

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        """The state dict of network ``prefix`` (``"E"``, ``"G"`` or ``"D"``)."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def has(self, prefix: str) -> bool:
        return any(k.startswith(prefix + ".") for k in self.tensors)


def _flatten_optimizer(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = optimizer.state_dict()
    tensors = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{name}.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, json.dumps({"param_groups": state["param_groups"], "scalars": scalars})


def _unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta_json: str) -> dict:
    meta = json.loads(meta_json)
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field_name = key[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[field_name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike,
    config: Config,
    networks: dict[str, torch.nn.Module],
    step: int,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    videos: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = False,
    skip: tuple[str, ...] = (),
) -> Path:
    """Write a checkpoint atomically. ``half`` stores floating tensors as fp16 (for shipping);
    ``skip`` drops tensors whose name starts with any of the given prefixes (e.g. ``"D.W"``)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in networks.items():
        module = getattr(module, "module", module)  # unwrap DDP / torch.compile
        module = getattr(module, "_orig_mod", module)
        for key, value in module.state_dict().items():
            full = f"{name}.{key}"
            if any(full.startswith(s) for s in skip):
                continue
            value = value.detach().cpu().contiguous()
            if half and value.is_floating_point():
                value = value.half()
            tensors[full] = value
    meta = {
        "format": FORMAT_NAME,
        "version": str(FORMAT_VERSION),
        "config": config.to_json(),
        "step": str(step),
        "videos": json.dumps(videos or []),
        "extra": json.dumps(extra or {}),
    }
    for name, optimizer in (optimizers or {}).items():
        opt_tensors, opt_meta = _flatten_optimizer(name, optimizer)
        tensors.update(opt_tensors)
        meta[f"optim.{name}"] = opt_meta
    if optimizers:
        tensors["rng.torch"] = torch.get_rng_state()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_tagged_file(path: str | os.PathLike, format_name: str, what: str,
                     map_location: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str], Config]:
    """Tensors, header metadata and config of a talkinghead safetensors file (a checkpoint or an
    avatar), with one-line errors for a missing, foreign or corrupt file.

    The config is validated before anything is built from it (an edited ``max_channels`` must
    not become a petabyte allocation), and every floating tensor must be finite: NaN or Inf
    weights would only render black frames or fine-tune into NaN."""
    path = Path(path)
    if not path.is_file():
        raise TalkingHeadError(f"{path}: {what} not found")
    try:
        with safe_open(str(path), framework="pt", device=map_location) as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != format_name:
                raise TalkingHeadError(f"{path}: not a talkinghead {what}")
            config = Config.from_json(meta["config"])
            config.validate()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # corrupt header, truncated file, bad JSON, a config out of range
        if isinstance(exc, TalkingHeadError) and str(exc).startswith(f"{path}: "):
            raise
        raise TalkingHeadError(f"{path}: corrupt {what} ({_first_line(exc)})") from None
    for name, tensor in tensors.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise TalkingHeadError(f"{path}: corrupt {what} (tensor {name} holds NaN or Inf values)")
    return tensors, meta, config


def _first_line(exc: BaseException) -> str:
    """An exception as one line (torch's and PyAV's messages can run over several)."""
    lines = str(exc).strip().splitlines()
    if isinstance(exc, TalkingHeadError) and lines:
        return lines[0]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> Checkpoint:
    """Read a checkpoint; raise :class:`TalkingHeadError` if the file is missing or not one."""
    tensors, meta, config = read_tagged_file(path, FORMAT_NAME, "checkpoint", map_location)
    step = meta.get("step", "0")
    if not (step.isdigit() and len(step) <= 18):
        raise TalkingHeadError(f"{path}: corrupt checkpoint (step {step!r} is not a whole number)")
    for key, kind in (("videos", list), ("extra", dict)):
        try:
            value = json.loads(meta.get(key, "[]" if kind is list else "{}"))
        except ValueError:
            value = None
        if not isinstance(value, kind):
            raise TalkingHeadError(f"{path}: corrupt checkpoint ({key} is not a JSON {kind.__name__})")
    return Checkpoint(path=Path(path), config=config, step=int(step), tensors=tensors, meta=meta)


def load_networks(checkpoint: Checkpoint, networks: dict[str, torch.nn.Module], strict: bool = True,
                  exclude: tuple[str, ...] = ()) -> None:
    """Copy weights into already-built networks, with a clear error on a preset mismatch.
    ``exclude`` names full keys (e.g. ``"D.W"``) neither loaded nor required."""
    for name, module in networks.items():
        module = getattr(module, "module", module)
        module = getattr(module, "_orig_mod", module)
        skip = {e[len(name) + 1:] for e in exclude if e.startswith(name + ".")}
        state = {k: v for k, v in checkpoint.state_dict(name).items() if k not in skip}
        target = module.state_dict()
        state = {k: v.to(target[k].dtype) if k in target else v for k, v in state.items()}
        try:
            missing, unexpected = module.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise TalkingHeadError(
                f"{checkpoint.path}: weights of {name} do not fit this model "
                f"(preset {checkpoint.config.preset!r}?): {str(exc).splitlines()[1:2]}"
            ) from None
        missing = [k for k in missing if k not in skip]
        if strict and (missing or unexpected):
            raise TalkingHeadError(
                f"{checkpoint.path}: weights of {name} do not fit this model "
                f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing + unexpected)[:2]})"
            )


def load_optimizers(checkpoint: Checkpoint, optimizers: dict[str, torch.optim.Optimizer]) -> None:
    for name, optimizer in optimizers.items():
        key = f"optim.{name}"
        if key not in checkpoint.meta:
            raise TalkingHeadError(f"{checkpoint.path}: no optimizer state (not a training checkpoint)")
        try:
            optimizer.load_state_dict(_unflatten_optimizer(name, checkpoint.tensors, checkpoint.meta[key]))
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
            raise TalkingHeadError(f"{checkpoint.path}: corrupt checkpoint (optimizer state of {name}: "
                                   f"{_first_line(exc)})") from None
    if "rng.torch" in checkpoint.tensors:
        try:
            torch.set_rng_state(checkpoint.tensors["rng.torch"].to(torch.uint8))
        except RuntimeError as exc:
            raise TalkingHeadError(f"{checkpoint.path}: corrupt checkpoint (rng.torch: {_first_line(exc)})") from None


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, computed once per file version (path, size, modification time): an
    evaluation builds many avatars from one checkpoint of possibly gigabytes."""
    stat = os.stat(path)
    return _sha256_of_version(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of_version(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True,
                      overrides: list[str] | None = None) -> Path:
    """A shippable copy of a training checkpoint: E, G and D weights only (fp16 by default),
    without optimizer state and without D's per-video rows W (specific to the training videos;
    few-shot avatars replace them with w' = ê). Avatars and evaluation load it like any other.
    ``overrides`` (``section.field=value``) change the stored config, e.g. the fine-tuning
    defaults that avatars made from this model use; model settings cannot change."""
    ckpt = load_checkpoint(src)
    if overrides:
        if any(o.split("=", 1)[0].startswith("model.") for o in overrides):
            raise TalkingHeadError(f"{src}: model.* settings are fixed by the trained weights")
        ckpt.meta["config"] = ckpt.config.override(overrides).to_json()
    tensors = {}
    for key, value in ckpt.tensors.items():
        if key.startswith(("optim.", "rng.", "D.W")):
            continue
        tensors[key] = value.half() if half and value.is_floating_point() else value.contiguous()
    meta = {k: v for k, v in ckpt.meta.items() if not k.startswith("optim.")}
    meta["videos"] = "[]"
    meta["extra"] = json.dumps({**ckpt.extra, "exported_from": Path(src).name, "videos_trained": len(ckpt.videos)})
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(dst)


def with_overrides(ckpt: Checkpoint, overrides: Sequence[str]) -> Checkpoint:
    """The checkpoint with other fine-tuning or guide settings (``train.*``/``loss.*``/``guide.*``
    ``SECTION.FIELD=VALUE`` items); its architecture cannot change."""
    import dataclasses

    for item in overrides:
        if not item.startswith(("train.", "loss.", "guide.")):
            raise TalkingHeadError(f"--set {item}: only train.*, loss.* and guide.* settings can change for an "
                                   "existing model (its architecture is fixed by the checkpoint)")
    return dataclasses.replace(ckpt, config=ckpt.config.override(list(overrides)))


MOUTH_FORMAT_NAME = "talkinghead-mouth"


def save_mouth_checkpoint(path: str | os.PathLike, net_config, state_dict: dict[str, torch.Tensor], step: int,
                          extra: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write the mouth generator's weights (:mod:`talkinghead.models.mouth`) atomically, its
    :class:`~talkinghead.config.MouthNetConfig` as JSON in the header."""
    tensors = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()).contiguous()
               for k, v in state_dict.items()}
    meta = {"format": MOUTH_FORMAT_NAME, "version": str(FORMAT_VERSION), "net": json.dumps(net_config.to_dict()),
            "step": str(int(step)), "extra": json.dumps(extra or {})}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_mouth_checkpoint(path: str | os.PathLike):
    """(MouthNetConfig, float32 state dict, extra dict) of a mouth generator file, with a
    one-line error for a missing, foreign or corrupt one."""
    from talkinghead.config import MouthNetConfig

    path = Path(path)
    if not path.is_file():
        raise TalkingHeadError(f"{path}: mouth model not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != MOUTH_FORMAT_NAME:
                raise TalkingHeadError(f"{path}: not a talkinghead mouth model")
            net = MouthNetConfig.from_dict(json.loads(meta["net"]))
            extra = json.loads(meta.get("extra", "{}"))
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    except Exception as exc:
        if isinstance(exc, TalkingHeadError) and str(exc).startswith(f"{path}: "):
            raise
        raise TalkingHeadError(f"{path}: corrupt mouth model ({_first_line(exc)})") from None
    bad = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise TalkingHeadError(f"{path}: corrupt mouth model (tensor {bad[0]} holds NaN or Inf values)")
    return net, tensors, extra

"""Few-shot avatars (paper stage 2) and rendering.

    avatar = Avatar.from_images(["me1.jpg", "me2.jpg"], checkpoint="meta.safetensors", finetune_steps=60)
    frames = avatar.animate(landmarks)     # (T, 68, 2) crop pixels -> (T, O, O, 3) uint8
    frames = avatar.animate(landmarks, size=512)   # any output size (infer/detail.py)
    avatar.save("me.avatar")
    avatar = Avatar.load("me.avatar")

An avatar file is safetensors + JSON. A feed-forward avatar (FF, ``finetune_steps=0``) stores
only what is person-specific — ψ = P·ê, ê, the K shots' landmarks and crops — and refers to the
meta checkpoint by path and SHA-256. The shots are also kept at up to ``detail.max_size`` px
(``crops_hi``), from which the output-resolution detail layer is warped
(:mod:`talkinghead.infer.detail`); files written before them still load (their shots at S). A fine-tuned avatar (FT) also stores its own G, because
fine-tuning changes all of G's weights (as in the paper), and so needs no meta checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from talkinghead.config import Config
from talkinghead.data.sketch import image_to_tensor, landmarks_to_sketch, sketch_to_tensor, tensor_to_image
from talkinghead.errors import TalkingHeadError
from talkinghead.fileio import atomic_path
from talkinghead.models import build_models
from talkinghead.models.guide import WarpGuide
from talkinghead.progress import ProgressBar, ProgressCallback
from talkinghead.checkpoint import (
    Checkpoint,
    file_sha256,
    load_checkpoint,
    load_networks,
    read_tagged_file,
    with_overrides,
)
from talkinghead.train.finetune import finetune

log = logging.getLogger(__name__)

FORMAT_NAME = "talkinghead-avatar"
FORMAT_VERSION = 1


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _stack_inputs(crops: np.ndarray, landmarks: np.ndarray, device) -> tuple[Tensor, Tensor]:
    """(K, S, S, 3) uint8 crops and (K, 68, 2) landmarks → frames, sketches (K, 3, S, S)."""
    size = crops.shape[1]
    frames = torch.stack([image_to_tensor(c) for c in crops]).to(device)
    sketches = torch.stack([sketch_to_tensor(landmarks_to_sketch(l, size)) for l in landmarks]).to(device)
    return frames, sketches


#: Gaussian σ (network pixels) that makes a drawn mouth interior as soft as a face enlarged from
#: the network's resolution.
MOUTH_BLUR = 1.2


class Avatar:
    """A person-specific generator: G' with AdaIN parameters ψ', ready to render any landmarks."""

    def __init__(self, config: Config, generator: nn.Module, psi: Tensor, embedding: Tensor,
                 landmarks: np.ndarray, crops: np.ndarray, meta_checkpoint: str = "",
                 meta_sha256: str = "", finetune_steps: int = 0, finetune_history: list[float] | None = None,
                 source_image: np.ndarray | None = None, source_box: np.ndarray | None = None,
                 shot_penalty: Tensor | None = None, crops_hi: np.ndarray | None = None):
        self.config = config
        self.generator = generator.eval()
        self.psi = psi  # (P,)
        self.embedding = embedding  # (N,)
        self.landmarks = np.asarray(landmarks, np.float32)  # (K, 68, 2) in crop pixels
        self.crops = np.asarray(crops, np.uint8)  # (K, S, S, 3)
        # (K, H, H, 3), S ≤ H ≤ detail.max_size: the shots at their own resolution.
        self.crops_hi = self.crops if crops_hi is None else np.asarray(crops_hi, np.uint8)
        self.meta_checkpoint = meta_checkpoint
        self.meta_sha256 = meta_sha256
        self.finetune_steps = finetune_steps
        self.finetune_history = finetune_history or []
        self.source_image = source_image  # the first shot's full image (for paste-back)
        self.source_box = source_box  # (cx, cy, side) of its crop, in source pixels
        # (K,) added to each shot's landmark distance when the warp guide picks shots: > 0 for
        # shots whose landmarks are guessed or whose mouth is hidden (WarpGuide.shot_penalty).
        self.shot_penalty = (torch.zeros(len(self.landmarks)) if shot_penalty is None
                             else shot_penalty.detach().float().cpu().reshape(len(self.landmarks)))

    # -- properties ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.config.model.image_size

    @property
    def output_size(self) -> int:
        """The default output size: the source face's own resolution (its crop square's side in
        the source photo, else the high-resolution shots' size), capped at ``detail.max_size``,
        never below the network's size."""
        from talkinghead.infer.detail import default_output_size

        side = float(self.source_box[2]) if self.source_box is not None else float(self.crops_hi.shape[1])
        return default_output_size(side, self.size, self.config.detail.max_size)

    @property
    def shots(self) -> int:
        return len(self.landmarks)

    @property
    def device(self) -> torch.device:
        return self.psi.device

    @property
    def reference_landmarks(self) -> np.ndarray:
        """(68, 2): the first shot's landmarks: absolute driving aligns onto this face, and the
        paste-back's source head is this one (relative driving may start from another shot,
        :func:`~talkinghead.infer.reenact.adapt_landmarks`)."""
        return self.landmarks[0]

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_images(cls, images: Sequence[str | os.PathLike | np.ndarray] | str | os.PathLike,
                    checkpoint: str | os.PathLike | Checkpoint | None = None, shots: int | None = None,
                    finetune_steps: int | None = None, device: str | None = None,
                    progress: bool = True, seed: int = 0, detector=None,
                    overrides: Sequence[str] = (), on_progress: ProgressCallback | None = None) -> "Avatar":
        """Build an avatar from photos, a painting, or a video/frame folder of one person.

        Faces are detected (dlib, offline) and cropped as ``talkinghead prepare`` does. With a
        single video or folder path, ``shots`` frames are taken evenly spaced from it.
        ``finetune_steps=0`` gives the paper's FF avatar; ``None`` uses the preset's default.
        ``overrides`` change the model's fine-tuning settings for this avatar (see :meth:`from_crops`).
        ``checkpoint=None`` uses the bundled model, as the CLI does. ``on_progress`` receives
        each step of face detection and fine-tuning (:mod:`talkinghead.progress`).
        """
        from talkinghead.infer.bundled import resolve_checkpoint
        from talkinghead.infer.faces import crops_from_sources

        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(resolve_checkpoint(checkpoint))
        if overrides:  # checked before the (slower) face detection
            ckpt = with_overrides(ckpt, overrides)
        faces = crops_from_sources(images, ckpt.config.model.image_size, shots=shots,
                                   detector=detector, progress=progress, on_progress=on_progress,
                                   max_size=ckpt.config.detail.max_size)
        avatar = cls.from_crops(faces.crops, faces.landmarks, ckpt, finetune_steps=finetune_steps,
                                device=device, progress=progress, seed=seed, detector=detector,
                                on_progress=on_progress, crops_hi=faces.crops_hi)
        avatar.source_image, avatar.source_box = faces.source_image, faces.source_box
        return avatar

    @classmethod
    def from_crops(cls, crops: np.ndarray, landmarks: np.ndarray, checkpoint: str | os.PathLike | Checkpoint,
                   finetune_steps: int | None = None, device: str | None = None, progress: bool = True,
                   seed: int = 0, content_loss: nn.Module | None = None,
                   overrides: Sequence[str] = (), detector=None,
                   on_progress: ProgressCallback | None = None, crops_hi: np.ndarray | None = None) -> "Avatar":
        """Build an avatar from K aligned crops (K, S, S, 3) uint8 and their landmarks (K, 68, 2).

        ``overrides``: ``train.*``/``loss.*`` settings replacing the checkpoint's for fine-tuning,
        e.g. ``["train.finetune_jaw_drop=0", "train.finetune_lr_generator=1e-4"]``.
        ``detector``: the landmark detector that found ``landmarks`` (default dlib); a
        warp-guided avatar with several shots refits them with it to spot guessed landmarks
        (:meth:`~talkinghead.models.guide.WarpGuide.shot_penalty`).
        ``crops_hi``: the same K crops at a higher resolution (K, H, H, 3), for output above S
        (:mod:`talkinghead.infer.detail`); default: ``crops`` (output above S is then upsampled).
        """
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        if overrides:
            ckpt = with_overrides(ckpt, overrides)
        config = ckpt.config
        dev = _device(device)
        if crops_hi is None and np.asarray(crops).ndim == 4 and np.asarray(crops).shape[1] > config.model.image_size:
            crops_hi = crops  # crops larger than the network's: they are the high-resolution shots
        hi = None if crops_hi is None else _check_crops_hi(np.asarray(crops_hi), len(crops), config)
        crops, landmarks = _resize_crops(np.asarray(crops), np.asarray(landmarks, np.float32),
                                         config.model.image_size)
        torch.manual_seed(seed)
        E, G, D = build_models(config.model, num_videos=1)
        shot_penalty = _shot_penalty(WarpGuide.for_generator(G, config), crops, landmarks, detector)
        load_networks(ckpt, {"E": E, "G": G}, strict=True)
        if ckpt.has("D"):
            load_networks(ckpt, {"D": D}, exclude=("D.W",))
        E, G, D = E.to(dev).eval(), G.to(dev), D.to(dev)
        frames, sketches = _stack_inputs(crops, landmarks, dev)
        with torch.no_grad():
            embedding = E(frames[None], sketches[None]).float().mean(dim=1)[0]  # (N,)
            psi = G.psi_from_embedding(embedding[None])[0]  # (P,)
        steps = config.train.finetune_steps if finetune_steps is None else int(finetune_steps)
        if steps > 0 and not ckpt.has("D"):
            raise TalkingHeadError(f"{ckpt.path}: has no discriminator weights; fine-tuning needs them "
                                   "(use finetune_steps=0 for a feed-forward avatar)")
        G, psi, history = finetune(config, G, D, psi, embedding, frames, sketches, steps,
                                   landmarks=torch.from_numpy(np.asarray(landmarks, np.float32)),
                                   seed=seed, progress=progress, content_loss=content_loss,
                                   shot_penalty=shot_penalty, on_progress=on_progress)
        return cls(config, G, psi, embedding, landmarks, crops, meta_checkpoint=str(ckpt.path),
                   meta_sha256=file_sha256(ckpt.path), finetune_steps=steps, finetune_history=history,
                   shot_penalty=shot_penalty, crops_hi=hi)

    # -- rendering -------------------------------------------------------------------------------
    def _inference_generator(self) -> nn.Module:
        """A copy of G with spectral norms folded into plain weights: the same function,
        without recomputing W/σ(W) for every conv on every call."""
        if getattr(self, "_frozen_g", None) is None:
            from torch.nn.utils import parametrize

            frozen = copy.deepcopy(self.generator).eval()
            for module in frozen.modules():
                if parametrize.is_parametrized(module):
                    for name in list(module.parametrizations.keys()):
                        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
            self._frozen_g = frozen
        return self._frozen_g

    def renderer(self) -> nn.Module:
        """This avatar as one self-contained module for export (ONNX) and live rendering:
        ``forward(sketches (B, 3, S, S), landmarks (B, 68, 2)) -> (B, 3, S, S)`` in [-1, 1], with
        ψ folded in as a buffer and spectral norms folded into the weights. ``landmarks`` are the
        sketches' landmarks in crop pixels: a warp-guided avatar warps its nearest shot onto them
        (its shots travel inside the module); the paper's G ignores them."""
        if getattr(self, "_renderer", None) is None:
            shots = marks = penalty = None
            if self.generator.warp_guidance:
                shots = torch.stack([image_to_tensor(c) for c in self.crops]).to(self.device)
                marks = torch.from_numpy(self.landmarks).to(self.device)
                penalty = self.shot_penalty.to(self.device)
            self._renderer = AvatarRenderer(self._inference_generator(), self.psi.detach().float(), shots, marks,
                                            penalty, WarpGuide.for_generator(self.generator, self.config))
        return self._renderer

    def detail_renderer(self) -> "DetailRenderer":
        """This avatar rendered at any output size (:class:`~talkinghead.infer.detail.DetailRenderer`)."""
        if getattr(self, "_detail_renderer", None) is None:
            from talkinghead.infer.detail import DetailRenderer

            shots = torch.stack([image_to_tensor(c) for c in self.crops]).to(self.device)
            shots_hi = torch.stack([image_to_tensor(c) for c in self.crops_hi]).to(self.device)
            self._detail_renderer = DetailRenderer(
                self._inference_generator(), self.psi.detach().float(), shots, shots_hi,
                torch.from_numpy(self.landmarks).to(self.device), self.shot_penalty.to(self.device),
                self.config.detail, WarpGuide.from_config(self.config, self.generator.warp_shots
                                                          if self.generator.warp_guidance else 1))
        return self._detail_renderer

    def sized_renderer(self, size: int | None = None) -> nn.Module:
        """``forward(sketches, landmarks, shot_bias)`` like :meth:`renderer`, rendering at output
        size O (default :attr:`output_size`): :meth:`renderer` itself at the network's size."""
        from talkinghead.infer.detail import FixedSizeRenderer

        size = self.check_size(size)
        return self.renderer() if size == self.size else FixedSizeRenderer(self.detail_renderer(), size)

    def check_size(self, size: int | None) -> int:
        """The output size to render at: ``size`` checked (a positive whole number up to
        ``detail.max_size``; TalkingHeadError otherwise), or :attr:`output_size` when None."""
        from talkinghead.infer.detail import check_output_size

        return self.output_size if size is None else check_output_size(size, self.config.detail.max_size)

    @torch.inference_mode()
    def render_at(self, sketches: Tensor, landmarks: Tensor | np.ndarray, size: int | None = None,
                  shot_bias: Tensor | None = None) -> Tensor:
        """:meth:`render` at output size O (default :attr:`output_size`): (B, 3, S, S) sketches and
        their (B, 68, 2) landmarks in S-px crop coordinates → (B, 3, O, O) in [-1, 1]."""
        size = self.check_size(size)
        landmarks = torch.as_tensor(np.asarray(landmarks, np.float32)).to(self.device)
        return self.detail_renderer()(sketches.to(self.device), landmarks, size, shot_bias)

    @torch.inference_mode()
    def render(self, sketches: Tensor, landmarks: Tensor | np.ndarray | None = None,
               shot_bias: Tensor | None = None) -> Tensor:
        """(B, 3, S, S) sketches in [-1, 1] and their (B, 68, 2) landmarks (needed by a warp-guided
        avatar) → (B, 3, S, S) images in [-1, 1]. ``shot_bias``: see :meth:`AvatarRenderer.forward`."""
        if landmarks is None:
            if self.generator.warp_guidance:
                raise TalkingHeadError("a warp-guided avatar renders from landmarks: pass them to render()")
            landmarks = torch.zeros(sketches.shape[0], 68, 2)
        landmarks = torch.as_tensor(np.asarray(landmarks, np.float32)).to(self.device)
        return self.renderer()(sketches.to(self.device), landmarks, shot_bias)

    def animate(self, landmarks: np.ndarray, batch_size: int = 16, progress: bool = True,
                half: bool = False, consecutive: bool = True, shot_smoothing: float | None = None,
                on_progress: ProgressCallback | None = None, size: int | None = None,
                mouths: bool = True) -> np.ndarray:
        """Render one frame per landmark set.

        Args:
            landmarks: (T, 68, 2) in this avatar's crop pixels (see :func:`adapt_landmarks` to
                map another person's landmarks onto this face).
            half: fp16 autocast (CUDA only).
            consecutive: the landmarks are a track (a video's frames in order): a warp-guided
                avatar with several shots changes shot by cross-fading over a few frames
                (``guide.shot_smoothing``). False for unrelated poses.
            shot_smoothing: that cross-fade's weight on the newest frame (1: no cross-fade;
                default: the model's ``guide.shot_smoothing``).
            on_progress: called after each batch (:mod:`talkinghead.progress`); may raise to stop.
            size: output size O in px (default :attr:`output_size`: the source face's own
                resolution, up to ``detail.max_size``); above the network's size the detail
                comes from the shots warped at O (:mod:`talkinghead.infer.detail`).
            mouths: draw mouth interiors (:meth:`draw_mouths`) on the finished O-px frames.
        Returns:
            (T, O, O, 3) uint8 RGB frames.
        """
        landmarks = np.asarray(landmarks, np.float32)
        if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
            raise TalkingHeadError(f"landmarks must be (T, 68, 2), got {landmarks.shape}")
        check_in_crop(landmarks, self.size)
        shot_smoothing = self.config.guide.shot_smoothing if shot_smoothing is None else shot_smoothing
        if not 0 < shot_smoothing <= 1:
            raise TalkingHeadError(f"shot_smoothing must be in (0, 1], got {shot_smoothing}")
        size = self.check_size(size)
        out = np.empty((len(landmarks), size, size, 3), np.uint8)
        use_amp = half and self.device.type == "cuda"
        bias = None
        if consecutive and len(landmarks):
            bias, _ = self.renderer().smoothing_bias(torch.from_numpy(landmarks), rate=shot_smoothing)
        starts = range(0, len(landmarks), batch_size)
        for start in ProgressBar(starts, "rendering", show=progress, on_progress=on_progress, unit="batch",
                                 dynamic_ncols=True):
            chunk = landmarks[start:start + batch_size]
            sketches = torch.stack([sketch_to_tensor(landmarks_to_sketch(l, self.size)) for l in chunk])
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                images = self.render_at(sketches, chunk, size, None if bias is None else bias[start:start + len(chunk)])
            out[start:start + len(chunk)] = tensor_to_image(images)
        if mouths:
            scale = out.shape[1] / self.size  # network crop pixels → output pixels
            self.draw_mouths(out, (landmarks + 0.5) * scale - 0.5, enlarged=scale)
        return out

    def mouth_levels(self, landmarks: np.ndarray) -> np.ndarray:
        """(T, 68, 2) target landmarks → (T,) opacity of the mouth interior: 0 where some
        shot opens as wide as the target (the warped shot guides the mouth), rising to 1 over
        ``mouth.distrust_ramp`` inter-ocular distances wider; all 0 with ``mouth.draw_interior`` off."""
        from talkinghead.data.mouth import lip_opening
        from talkinghead.infer.mouth_interior import interior_level

        landmarks = np.asarray(landmarks, np.float32)
        if not self.config.mouth.draw_interior or not len(landmarks):
            return np.zeros(len(landmarks))
        opening = lip_opening(torch.from_numpy(landmarks)).numpy()
        shots = lip_opening(torch.from_numpy(self.landmarks)).numpy()
        return interior_level(opening, shots, self.config.mouth.distrust_ramp)

    def mouth_palette(self):
        """The person's mouth colours (:func:`~talkinghead.infer.mouth_interior.mouth_palette`),
        from :meth:`widest_open_shot`."""
        if getattr(self, "_mouth_palette", None) is None:
            from talkinghead.infer.mouth_interior import mouth_palette

            self._mouth_palette = mouth_palette(*self.widest_open_shot())
        return self._mouth_palette

    def widest_open_shot(self) -> tuple[np.ndarray, np.ndarray]:
        """The shot whose lips open widest (the one most likely to show teeth): its (H, W, 3)
        uint8 image at the resolution kept (``crops_hi``) and its (68, 2) landmarks there."""
        from talkinghead.data.mouth import lip_opening

        widest = int(lip_opening(torch.from_numpy(self.landmarks)).argmax())
        hi = self.crops_hi[widest]
        scale = hi.shape[0] / self.size
        return hi, (self.landmarks[widest] + 0.5) * scale - 0.5

    def learned_mouth(self):
        """The mouth generator set up with :meth:`widest_open_shot`
        (:class:`~talkinghead.infer.mouth_interior.LearnedInterior`), loaded once from
        ``mouth.weights`` or the bundled file."""
        weights = self.config.mouth.weights
        if getattr(self, "_learned_mouth", None) is None or self._learned_mouth[0] != weights:
            from talkinghead.checkpoint import load_mouth_checkpoint
            from talkinghead.infer.bundled import resolve_mouth_weights
            from talkinghead.infer.mouth_interior import LearnedInterior
            from talkinghead.models.mouth import MouthGenerator

            net_config, state, _ = load_mouth_checkpoint(resolve_mouth_weights(weights or None))
            net = MouthGenerator(net_config)
            net.load_state_dict(state)
            self._learned_mouth = (weights, LearnedInterior(net, *self.widest_open_shot()))
        return self._learned_mouth[1]

    def draw_mouths(self, frames: np.ndarray, landmarks: np.ndarray, enlarged: float = 1.0) -> np.ndarray:
        """Put mouth interiors into finished (T, H, W, 3) uint8 frames (in place, at their own
        resolution: a crop at any size, or a frame pasted back) given the target landmarks
        (T, 68, 2) in those frames' pixels, where the target opens wider than every shot
        (:meth:`mouth_levels`): learned (``mouth.interior = "learned"``, the mouth generator)
        or drawn. ``enlarged``: the frames' pixels per network pixel (a drawn interior is made
        about as soft as the generator's part of the face). Returns ``frames``."""
        from talkinghead.infer.mouth_interior import draw_interiors

        levels = self.mouth_levels(landmarks)
        if levels.any():
            marks = np.asarray(landmarks, np.float64)
            if self.config.mouth.interior == "learned":
                self.learned_mouth().fill(frames, marks, levels)
            else:
                draw_interiors(frames, marks, levels, self.mouth_palette(), blur=MOUTH_BLUR * enlarged)
        return frames

    def animate_track(self, track, mode: str = "relative", reference: str | int = "neutral", smooth: bool = True,
                      fps: float = 25.0, batch_size: int = 16, progress: bool = True,
                      size: int | None = None) -> np.ndarray:
        """Render a driving track as ``talkinghead animate`` does: One-Euro smoothed, mapped onto
        this face (:func:`~talkinghead.infer.reenact.adapt_landmarks`), shots cross-faded.

        Args:
            track: a :class:`~talkinghead.infer.driving.DrivingTrack` (from ``track_from_video`` or
                ``track_from_npy``) or (T, 68, 2) landmarks in the driver's own pixels.
            mode: ``"relative"`` (this face's shape, the driver's motion) or ``"absolute"``.
            reference: the driver's neutral frame: an index, ``"neutral"``, ``"first"`` or ``"best"``
                (:func:`~talkinghead.infer.reenact.adapt_landmarks`).
            smooth: smooth the landmarks and cross-fade shots (as the CLI unless ``--no-smooth``).
            fps: the landmarks' frame rate when ``track`` is an array (for smoothing).
            size: output size O (default :attr:`output_size`; see :meth:`animate`).
        Returns:
            (T, O, O, 3) uint8 RGB frames.
        """
        from talkinghead.infer.driving import DrivingTrack, hold_lost_frames, smoothed
        from talkinghead.infer.reenact import adapt_landmarks

        if not isinstance(track, DrivingTrack):
            landmarks, lost = hold_lost_frames(np.asarray(track, np.float32))
            track = DrivingTrack(landmarks, fps, lost)
        if smooth:
            track = smoothed(track)
        adapted = adapt_landmarks(track.landmarks, self.landmarks, mode=mode, reference=reference)
        return self.animate(adapted, batch_size=batch_size, progress=progress, consecutive=smooth, size=size)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the avatar atomically (safetensors + JSON header)."""
        tensors = {
            "psi": self.psi.detach().float().cpu().contiguous(),
            "embedding": self.embedding.detach().float().cpu().contiguous(),
            "landmarks": torch.from_numpy(self.landmarks).contiguous(),
            "crops": torch.from_numpy(np.ascontiguousarray(self.crops)),
            "shot_penalty": self.shot_penalty.contiguous(),
        }
        if self.crops_hi.shape[1] != self.crops.shape[1]:
            tensors["crops_hi"] = torch.from_numpy(np.ascontiguousarray(self.crops_hi))
        if self.finetune_steps > 0:
            for key, value in self.generator.state_dict().items():
                tensors[f"G.{key}"] = value.detach().cpu().contiguous()
        if self.source_image is not None and self.source_box is not None:
            from talkinghead.data.store import encode_jpeg

            tensors["source_jpeg"] = torch.frombuffer(bytearray(encode_jpeg(self.source_image, 95)),
                                                      dtype=torch.uint8)
            tensors["source_box"] = torch.as_tensor(np.asarray(self.source_box, np.float32))
        meta = {
            "format": FORMAT_NAME,
            "version": str(FORMAT_VERSION),
            "config": self.config.to_json(),
            "meta_checkpoint": self.meta_checkpoint,
            "meta_sha256": self.meta_sha256,
            "finetune_steps": str(self.finetune_steps),
            "finetune_history": json.dumps(self.finetune_history),
        }
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
             device: str | None = None) -> "Avatar":
        """Load an avatar; a feed-forward avatar also needs its meta checkpoint (found by the
        stored path, or given here) and checks it is the same file by SHA-256."""
        path = Path(path)
        tensors, meta, config = read_tagged_file(path, FORMAT_NAME, "avatar file")
        validate_avatar_tensors(path, tensors, meta, config)
        dev = _device(device)
        _, G, _ = build_models(config.model, num_videos=1)
        if tensors["psi"].numel() != G.psi_size:
            raise TalkingHeadError(f"{path}: corrupt avatar file (psi holds {tensors['psi'].numel()} values, "
                                   f"its model's G takes {G.psi_size})")
        g_state = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
        if g_state:
            try:
                G.load_state_dict(g_state)
            except RuntimeError:
                raise TalkingHeadError(f"{path}: generator weights do not fit its own config (corrupt?)") from None
        else:
            meta_path = Path(checkpoint or meta["meta_checkpoint"])
            if not meta_path.is_file():
                raise TalkingHeadError(f"{path}: needs its meta checkpoint {meta_path}, which is missing "
                                       "(pass it with checkpoint=/--checkpoint)")
            if meta.get("meta_sha256") and file_sha256(meta_path) != meta["meta_sha256"]:
                raise TalkingHeadError(f"{path}: was made with another meta checkpoint than {meta_path}")
            load_networks(load_checkpoint(meta_path), {"G": G})
        source_image = source_box = None
        if "source_jpeg" in tensors:
            from talkinghead.data.store import decode_jpeg

            source_image = decode_jpeg(tensors["source_jpeg"].numpy())
            source_box = tensors["source_box"].numpy()
        return cls(config, G.to(dev), tensors["psi"].to(dev), tensors["embedding"].to(dev),
                   tensors["landmarks"].numpy(), tensors["crops"].numpy(),
                   meta_checkpoint=meta.get("meta_checkpoint", ""), meta_sha256=meta.get("meta_sha256", ""),
                   finetune_steps=int(meta.get("finetune_steps", 0)),
                   finetune_history=json.loads(meta.get("finetune_history", "[]")),
                   source_image=source_image, source_box=source_box,
                   shot_penalty=tensors.get("shot_penalty"),  # absent in older files: no penalty
                   crops_hi=tensors["crops_hi"].numpy() if "crops_hi" in tensors else None)  # older: shots at S


def validate_avatar_tensors(path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict[str, str],
                            config: Config) -> None:
    """Check an avatar file's tensors and header against its (already validated) config before
    anything is built from them: an edited file ends in one line, ``<path>: corrupt avatar file
    (...)``, never a traceback or an odd allocation. ``read_tagged_file`` has checked that
    floating tensors are finite; ψ's length is checked against G once G is built."""
    import math

    def corrupt(problem: str) -> TalkingHeadError:
        return TalkingHeadError(f"{path}: corrupt avatar file ({problem})")

    def check(name: str, shape: tuple, kinds: tuple[torch.dtype, ...], required: bool = True) -> None:
        if name not in tensors:
            if required:
                raise corrupt(f"no {name} tensor")
            return
        tensor = tensors[name]
        if tensor.dtype not in kinds or tuple(tensor.shape) != shape:
            expected = "uint8" if kinds == (torch.uint8,) else "floats"
            raise corrupt(f"{name} is {tuple(tensor.shape)} {str(tensor.dtype).replace('torch.', '')}, "
                          f"expected {shape} {expected}")

    floats = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
    size = config.model.image_size
    marks = tensors.get("landmarks")
    shots = int(marks.shape[0]) if marks is not None and marks.dim() == 3 and marks.shape[0] > 0 else 1
    check("landmarks", (shots, 68, 2), floats[:2])  # numpy has no bfloat16
    check("crops", (shots, size, size, 3), (torch.uint8,))
    psi = tensors.get("psi")
    check("psi", (int(psi.numel()) if psi is not None else 1,), floats)
    check("embedding", (config.model.embed_dim,), floats)
    check("shot_penalty", (shots,), floats, required=False)
    hi = tensors.get("crops_hi")
    if hi is not None:
        side = int(hi.shape[1]) if hi.dim() == 4 else 0
        if not size <= side <= config.detail.max_size:
            raise corrupt(f"crops_hi are {side} px, expected {size} to {config.detail.max_size}")
        check("crops_hi", (shots, side, side, 3), (torch.uint8,))
    if float(tensors["landmarks"].abs().max()) > 8 * size:  # a face's points lie about its crop
        raise corrupt(f"landmarks reach {float(tensors['landmarks'].abs().max()):.3g} px in a {size}-px crop")
    if not any(k.startswith("G.") for k in tensors) and "meta_checkpoint" not in meta:
        raise corrupt("neither generator weights nor the meta checkpoint they come from")
    steps = meta.get("finetune_steps", "0")
    if not (steps.isdigit() and len(steps) <= 18):
        raise corrupt(f"finetune_steps {steps[:40]!r} is not a whole number")
    try:
        history = json.loads(meta.get("finetune_history", "[]"))
    except ValueError:
        history = None
    if not (isinstance(history, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              and math.isfinite(v) for v in history)):
        raise corrupt("finetune_history is not a list of finite numbers")
    if ("source_jpeg" in tensors) != ("source_box" in tensors):
        raise corrupt("one of source_jpeg and source_box without the other")
    if "source_jpeg" in tensors:
        check("source_box", (3,), floats)
        if not float(tensors["source_box"][2]) > 0:
            raise corrupt(f"source_box side {float(tensors['source_box'][2]):g} is not positive")
        jpeg = tensors["source_jpeg"]
        if jpeg.dtype != torch.uint8 or jpeg.dim() != 1:
            raise corrupt(f"source_jpeg is {tuple(jpeg.shape)} {jpeg.dtype}, expected JPEG bytes")
        _check_jpeg(bytes(jpeg.numpy()), corrupt)


def _check_jpeg(data: bytes, corrupt) -> None:
    """A JPEG whose header Pillow reads, of at most Pillow's bomb limit, that decodes (no
    allocation is made from a size the header merely claims)."""
    import io

    from PIL import Image

    from talkinghead.data.store import decode_jpeg

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
    except Exception as exc:  # Pillow raises many kinds for garbage
        raise corrupt(f"source_jpeg is not an image ({type(exc).__name__})") from None
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
    if fmt != "JPEG" or width * height > limit:
        raise corrupt(f"source_jpeg is a {width}x{height} {fmt}, expected a JPEG of at most {limit / 1e6:.0f} MP")
    try:
        decode_jpeg(np.frombuffer(data, np.uint8))
    except (ValueError, cv2.error):
        raise corrupt("source_jpeg does not decode") from None


class AvatarRenderer(nn.Module):
    """A person-specific generator with its ψ (and, warp-guided, its shots) as buffers
    (see :meth:`Avatar.renderer`)."""

    def __init__(self, generator: nn.Module, psi: Tensor, shots: Tensor | None = None,
                 shot_landmarks: Tensor | None = None, shot_penalty: Tensor | None = None,
                 guide: WarpGuide | None = None):
        super().__init__()
        self.generator = generator
        self.register_buffer("psi", psi.reshape(-1))
        self.guide = guide if guide is not None else WarpGuide.for_generator(generator)
        self.guided = self.guide is not None
        if self.guided:
            self.register_buffer("shots", shots)  # (K, 3, S, S) in [-1, 1]
            self.register_buffer("shot_landmarks", shot_landmarks.float())  # (K, 68, 2)
            penalty = torch.zeros(len(shots)) if shot_penalty is None else shot_penalty.float()
            self.register_buffer("shot_penalty", penalty.reshape(len(shots)).to(shots.device))  # (K,)

    def forward(self, sketches: Tensor, landmarks: Tensor, shot_bias: Tensor | None = None) -> Tensor:
        """sketches (B, 3, S, S) in [-1, 1], landmarks (B, 68, 2) crop pixels → (B, 3, S, S).
        ``shot_bias``: optional (B, K) added to the shots' distances (:meth:`smoothing_bias`)."""
        b = sketches.shape[0]
        guide = None
        if self.guided:
            penalty = self.shot_penalty[None].expand(b, -1)
            if shot_bias is not None:
                penalty = penalty + shot_bias.to(penalty)
            guide = self.guide(self.shots[None].expand(b, -1, -1, -1, -1),
                               self.shot_landmarks[None].expand(b, -1, -1, -1), landmarks.float(), penalty=penalty)
        return self.generator(sketches, self.psi.expand(b, -1), guide)

    def smoothing_bias(self, landmarks: Tensor, previous: Tensor | None = None,
                       rate: float | None = None) -> tuple[Tensor | None, Tensor | None]:
        """For T consecutive frames' landmarks (T, 68, 2): the ``shot_bias`` (T, K) that makes the
        guide rank and weight shots by smoothed distances, and the state (K,) to pass as
        ``previous`` with the next frames (:meth:`WarpGuide.smoothing_bias`; ``rate`` default: the
        guide's ``shot_smoothing``). (None, None) without a choice of shot (the paper's G, one shot)."""
        if not self.guided:
            return None, None
        return self.guide.smoothing_bias(self.shot_landmarks, landmarks, previous, rate)


def _shot_penalty(guide: WarpGuide | None, crops: np.ndarray, landmarks: np.ndarray, detector=None) -> Tensor:
    """(K,) distance added to shots with guessed landmarks or a hidden mouth
    (:meth:`WarpGuide.shot_penalty`); zeros for an unguided G or one shot (nothing to choose between)."""
    if guide is None or len(crops) < 2:
        return torch.zeros(len(crops))
    return guide.shot_penalty(crops, landmarks, detector)


def check_in_crop(landmarks: np.ndarray, size: int) -> None:
    """Refuse (T, 68, 2) landmarks that are not in a ``size``-px crop's pixels: a face centred
    outside the crop or larger than it renders garbage, and usually means a driving video's
    landmarks were passed without mapping them onto the avatar."""
    finite = np.isfinite(landmarks).all(axis=(1, 2))
    if not finite.any():
        return
    marks = landmarks[finite]
    centre = marks.mean(axis=1)  # (T, 2)
    extent = (marks.max(axis=1) - marks.min(axis=1)).max(axis=1)  # (T,)
    bad = ((centre < 0) | (centre >= size)).any(axis=1) | (extent > 1.5 * size)
    if bad.any():
        t = int(np.flatnonzero(finite)[np.flatnonzero(bad)[0]])
        lo, hi = landmarks[t].min(axis=0), landmarks[t].max(axis=0)
        raise TalkingHeadError(
            f"landmarks of frame {t} span x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}: not in this "
            f"avatar's {size}-px crop (a driving video's pixels?); map them onto the avatar with "
            "adapt_landmarks(landmarks, avatar.reference_landmarks) or use avatar.animate_track(track)")


def _check_crops_hi(crops_hi: np.ndarray, shots: int, config: Config) -> np.ndarray:
    """(K, H, H, 3) uint8 high-resolution shots, resized to ``detail.max_size`` if larger."""
    if crops_hi.ndim != 4 or crops_hi.shape[-1] != 3 or crops_hi.shape[1] != crops_hi.shape[2] or len(crops_hi) != shots:
        raise TalkingHeadError(f"crops_hi must be ({shots}, H, H, 3) uint8, got {crops_hi.shape}")
    side = min(max(crops_hi.shape[1], config.model.image_size), config.detail.max_size)
    if crops_hi.shape[1] == side:
        return crops_hi.astype(np.uint8)
    interpolation = cv2.INTER_AREA if side < crops_hi.shape[1] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(c, (side, side), interpolation=interpolation) for c in crops_hi])


def _resize_crops(crops: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
        raise TalkingHeadError(f"crops must be (K, S, S, 3) uint8, got {crops.shape}")
    if landmarks.shape != (len(crops), 68, 2):
        raise TalkingHeadError(f"landmarks must be ({len(crops)}, 68, 2), got {landmarks.shape}")
    if crops.shape[1] == size:
        return crops.astype(np.uint8), landmarks
    scale = size / crops.shape[1]
    resized = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
    return resized, landmarks * scale

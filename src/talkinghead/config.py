"""Typed configuration with named presets.

Three presets share one architecture and differ in size:

* ``tiny``  — 64×64, narrow; unit tests run it in seconds on a CPU.
* ``small`` — 128×128; trainable on a 2-core CPU, and the bundled model's preset.
* ``paper`` — 256×256 with the widths of Zakharov et al. (2019), N = 512.

Every checkpoint stores the full :class:`Config` as JSON, so a model can be rebuilt
exactly from the file alone (``Config.from_dict``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from talkinghead.errors import TalkingHeadError


@dataclass
class ModelConfig:
    """Architecture of the embedder E, generator G and discriminator D."""

    image_size: int = 256
    #: Channels of the first (highest resolution) block; doubled per downsampling.
    base_channels: int = 64
    #: Upper bound on channels in any block.
    max_channels: int = 512
    #: Size N of the person embedding ê (512 in the paper).
    embed_dim: int = 512
    #: Downsampling blocks in G's encoder (image_size / 2**n is G's bottleneck size).
    gen_downsamples: int = 4
    #: AdaIN residual blocks at G's bottleneck.
    gen_res_blocks: int = 5
    #: Spatial sizes at which self-attention follows a downsampling block, in E, D and G's
    #: encoder. Paper: 32×32 only.
    attention_sizes: tuple[int, ...] = (32,)
    #: Spatial sizes at which self-attention follows an upsampling block in G's decoder.
    #: Paper: 64×64 only. (Before this switch existed every network used ``attention_sizes``
    #: everywhere; checkpoints without it load that way.)
    decoder_attention_sizes: tuple[int, ...] = (64,)
    #: Downsampling blocks in E and D (image_size / 2**n is their final feature map size).
    disc_downsamples: int = 6
    #: A same-resolution residual block after E's last downsampling block. Paper: no (it adds
    #: that block to D only); the ``tiny``/``small`` presets keep it (their bundled model has it).
    embedder_extra_block: bool = False
    #: A same-resolution residual block after D's last downsampling block (paper: yes).
    discriminator_extra_block: bool = True
    #: E and D end in global sum pooling then ReLU (paper: False). True: ReLU then pooling, the
    #: order of the ``tiny``/``small`` presets and of the bundled model.
    relu_before_pool: bool = False
    #: Spectral normalisation in G, E and D, as in the paper.
    spectral_norm: bool = True
    #: Warp-guided G (not in the paper): besides the target sketch, G receives the K shot nearest
    #: in pose warped onto the target landmarks (piecewise-affine, :mod:`talkinghead.data.warp`)
    #: with its trust mask, and outputs a blend α·warped + (1 − α)·synthesised. The warp keeps
    #: the person's real pixels (sharp, identity-true); G synthesises what it cannot (mouth
    #: interior, disocclusions) and fixes its seams. False: the paper's G, every pixel synthesised.
    warp_guidance: bool = False
    #: Warp-guided G only: also add a learned correction to the warped shot, out = α·(warped + Δ)
    #: + (1 − α)·synthesised. Without it (the first warp-guided model) α saturated at 1 in
    #: meta-learning and G copied the warp: with α ≈ 1 neither branch gets a gradient.
    warp_correction: bool = False
    #: Warp-guided G only: the guide averages the warps of this many nearest shots (weighted by
    #: a softmax of their landmark distances, :class:`talkinghead.models.guide.WarpGuide`), not the
    #: nearest alone, so that near-equal matches' misalignments cancel (docs/experiments.md).
    #: 1: the nearest shot only.
    warp_shots: int = 1
    #: Spectral normalisation on G's projection P (paper: yes, every layer). False: plain
    #: linear P with small initial entries (``tiny``/``small``, the bundled model).
    projection_spectral_norm: bool = True

    def validate(self) -> None:
        _check_fields(self, "model", minimum={"image_size": 16, "base_channels": 1, "max_channels": 1,
                                              "embed_dim": 1, "gen_downsamples": 0, "gen_res_blocks": 0,
                                              "disc_downsamples": 1, "warp_shots": 1},
                      maximum=_MODEL_MAXIMUM)
        for name in ("attention_sizes", "decoder_attention_sizes"):
            sizes = getattr(self, name)
            if (not isinstance(sizes, tuple) or len(sizes) > 16
                    or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= self.image_size
                               for s in sizes)):
                raise TalkingHeadError(f"model.{name}={sizes!r}: up to 16 sizes, each from 1 to image_size")
        if self.max_channels < self.base_channels:
            raise TalkingHeadError(f"model.max_channels={self.max_channels} is below model.base_channels="
                                   f"{self.base_channels}")
        if self.image_size % (2 ** self.gen_downsamples):
            raise TalkingHeadError(
                f"image_size {self.image_size} is not divisible by 2**gen_downsamples"
            )
        if self.image_size // (2 ** self.disc_downsamples) < 1:
            raise TalkingHeadError("disc_downsamples too large for image_size")
        if self.parameter_bound() > MAX_MODEL_PARAMETERS:
            raise TalkingHeadError(
                f"model.base_channels={self.base_channels}, max_channels={self.max_channels}, "
                f"embed_dim={self.embed_dim}: networks of up to {self.parameter_bound():.2g} parameters, "
                f"more than the {MAX_MODEL_PARAMETERS:.0e} allowed")

    def parameter_bound(self) -> int:
        """A generous upper bound on E + G + D's parameter count, from the settings alone (no
        network is built, so an absurd config is refused before it allocates anything). Every
        block is counted at the widest width C: two 3×3 convolutions and a 1×1 skip (19·C²), each
        self-attention as 2·C², P as N × ψ with ψ ≤ 4·C per AdaIN block: 2-3× the real count."""
        levels = max(self.gen_downsamples, self.disc_downsamples)
        width = min(self.max_channels, self.base_channels * 2 ** levels)
        blocks = 2 * self.gen_downsamples + self.gen_res_blocks + 2 * (self.disc_downsamples + 1)
        attention = 3 * len(self.attention_sizes) + len(self.decoder_attention_sizes)
        psi = 4 * width * (self.gen_res_blocks + self.gen_downsamples)
        return (width * width * (19 * blocks + 2 * attention)
                + self.embed_dim * (psi + 3 * width) + 100 * width)


#: Largest accepted :meth:`ModelConfig.parameter_bound` (the paper's networks: 1.5e8 by that bound,
#: 7.2e7 in fact): a config beyond it is a typo or a corrupt file, not a model to allocate.
MAX_MODEL_PARAMETERS = 2_000_000_000
#: Upper bounds of ModelConfig's counts (besides the parameter bound, which caps the widths).
_MODEL_MAXIMUM = {"image_size": 4096, "gen_downsamples": 12, "disc_downsamples": 12, "gen_res_blocks": 64,
                  "warp_shots": 64}


@dataclass
class LossConfig:
    """Loss weights (paper, section 3.2 and implementation details)."""

    #: Weight of the VGG19 (ImageNet) part of the content loss L_CNT.
    vgg19: float = 1.5e-1
    #: Weight of the face-recognition part of L_CNT (VGGFace in the paper; dlib's ResNet here).
    face: float = 2.5e-2
    #: Weight of the pixel L1 term that replaces VGG19 when its weights are not available.
    pixel_fallback: float = 10.0
    #: Hinge adversarial loss weight for G.
    adversarial: float = 1.0
    #: Feature matching L_FM.
    feature_matching: float = 10.0
    #: Embedding match L_MCH between W_i and ê_i.
    embedding_match: float = 80.0
    #: The paper's L_MCH also pulls ê_i towards W_i. E ends in ReLU + sum pooling (ê ≥ 0) while
    #: W rows have both signs, so that pull drives E's channels to 0 one by one; our first
    #: bundled run lost its whole embedder that way (ê ≡ 0, all W rows ≈ 0 by step 4250).
    #: False (default): L_MCH moves only W_i towards ê_i, which is what fine-tuning needs (w' = ê).
    embedding_match_pulls_embedder: bool = False
    #: Refuse to meta-learn when VGG19 weights are missing (the ``paper`` preset): the pixel
    #: L1 stand-in would silently make a different model. ``train --allow-pixel-loss`` or
    #: False: fall back to pixel L1 with one warning.
    require_vgg19: bool = True

    def validate(self) -> None:
        # Every weight is a finite number >= 0 (0 turns a term off).
        _check_fields(self, "loss", default_minimum=0.0)


@dataclass
class TrainConfig:
    """Meta-learning (stage 1) and fine-tuning (stage 2) settings."""

    #: Episodes per optimiser step (per process under DDP).
    batch_size: int = 6
    #: K: frames per episode fed to the embedder (8 in the paper).
    shots: int = 8
    lr_generator: float = 5e-5  # E and G (paper)
    lr_discriminator: float = 2e-4  # D (paper)
    #: Learning rate of D's per-video rows W (sparse Adam; the paper uses D's rate). A row
    #: is updated only when its video is drawn (about twice per epoch per D step), so on a
    #: large data set a higher rate lets W_i reach ê_i, which fine-tuning's w' = ê assumes.
    lr_embedding_rows: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.999)
    #: D updates per G update (2 in the paper, following SAGAN). 0: G and E only.
    disc_steps: int = 2
    #: Each D step after the first draws a fresh batch of episodes (their fakes rendered by
    #: the current E and G without gradients), as in SAGAN's alternating updates. False: every
    #: D step reuses the G step's (real, fake) batch (cheaper; the ``tiny``/``small`` presets).
    disc_fresh_batches: bool = True
    steps: int = 100_000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 20
    image_every: int = 500
    #: bf16/fp16 autocast on CUDA; ignored on CPU.
    amp: bool = True
    #: torch.compile E, G (with P) and D.
    compile: bool = False
    #: DataLoader worker processes per rank; -1: from the CPU cores (cores per local rank − 1,
    #: at most 12).
    num_workers: int = -1
    #: Random horizontal flips (landmarks mirrored) and colour gain in meta-learning episodes.
    augment: bool = False
    seed: int = 0
    #: Fine-tuning defaults (stage 2).
    finetune_steps: int = 100
    finetune_lr_generator: float = 5e-5
    finetune_lr_discriminator: float = 2e-4
    finetune_batch_size: int = 8
    #: Random similarity warps (scale, rotation, shift) of the K shots and their sketches during
    #: fine-tuning, so that a one-shot avatar learns to follow head motion instead of memorising
    #: one pose. Not in the paper; 0 turns it off.
    finetune_warp: float = 1.0
    #: Random jaw drops of the shots (chin, jaw and lower lip moved down with their pixels,
    #: sketches redrawn) during fine-tuning: a one-shot avatar otherwise learns the single
    #: expression it sees for every mouth sketch and smears when the driver opens wide. Not in
    #: the paper; 0 (default) turns it off, 1 drops the chin by up to 0.7 × the eye distance.
    finetune_jaw_drop: float = 0.0
    #: Fine-tune with the adversarial and feature-matching terms and D updates, as in the paper.
    #: False: content loss only (no D steps, about twice as fast). A briefly meta-learned D judges
    #: a new person poorly and its gradients add noise; such a model is better fine-tuned without.
    finetune_adversarial: bool = True
    #: Warp-guided G with ``model.warp_shots`` > 1: this fraction of meta-learning batches is
    #: guided by the single nearest shot instead, as a one-shot avatar always is, so G learns
    #: both the fused guide and a lone (sharper) warped shot.
    warp_single_shot_fraction: float = 0.25
    #: Warp-guided G: the chance that an episode's guide gets a hand-like patch of another
    #: batch image pasted over the face while its target stays clean
    #: (:func:`~talkinghead.data.augment.paste_occluders`), so G learns not to copy occluders.
    guide_occlusion: float = 0.0

    def validate(self) -> None:
        _check_fields(self, "train", minimum=_TRAIN_MINIMUM)
        for name in ("warp_single_shot_fraction", "guide_occlusion"):
            if getattr(self, name) > 1:
                raise TalkingHeadError(f"train.{name}={getattr(self, name)}: a fraction, at most 1")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise TalkingHeadError(f"train.betas={self.betas}: Adam needs two betas, each in [0, 1), "
                                   "e.g. train.betas=0.0,0.999")


#: Lower bounds of TrainConfig's integer fields (fields not listed: any finite value).
_TRAIN_MINIMUM = {"batch_size": 1, "shots": 1, "disc_steps": 0, "steps": 1, "checkpoint_every": 1,
                  "keep_checkpoints": 1, "log_every": 1, "image_every": 1, "num_workers": -1,
                  "finetune_steps": 0, "finetune_batch_size": 1, "finetune_warp": 0.0,
                  "finetune_jaw_drop": 0.0, "warp_single_shot_fraction": 0.0, "guide_occlusion": 0.0,
                  # a learning rate of 0 freezes a network (tests and ablations use it)
                  "lr_generator": 0.0, "lr_discriminator": 0.0, "finetune_lr_generator": 0.0,
                  "finetune_lr_discriminator": 0.0}


def _check_fields(section, name: str, minimum: dict | None = None, positive: tuple = (),
                  default_minimum: float | None = None, maximum: dict | None = None) -> None:
    """Types and ranges of a config section's fields: a bool is a bool, an int an int (not a
    float or a bool), a float a finite number; ``minimum`` / ``maximum`` / ``positive`` bound
    them. Raises TalkingHeadError naming ``section.field`` and the value."""
    import math

    minimum, maximum = minimum or {}, maximum or {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        label = f"{name}.{f.name}={value!r}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TalkingHeadError(f"{label}: must be true or false")
            continue
        if isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TalkingHeadError(f"{label}: must be a whole number")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TalkingHeadError(f"{label}: must be a finite number")
        else:
            continue
        low = minimum.get(f.name, default_minimum)
        if low is not None and value < low:
            raise TalkingHeadError(f"{label}: must be at least {low:g}")
        if f.name in maximum and value > maximum[f.name]:
            raise TalkingHeadError(f"{label}: must be at most {maximum[f.name]:g}")
        if f.name in positive and not value > 0:
            raise TalkingHeadError(f"{label}: must be greater than 0")


@dataclass
class DetailConfig:
    """Rendering above the network's size (:mod:`talkinghead.infer.detail`): the network renders
    at ``model.image_size``, the fine detail comes from the guide warped at output resolution."""

    #: Largest output size (px); the default output size is the source face's, capped here.
    max_size: int = 512
    #: The output-resolution warp's dense map is computed on a grid of this many points a side
    #: and upsampled (the map is piecewise affine: a coarse grid loses almost nothing).
    map_resolution: int = 64
    #: Without a guide-trust output (the paper's G), the detail is added where the network's
    #: image agrees with the downsampled guide: α = exp(−|out − guide| / this), mean over colour
    #: channels in [-1, 1] units.
    agreement_temperature: float = 0.1
    #: Paste-back: the rendered head mask is feathered over this fraction of the output size.
    paste_feather: float = 0.04

    def validate(self) -> None:
        _check_fields(self, "detail", minimum={"max_size": 16, "map_resolution": 8},
                      maximum={"max_size": 4096, "map_resolution": 1024, "paste_feather": 0.5},
                      positive=("agreement_temperature",), default_minimum=0.0)


@dataclass
class MouthConfig:
    """The mouth's inside (not in the paper; :mod:`talkinghead.data.mouth`)."""

    #: Distrust a warped shot inside the target's inner lips where the target opens wider than
    #: the shot (the shot's lips and teeth would be stretched there): the guide's trust falls
    #: to 0 over ``distrust_ramp`` inter-ocular distances of extra opening. False: the paper-free
    #: guide as the bundled model was trained with.
    guide_distrust: bool = True
    distrust_ramp: float = 0.15
    #: Put a mouth interior (:mod:`talkinghead.infer.mouth_interior`, made as ``interior`` says)
    #: on the finished frames where the target opens wider than every shot, at the frames' own
    #: resolution, faded in over ``distrust_ramp``. False: the generator's mouth as it renders.
    #: (The name predates the learned interior; checkpoints and avatars store it.)
    draw_interior: bool = True
    #: How the interior is made: "learned" (the mouth generator, :mod:`talkinghead.models.mouth`,
    #: trained by ``talkinghead train-mouth``) or "drawn" (closed-form cavity, teeth and tongue,
    #: :mod:`talkinghead.infer.mouth_interior`).
    interior: str = "learned"
    #: The mouth generator's file for "learned"; empty: the one bundled with the package.
    weights: str = ""

    def validate(self) -> None:
        _check_fields(self, "mouth", positive=("distrust_ramp",))
        if self.interior not in ("learned", "drawn"):
            raise TalkingHeadError(f"mouth.interior must be 'learned' or 'drawn', not {self.interior!r}")


@dataclass
class MouthNetConfig:
    """The mouth generator's shape (saved in its checkpoint)."""

    #: Side of the canonical mouth crop in pixels (the outer mouth spans ``span`` of it).
    size: int = 96
    #: Outer mouth width (points 48–54) as a fraction of the crop's side.
    span: float = 0.7
    #: Channels at 1, 1/2, 1/4 and 1/8 of the crop's side.
    channels: tuple[int, ...] = (16, 32, 64, 96)
    #: Crop pixels by which the inner-lip polygon is grown before it is blanked and filled
    #: (landmarks miss the lips' inner edge by a pixel or two; the shot's teeth must not leak).
    grow: float = 2.5

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict) -> "MouthNetConfig":
        data = dict(data)
        data["channels"] = tuple(data.get("channels", cls.channels))
        config = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        config.validate()
        return config

    def validate(self) -> None:
        # Checked before a network is built from a file: an edited size must not allocate terabytes.
        levels = 2 ** (len(self.channels) - 1)
        if not (16 <= int(self.size) <= 256 and int(self.size) % levels == 0):
            raise TalkingHeadError(f"mouth net: size {self.size} must be 16–256 and divisible by {levels}")
        if not (2 <= len(self.channels) <= 6 and all(1 <= int(c) <= 512 for c in self.channels)):
            raise TalkingHeadError(f"mouth net: channels {list(self.channels)} must be 2–6 numbers of 1–512")
        if not (0.1 <= float(self.span) <= 1.0 and 0.0 <= float(self.grow) <= 16.0):
            raise TalkingHeadError(f"mouth net: span {self.span} (0.1–1) or grow {self.grow} (0–16) out of range")


@dataclass
class GuideConfig:
    """How a warp-guided G's guide chooses and weights its shots (:mod:`talkinghead.models.guide`).

    Used alike by meta-learning, fine-tuning, rendering, evaluation and ONNX export; a checkpoint
    written before this section existed loads with these defaults, the values it was made with.
    The measurements behind them: docs/experiments.md.
    """

    #: Softmax temperature over the fused shots' landmark distances: near-equal matches share
    #: the weight (their misalignments cancel), clearly worse ones barely count.
    fusion_temperature: float = 0.005
    #: A shot whose landmarks the shape predictor does not reproduce (refit error above this, in
    #: inter-ocular distances) has guessed landmarks (a near-profile) and is passed over ...
    unreliable_landmarks: float = 0.05
    #: ... by adding this × the excess to its landmark distance.
    unreliable_shot_weight: float = 0.1
    #: A shot whose mouth points move more than this under small box shifts may hide its mouth
    #: (a hand), or this × its clip's lower quartile when that is higher (a soft video) ...
    hidden_mouth_spread: float = 0.015
    hidden_mouth_clip_factor: float = 2.0
    #: ... plus this slope × the head's yaw beyond ``hidden_mouth_yaw_free`` (a turned head
    #: loosens the mouth, and is the right guide for a turned target) ...
    hidden_mouth_yaw_free: float = 0.1
    hidden_mouth_yaw_slope: float = 0.5
    #: ... and is passed over by adding this × the excess to its landmark distance.
    hidden_mouth_weight: float = 0.5
    #: Consecutive frames: weight of the newest frame in the moving average of shot distances,
    #: so that a change of nearest shot is a cross-fade over a few frames, not a cut.
    shot_smoothing: float = 0.25

    def validate(self) -> None:
        _check_fields(self, "guide", default_minimum=0.0, positive=("fusion_temperature", "shot_smoothing"),
                      maximum={"shot_smoothing": 1.0})


@dataclass
class Config:
    preset: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detail: DetailConfig = field(default_factory=DetailConfig)
    mouth: MouthConfig = field(default_factory=MouthConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        data = _with_legacy_defaults(data)

        def build(dc_type, values):
            kwargs = {}
            names = {f.name: f for f in dataclasses.fields(dc_type)}
            for key, value in (values or {}).items():
                if key not in names:
                    continue  # tolerate fields from newer versions
                default = getattr(dc_type(), key)
                if isinstance(default, tuple) and isinstance(value, list):
                    value = tuple(value)
                kwargs[key] = value
            return dc_type(**kwargs)

        return cls(
            preset=data.get("preset", "custom"),
            model=build(ModelConfig, data.get("model")),
            loss=build(LossConfig, data.get("loss")),
            train=build(TrainConfig, data.get("train")),
            detail=build(DetailConfig, data.get("detail")),
            mouth=build(MouthConfig, data.get("mouth")),
            guide=build(GuideConfig, data.get("guide")),  # absent before it existed: today's defaults
        )

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))

    def override(self, assignments: list[str]) -> "Config":
        """Apply ``section.field=value`` overrides (e.g. ``train.batch_size=4``)."""
        out = Config.from_dict(self.to_dict())
        for item in assignments:
            if "=" not in item or "." not in item.split("=", 1)[0]:
                raise TalkingHeadError(
                    f"bad override {item!r}: expected section.field=value, e.g. train.steps=500"
                )
            key, raw = item.split("=", 1)
            section_name, name = key.split(".", 1)
            section = getattr(out, section_name, None)
            if section is None or not dataclasses.is_dataclass(section) or not hasattr(section, name):
                raise TalkingHeadError(f"bad override {item!r}: unknown setting {key}")
            current = getattr(section, name)
            try:
                value = _parse_like(raw, current)
            except ValueError as exc:
                raise TalkingHeadError(f"bad override {item!r}: {exc}") from None
            setattr(section, name, value)
        out.validate()
        return out

    def validate(self) -> None:
        """Check every field's type and range (TalkingHeadError naming the field)."""
        self.model.validate()
        self.loss.validate()
        self.train.validate()
        self.detail.validate()
        self.mouth.validate()
        self.guide.validate()


#: Settings added after checkpoints were already written, with the value that reproduces what
#: those checkpoints were trained with (a config that lacks the key predates it).
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"embedder_extra_block": True, "discriminator_extra_block": True,
              "relu_before_pool": True, "projection_spectral_norm": False},
    "loss": {"require_vgg19": False},
    "train": {"disc_fresh_batches": False},
}


def _with_legacy_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill settings missing from an older config with the values that config was trained with."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, values in LEGACY_DEFAULTS.items():
        if isinstance(out.get(section), dict):
            for key, value in values.items():
                out[section].setdefault(key, value)
    model = out.get("model")
    if isinstance(model, dict) and "attention_sizes" in model:
        model.setdefault("decoder_attention_sizes", model["attention_sizes"])
    return out


def _parse_like(raw: str, current: Any) -> Any:
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{raw!r} is not a boolean")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, tuple):
        parts = [p for p in raw.replace("(", "").replace(")", "").split(",") if p.strip()]
        kind = type(current[0]) if current else int
        return tuple(kind(p) for p in parts)
    return raw


#: The architecture choices of the bundled ``small`` model, kept by the ``tiny`` and ``small``
#: presets; ``paper`` follows the paper (README, "Deviations from the paper").
_LEGACY_ARCHITECTURE = LEGACY_DEFAULTS["model"]


def _tiny() -> Config:
    return Config(
        preset="tiny",
        model=ModelConfig(
            image_size=64,
            base_channels=16,
            max_channels=64,
            embed_dim=64,
            gen_downsamples=2,
            gen_res_blocks=2,
            attention_sizes=(16,),
            decoder_attention_sizes=(16,),
            disc_downsamples=4,
            **_LEGACY_ARCHITECTURE,
        ),
        # The face-network term costs more than the tiny networks themselves; tests of it
        # live with the face network.
        loss=LossConfig(face=0.0, require_vgg19=False),
        train=TrainConfig(batch_size=2, shots=2, steps=200, checkpoint_every=50, num_workers=0,
                          disc_fresh_batches=False,
                          log_every=5, image_every=50, finetune_steps=20, finetune_batch_size=2),
    )


def _small() -> Config:
    return Config(
        preset="small",
        model=ModelConfig(
            image_size=128,
            # Narrow enough to meta-learn on a 2-core CPU (0.76 s/step at batch 4, K = 4),
            # 2.8× faster than 32→256 channels at the same resolution.
            base_channels=16,
            max_channels=128,
            embed_dim=128,
            gen_downsamples=3,
            gen_res_blocks=3,
            attention_sizes=(32,),
            decoder_attention_sizes=(32,),
            disc_downsamples=5,
            **_LEGACY_ARCHITECTURE,
        ),
        loss=LossConfig(require_vgg19=False),
        train=TrainConfig(batch_size=4, shots=4, steps=20_000, checkpoint_every=250, disc_fresh_batches=False,
                          log_every=10, image_every=250, finetune_steps=60, finetune_batch_size=4),
    )


def _paper() -> Config:
    return Config(preset="paper")


PRESETS = {"tiny": _tiny, "small": _small, "paper": _paper}


def get_preset(name: str) -> Config:
    """Return a fresh copy of a named preset (``tiny``, ``small`` or ``paper``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise TalkingHeadError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None

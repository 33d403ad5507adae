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
    #: Spatial sizes at which self-attention sits, in G, E and D (32 and 64 in the paper).
    attention_sizes: tuple[int, ...] = (64, 32)
    #: Downsampling blocks in E and D (image_size / 2**n is their final feature map size).
    disc_downsamples: int = 6
    #: Spectral normalisation in G, E and D, as in the paper.
    spectral_norm: bool = True
    #: Warp-guided G (not in the paper): besides the target sketch, G receives the K shot nearest
    #: in pose warped onto the target landmarks (piecewise-affine, :mod:`talkinghead.data.warp`)
    #: with its trust mask, and outputs a blend α·warped + (1 − α)·synthesised. The warp keeps
    #: the person's real pixels (sharp, identity-true); G synthesises what it cannot (mouth
    #: interior, disocclusions) and fixes its seams. False: the paper's G, every pixel synthesised.
    warp_guidance: bool = False

    def validate(self) -> None:
        if self.image_size % (2 ** self.gen_downsamples):
            raise TalkingHeadError(
                f"image_size {self.image_size} is not divisible by 2**gen_downsamples"
            )
        if self.image_size // (2 ** self.disc_downsamples) < 1:
            raise TalkingHeadError("disc_downsamples too large for image_size")


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


@dataclass
class TrainConfig:
    """Meta-learning (stage 1) and fine-tuning (stage 2) settings."""

    #: Episodes per optimiser step (per process under DDP).
    batch_size: int = 6
    #: K: frames per episode fed to the embedder (8 in the paper).
    shots: int = 8
    lr_generator: float = 5e-5  # E and G (paper)
    lr_discriminator: float = 2e-4  # D (paper)
    betas: tuple[float, float] = (0.0, 0.999)
    #: D updates per G update (2 in the paper, following SAGAN).
    disc_steps: int = 2
    steps: int = 100_000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 20
    image_every: int = 500
    #: bf16/fp16 autocast on CUDA; ignored on CPU.
    amp: bool = True
    compile: bool = False
    num_workers: int = 2
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


@dataclass
class Config:
    preset: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
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
        out.model.validate()
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
            disc_downsamples=4,
        ),
        # The face-network term costs more than the tiny networks themselves; tests of it
        # live with the face network.
        loss=LossConfig(face=0.0),
        train=TrainConfig(batch_size=2, shots=2, steps=200, checkpoint_every=50, num_workers=0,
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
            disc_downsamples=5,
        ),
        train=TrainConfig(batch_size=4, shots=4, steps=20_000, checkpoint_every=250,
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

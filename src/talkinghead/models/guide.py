"""The warp-guided generator's guide, built in one place for every user.

A warp-guided G (``model.warp_guidance``; not in the paper) reads, besides the target sketch, a
*guide*: the shots nearest the target in pose and expression, warped onto its landmarks
(:mod:`talkinghead.data.warp`) and averaged. :class:`WarpGuide` makes every choice that goes
into it, with the settings of :class:`~talkinghead.config.GuideConfig` (saved in checkpoints):

* **shot choice**: landmark distance between each shot and the target (:func:`shot_distances`);
* **penalties**: distance added to shots whose landmarks are guessed (a near-profile) or whose
  mouth is probably hidden (a hand) — :meth:`WarpGuide.shot_penalty`, computed once per avatar;
* **fusion**: the ``warp_shots`` nearest, weighted by a softmax of their distances, and inside an
  opening mouth by how far each shot is trusted there (:func:`~talkinghead.data.mouth.guide_distrust`,
  :class:`~talkinghead.config.MouthConfig`);
* **cross-fade state**: on consecutive frames, shots are ranked by a moving average of their
  distances (:meth:`WarpGuide.smoothing_bias`), so a change of shot is a fade, not a cut.

Meta-learning, fine-tuning, the renderer (PyTorch and ONNX) and evaluation all call it.
Whether G is guided is G's own flag, :attr:`Generator.warp_guidance`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from talkinghead.config import Config, GuideConfig, MouthConfig
from talkinghead.data.warp import warp_image


def normalised_landmarks(landmarks: Tensor) -> Tensor:
    """(..., 68, 2) with position and scale removed: what is left is pose and expression."""
    centred = landmarks - landmarks.mean(dim=-2, keepdim=True)
    return centred / (centred.pow(2).sum(-1).mean(-1)[..., None, None].sqrt() + 1e-9)


def shot_distances(shot_landmarks: Tensor, target_landmarks: Tensor, exclude: Tensor | None = None,
                   penalty: Tensor | None = None) -> Tensor:
    """(B, K) distance in pose and expression of each shot (B, K, 68, 2) to each target (B, 68, 2):
    mean absolute offset of the normalised landmarks, plus ``penalty`` (B, K) if given;
    ``exclude`` (B,) gets +inf (unless K = 1)."""
    distance = (normalised_landmarks(shot_landmarks) - normalised_landmarks(target_landmarks)[:, None]).abs()
    distance = torch.nan_to_num(distance.mean(dim=(-1, -2)), nan=1e9)  # (B, K)
    if penalty is not None:
        distance = distance + penalty.to(distance)
    if exclude is not None and shot_landmarks.shape[1] > 1:
        distance = distance.scatter(1, exclude[:, None].to(distance.device), float("inf"))
    return distance


def nearest_shot(shot_landmarks: Tensor, target_landmarks: Tensor, exclude: Tensor | None = None,
                 penalty: Tensor | None = None) -> Tensor:
    """(B,) index of the shot (B, K, 68, 2) closest in pose and expression to each target (B, 68, 2)."""
    return shot_distances(shot_landmarks, target_landmarks, exclude, penalty).argmin(dim=1)


def smooth_shot_distances(distance: Tensor, previous: Tensor | None = None, rate: float | None = None) -> Tensor:
    """Causal moving average of T consecutive frames' (T, K) shot distances with weight ``rate``
    on the newest (default ``guide.shot_smoothing``); ``previous`` (K,): the smoothed distances
    of the frame before the first. Returns (T, K); its last row is the ``previous`` of the next call."""
    rate = GuideConfig().shot_smoothing if rate is None else rate
    out = torch.empty_like(distance)
    state = distance[0] if previous is None else previous.to(distance)
    for t in range(len(distance)):
        state = rate * distance[t] + (1 - rate) * state
        out[t] = state
    return out


def fuse_warped_shots(shots: Tensor, shot_landmarks: Tensor, target_landmarks: Tensor, pick: Tensor,
                      weight: Tensor, symmetric_fill: bool = True, map_resolution: int | None = None,
                      mouth: MouthConfig | None = None) -> Tensor:
    """The chosen shots warped onto each target and averaged.

    Args:
        shots: (B, K, 3, S, S) in [-1, 1]. shot_landmarks: (B, K, 68, 2). target_landmarks: (B, 68, 2).
        pick: (B, M) indices of the shots to warp. weight: (B, M) their weights (rows sum to 1).
        map_resolution: see :func:`~talkinghead.data.warp.warp_image`.
        mouth: inside the target's mouth each shot's trust falls as the target opens wider than it
            (:func:`~talkinghead.data.mouth.guide_distrust`; default settings when None), and the
            fused colours there lean on the shots that open widest.
    Returns:
        (B, 4, S, S): the weighted warps (3 channels) and trust mask (1 channel).
    """
    from talkinghead.data.mouth import guide_distrust

    m = pick.shape[1]
    rows = torch.arange(shots.shape[0], device=shots.device)[:, None]  # batch size stays symbolic in ONNX
    image = shots[rows, pick.to(shots.device)].flatten(0, 1)  # (B·M, 3, S, S)
    marks = shot_landmarks[rows.to(shot_landmarks.device), pick.to(shot_landmarks.device)].flatten(0, 1)
    target = target_landmarks.to(image.device).float()[:, None].expand(-1, m, -1, -1).flatten(0, 1)
    warped, mask = warp_image(image, marks.to(image.device).float(), target, symmetric_fill=symmetric_fill,
                              map_resolution=map_resolution)
    # int(): the image size is fixed when an ONNX export traces this (the batch axis alone is dynamic).
    keep = 1 - guide_distrust(marks.to(image.device), target, int(image.shape[-1]), mouth).to(mask)  # (B·M, 1, S, S)
    guide = torch.cat([warped, mask * keep], dim=1)
    guide = guide.reshape(-1, m, *guide.shape[1:])  # (B, M, 4, S, S)
    if m == 1:
        return guide[:, 0]
    # Per pixel, each shot weighs by how far it is trusted there (1 outside mouths).
    pixel_weight = weight.to(guide.device)[:, :, None, None, None] * (keep.reshape(-1, m, 1, *keep.shape[2:]) + 1e-3)
    return (pixel_weight / pixel_weight.sum(dim=1, keepdim=True) * guide).sum(dim=1)


class WarpGuide:
    """Builds a warp-guided G's guide: ``WarpGuide.for_generator(G, config)``.

    ``config``: the ``guide`` settings; ``fuse``: how many nearest shots are warped and averaged
    (``model.warp_shots``; 1: the nearest alone, the classical warp when nothing is penalised);
    ``mouth``: the guide's distrust inside an opening mouth (the ``mouth`` settings).
    """

    def __init__(self, config: GuideConfig | None = None, fuse: int = 1, mouth: MouthConfig | None = None):
        self.config = config or GuideConfig()
        self.fuse = int(fuse)
        self.mouth = mouth or MouthConfig()

    @classmethod
    def from_config(cls, config: Config | None = None, fuse: int = 1) -> "WarpGuide":
        """The guide of a whole :class:`~talkinghead.config.Config` (its ``guide`` and ``mouth``
        sections; default: today's)."""
        config = config or Config()
        return cls(config.guide, fuse, config.mouth)

    @classmethod
    def for_generator(cls, generator, config: Config | None = None) -> "WarpGuide | None":
        """The guide ``generator`` reads (fusing its ``warp_shots``), or None when it reads none:
        G's own ``warp_guidance`` flag is the one answer to "is it guided"."""
        return cls.from_config(config, generator.warp_shots) if generator.warp_guidance else None

    # -- penalties (once per avatar) -------------------------------------------------------------
    def unreliable_shot_penalty(self, refit_error: Tensor) -> Tensor:
        """(K,) landmark refit errors → (K,) distance added to shots with guessed landmarks."""
        c = self.config
        return c.unreliable_shot_weight * (refit_error - c.unreliable_landmarks).clamp(min=0)

    def hidden_mouth_penalty(self, mouth_spread: Tensor, landmarks: Tensor) -> Tensor:
        """(K,) mouth fit spreads and (K, 68, 2) landmarks of one avatar's shots → (K,) distance
        added to the shots whose mouth is probably hidden (relative to the avatar's own shots)."""
        from talkinghead.data.landmarks import nose_position

        c = self.config
        if len(mouth_spread) < 2:
            return torch.zeros_like(mouth_spread)
        floor = torch.clamp(c.hidden_mouth_clip_factor * mouth_spread.quantile(0.25), min=c.hidden_mouth_spread)
        yaw = torch.from_numpy(nose_position(landmarks.detach().cpu().numpy()) - 0.5).to(mouth_spread)  # (K,)
        allowed = floor + c.hidden_mouth_yaw_slope * (yaw.abs() - c.hidden_mouth_yaw_free).clamp(min=0)
        penalty = c.hidden_mouth_weight * (mouth_spread - allowed).clamp(min=0)
        return torch.nan_to_num(penalty, nan=0.0)  # degenerate landmarks (no yaw): no verdict, no penalty

    def shot_penalty(self, crops: np.ndarray, landmarks: np.ndarray, detector=None) -> Tensor:
        """(K,) distance added to each of an avatar's shots (K, S, S, 3) uint8 with (K, 68, 2)
        landmarks: guessed landmarks and hidden mouths, found by refitting dlib's shape model."""
        from talkinghead.data.landmarks import (DlibLandmarkDetector, get_detector, landmark_refit_error,
                                                mouth_fit_spread)

        detector = detector if detector is not None else get_detector("dlib")
        errors = landmark_refit_error(crops, landmarks, detector)
        # The mouth check's thresholds are dlib's shape model's: it runs with dlib whoever found the landmarks.
        shape_model = detector if isinstance(detector, DlibLandmarkDetector) else get_detector("dlib")
        spread = mouth_fit_spread(crops, landmarks, shape_model)
        return (self.unreliable_shot_penalty(torch.from_numpy(errors))
                + self.hidden_mouth_penalty(torch.from_numpy(spread),
                                            torch.from_numpy(np.asarray(landmarks, np.float32))))

    # -- cross-fade state (consecutive frames) ---------------------------------------------------
    def smoothing_bias(self, shot_landmarks: Tensor, track: Tensor, previous: Tensor | None = None,
                       rate: float | None = None) -> tuple[Tensor | None, Tensor | None]:
        """For T consecutive frames' landmarks (T, 68, 2) and the (K, 68, 2) shots: the (T, K)
        bias (smoothed − raw distances) that makes the guide rank and weight shots by their
        moving average, and the (K,) state to pass as ``previous`` with the next frames.
        (None, None) with fewer than 2 shots (nothing to choose)."""
        if len(shot_landmarks) < 2:
            return None, None
        track = track.to(shot_landmarks).float()
        raw = shot_distances(shot_landmarks[None].expand(len(track), -1, -1, -1), track)  # (T, K)
        smoothed = smooth_shot_distances(raw, previous, self.config.shot_smoothing if rate is None else rate)
        return smoothed - raw, smoothed[-1]

    # -- the guide -------------------------------------------------------------------------------
    def __call__(self, shots: Tensor, shot_landmarks: Tensor, target_landmarks: Tensor,
                 exclude: Tensor | None = None, penalty: Tensor | None = None,
                 fuse: int | None = None, symmetric_fill: bool = True, map_resolution: int | None = None,
                 mouth: MouthConfig | None = None) -> Tensor:
        """The guide: the nearest shot(s) warped onto each target.

        Args:
            shots: (B, K, 3, S, S) in [-1, 1]. shot_landmarks: (B, K, 68, 2) pixels.
            target_landmarks: (B, 68, 2). exclude: (B,) a shot not to pick (fine-tuning renders a
                shot from the others), ignored when K = 1.
            penalty: (B, K) added to the shots' distances (:meth:`shot_penalty`, plus a
                :meth:`smoothing_bias` row on consecutive frames).
            fuse: overrides the guide's own ``fuse`` (meta-learning draws one-shot batches).
            symmetric_fill, map_resolution: see :func:`~talkinghead.data.warp.warp_image`.
            mouth: overrides the guide's own mouth settings (e.g. no distrust where only colours matter).
        Returns:
            (B, 4, S, S): the warped shot(s) (3 channels) and the trust mask (1 channel).
        """
        k = shots.shape[1]
        m = max(1, min(int(self.fuse if fuse is None else fuse), k - (1 if exclude is not None and k > 1 else 0)))
        distance = shot_distances(shot_landmarks, target_landmarks, exclude, penalty)  # (B, K)
        nearest, pick = torch.topk(distance, m, dim=1, largest=False)  # (B, M) ascending
        weight = torch.softmax(-(nearest - nearest[:, :1]) / self.config.fusion_temperature, dim=1).to(shots.dtype)
        return fuse_warped_shots(shots, shot_landmarks, target_landmarks, pick, weight, symmetric_fill,
                                 map_resolution, self.mouth if mouth is None else mouth)

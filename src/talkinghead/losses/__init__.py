"""Losses of Zakharov et al. (2019): content (VGG19 + face network), hinge adversarial,
feature matching and embedding match."""

from talkinghead.losses.adversarial import (
    embedding_match_loss,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
)
from talkinghead.losses.content import ContentLoss, build_content_loss
from talkinghead.losses.vgg import VGG19Features, load_vgg19

__all__ = [
    "ContentLoss",
    "build_content_loss",
    "VGG19Features",
    "load_vgg19",
    "hinge_d_loss",
    "hinge_g_loss",
    "feature_matching_loss",
    "embedding_match_loss",
]

"""Moved to :mod:`talkinghead.checkpoint` (inference and evaluation read checkpoints without
importing training code); this re-export keeps old imports working."""

from talkinghead.checkpoint import *  # noqa: F401,F403
from talkinghead.checkpoint import (  # noqa: F401
    Checkpoint,
    export_checkpoint,
    file_sha256,
    load_checkpoint,
    load_networks,
    load_optimizers,
    read_tagged_file,
    save_checkpoint,
)

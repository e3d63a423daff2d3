"""Training: losses, exact-resume checkpoints, and each network's recipe.

``losses`` and ``checkpoint`` are shared by every network; ``brain`` is the brain extractor's recipe.
"""

from wmhkit.train.brain import (
    BrainRecipe,
    augment_head,
    synth_head_cache,
    train_brain_extractor,
)
from wmhkit.train.checkpoint import load_checkpoint, save_checkpoint
from wmhkit.train.losses import deep_supervision_loss, dice_bce_loss, soft_dice_loss

__all__ = [
    "BrainRecipe", "augment_head", "deep_supervision_loss", "dice_bce_loss", "load_checkpoint",
    "save_checkpoint", "soft_dice_loss", "synth_head_cache", "train_brain_extractor",
]

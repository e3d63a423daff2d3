"""Segmentation losses: soft Dice + BCE, and deep supervision across scales."""

from __future__ import annotations

import torch
from torch.nn import functional as F

DEEP_SUPERVISION_WEIGHTS = (1.0, 0.5, 0.25)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0,
                   batch: bool = False) -> torch.Tensor:
    """1 - soft Dice; logits/target (N, 1, ...).

    batch=False: Dice of each sample, averaged over the batch. batch=True: one Dice over all voxels of
    the batch (nnU-Net's "batch Dice"): a slice holding a 3-pixel lesion or none at all then no longer
    weighs as much as one with a large lesion, which steadies 2D training on small WMH.
    """
    prob = torch.sigmoid(logits.float())
    dims = tuple(range(0 if batch else 1, prob.ndim))
    overlap = (prob * target).sum(dims)
    return (1 - (2 * overlap + eps) / (prob.sum(dims) + target.sum(dims) + eps)).mean()


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool = False) -> torch.Tensor:
    return (soft_dice_loss(logits, target, batch=batch_dice)
            + F.binary_cross_entropy_with_logits(logits.float(), target))


def deep_supervision_loss(outputs: list[torch.Tensor], target: torch.Tensor,
                          weights=DEEP_SUPERVISION_WEIGHTS) -> torch.Tensor:
    """Weighted Dice+BCE over the scales; the target is average-pooled to each coarser scale."""
    total = 0.0
    for logits, weight in zip(outputs, weights):
        scaled = target if logits.shape == target.shape else F.adaptive_avg_pool3d(target, logits.shape[2:])
        total = total + weight * dice_bce_loss(logits, scaled)
    return total / sum(weights[: len(outputs)])




def binary_logits(output: torch.Tensor) -> torch.Tensor:
    """(N, 1, ...) logits as they are; (N, 2, ...) two-class logits -> (N, 1, ...) logit of class 1
    (softmax over two classes is the sigmoid of the logit difference, so every loss here is binary)."""
    if output.shape[1] == 2:
        return output[:, 1:] - output[:, :1]
    if output.shape[1] != 1:
        raise ValueError(f"expected 1 or 2 output channels, got {output.shape[1]}")
    return output


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017): BCE down-weighted by (1 - p_t)^gamma on easy voxels."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


def tversky_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7,
                 eps: float = 1.0) -> torch.Tensor:
    """1 - Tversky index; beta > alpha weighs missed lesion voxels more than false alarms."""
    prob = torch.sigmoid(logits.float())
    dims = tuple(range(1, prob.ndim))
    tp = (prob * target).sum(dims)
    fp = (prob * (1 - target)).sum(dims)
    fn = ((1 - prob) * target).sum(dims)
    return (1 - (tp + eps) / (tp + alpha * fp + beta * fn + eps)).mean()


def bootstrap_dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, beta: float = 0.8,
                            batch_dice: bool = False) -> torch.Tensor:
    """Dice + BCE against a soft-bootstrapped target (Reed et al. 2015): ``beta`` x the given label +
    (1 - ``beta``) x the network's own (detached) probability. With noisy labels, such as annotation-
    free pseudo-labels, a confident prediction that disagrees with its label is penalised less, so
    the network is not forced to memorise the label noise. ``beta = 1`` is plain Dice + BCE."""
    soft = beta * target + (1.0 - beta) * torch.sigmoid(logits.detach().float())
    return dice_bce_loss(logits, soft, batch_dice)


# Name -> loss(logits, target, **options). register_loss() is the hook for other losses, e.g. the
# noise-robust ones that annotation-free training needs.
LOSSES = {
    "dice_bce": lambda logits, target, batch_dice=False, **_: dice_bce_loss(logits, target, batch_dice),
    "focal": lambda logits, target, focal_gamma=2.0, **_: focal_loss(logits, target, focal_gamma),
    "tversky": lambda logits, target, tversky_alpha=0.3, tversky_beta=0.7, **_: tversky_loss(
        logits, target, tversky_alpha, tversky_beta),
    "bootstrap": lambda logits, target, bootstrap_beta=0.8, batch_dice=False, **_: bootstrap_dice_bce_loss(
        logits, target, bootstrap_beta, batch_dice),
}


def register_loss(name: str, function) -> None:
    """Make ``function(logits, target, **loss_section)`` available as ``loss.name = name``."""
    LOSSES[name] = function


def segmentation_loss(outputs, target: torch.Tensor, section: dict) -> torch.Tensor:
    """The configured loss over one output or a deep-supervision list (coarser targets average-pooled).

    outputs : logits (N, 1|2, ...) or a list of them, full resolution first
    section : the config's ``[loss]`` table (name, deep_supervision weights, loss options)
    """
    if section["name"] not in LOSSES:
        raise ValueError(f"unknown loss {section['name']!r}; known: {', '.join(sorted(LOSSES))}")
    function = LOSSES[section["name"]]
    outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
    weights = section.get("deep_supervision", [1.0])[: len(outputs)] or [1.0]
    total = 0.0
    for output, weight in zip(outputs, weights):
        logits = binary_logits(output)
        scaled = target if logits.shape[2:] == target.shape[2:] else _pool_to(target, logits.shape[2:])
        total = total + weight * function(logits, scaled, **section)
    return total / sum(weights)


def _pool_to(target: torch.Tensor, shape) -> torch.Tensor:
    pool = F.adaptive_avg_pool2d if target.ndim == 4 else F.adaptive_avg_pool3d
    return pool(target, tuple(shape))

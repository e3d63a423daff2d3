"""Training: losses, checkpoints that resume exactly, and the brain extractor's recipe.

The brain extractor (FCN-1) learns from synthetic heads only (:mod:`wmhkit.synth`, skull kept or
stripped, random contrast and geometry), cached once per run as 3 mm volumes; each step draws a cached
head and augments it cheaply (left-right flip, gamma, a cut field of view as clinical 2D scans have).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from wmhkit.brain import WORKING_SPACING_MM, save_brain_model, scale_intensities
from wmhkit.models.msfcn import BrainFCN

DEEP_SUPERVISION_WEIGHTS = (1.0, 0.5, 0.25)


# ------------------------------------------------------------------------------------------- losses


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over each sample's voxels, averaged over the batch; logits/target (N, 1, ...)."""
    prob = torch.sigmoid(logits.float())
    dims = tuple(range(1, prob.ndim))
    overlap = (prob * target).sum(dims)
    return (1 - (2 * overlap + eps) / (prob.sum(dims) + target.sum(dims) + eps)).mean()


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return soft_dice_loss(logits, target) + F.binary_cross_entropy_with_logits(logits.float(), target)


def deep_supervision_loss(outputs: list[torch.Tensor], target: torch.Tensor,
                          weights=DEEP_SUPERVISION_WEIGHTS) -> torch.Tensor:
    """Weighted Dice+BCE over the scales; the target is average-pooled to each coarser scale."""
    total = 0.0
    for logits, weight in zip(outputs, weights):
        scaled = target if logits.shape == target.shape else F.adaptive_avg_pool3d(target, logits.shape[2:])
        total = total + weight * dice_bce_loss(logits, scaled)
    return total / sum(weights[: len(outputs)])


# ------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model, optimizer, step: int, config: dict, rng: np.random.Generator) -> None:
    """Everything needed to continue bit-for-bit: weights, optimiser, step, config and RNG states."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "config": config,
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_name(path.name + ".part")
    torch.save(payload, str(tmp))
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, optimizer, rng: np.random.Generator) -> tuple[int, dict]:
    payload = torch.load(str(path), map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    rng.bit_generator.state = payload["numpy_rng"]
    torch.set_rng_state(payload["torch_rng"])
    return int(payload["step"]), payload["config"]


# ---------------------------------------------------------------------------- brain extractor recipe


@dataclass
class BrainRecipe:
    """Hyper-parameters of the brain extractor's training (stored in every checkpoint)."""

    steps: int = 3000
    batch_size: int = 2
    learning_rate: float = 2e-3
    width: int = 8
    levels: int = 4
    cache_size: int = 240
    shape: tuple[int, int, int] = (64, 72, 64)  # 192 x 216 x 192 mm at 3 mm
    skull_share: float = 0.85
    seed: int = 0
    checkpoint_every: int = 250


def synth_head_cache(recipe: BrainRecipe, folder: Path, progress: bool = True) -> list[Path]:
    """Generate (or reuse) the cached synthetic heads of a run: one .npz per head."""
    from wmhkit.synth import generate_sample

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in tqdm(range(recipe.cache_size), desc="synthetic heads", disable=not progress or None):
        path = folder / f"head_{index:04d}.npz"
        if not path.exists():
            skull = bool(np.random.default_rng([recipe.seed, index, 7]).random() < recipe.skull_share)
            sample = generate_sample(
                recipe.seed, "train", skull, index=index, work_spacing_mm=WORKING_SPACING_MM,
                train_shape=recipe.shape,
            )
            image = sample.flair if np.random.default_rng([recipe.seed, index, 8]).random() < 0.5 else sample.t1
            tmp = path.with_name(path.stem + ".part.npz")
            np.savez_compressed(tmp, image=image.astype(np.float16), mask=sample.brainmask.astype(np.uint8))
            os.replace(tmp, path)
        paths.append(path)
    return paths


def augment_head(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """Cheap per-step augmentation of a cached head: flip, gamma, a cut field of view, scaling."""
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    image = np.asarray(image, dtype=np.float32)
    if rng.random() < 0.5:
        # Clinical 2D scans often cover only part of the head from top to bottom.
        z = image.shape[2]
        low = int(rng.integers(0, z // 3))
        high = int(rng.integers(2 * z // 3, z + 1))
        image = image.copy()
        image[:, :, :low] = 0
        image[:, :, high:] = 0
    scaled = scale_intensities(image)
    scaled = np.power(scaled / 1.5, rng.uniform(0.7, 1.4)) * 1.5
    return np.ascontiguousarray(scaled, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.float32)


def train_brain_extractor(out: Path, recipe: BrainRecipe, *, resume: bool = False,
                          stop_at: int | None = None, progress: bool = True) -> Path:
    """Train FCN-1 on synthetic heads; returns the path of the exported model (``out/brain_fcn1.pt``).

    ``stop_at`` ends this call after that step (checkpointed), so that a long run can go in chunks:
    calling again with ``resume=True`` continues exactly where it stopped.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    heads = synth_head_cache(recipe, out / "cache", progress)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    model = BrainFCN(width=recipe.width, levels=recipe.levels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=1e-4)
    step = 0
    if resume and checkpoint.exists():
        step, _ = load_checkpoint(checkpoint, model, optimizer, rng)
    schedule = lambda s: 0.5 * (1 + np.cos(np.pi * min(s, recipe.steps) / recipe.steps))  # noqa: E731
    log = open(out / "log.csv", "a", encoding="utf-8")
    if step == 0:
        log.write("step,loss,lr,seconds\n")
    model.train()
    last = recipe.steps if stop_at is None else min(stop_at, recipe.steps)
    bar = tqdm(total=recipe.steps, initial=step, desc="train brain", disable=not progress or None)
    while step < last:
        start = time.perf_counter()
        batch = [np.load(heads[i]) for i in rng.integers(0, len(heads), recipe.batch_size)]
        pairs = [augment_head(b["image"], b["mask"], rng) for b in batch]
        images = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None])
        masks = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None])
        lr = recipe.learning_rate * schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model(images)
        loss = deep_supervision_loss([o.float() for o in outputs], masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        step += 1
        log.write(f"{step},{loss.item():.5f},{lr:.6g},{time.perf_counter() - start:.3f}\n")
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % recipe.checkpoint_every == 0 or step == last:
            log.flush()
            save_checkpoint(checkpoint, model, optimizer, step, asdict(recipe), rng)
    bar.close()
    log.close()
    exported = out / "brain_fcn1.pt"
    save_brain_model(model, exported, {"recipe": asdict(recipe), "steps": step})
    (out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    return exported

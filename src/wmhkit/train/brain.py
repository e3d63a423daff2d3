"""The brain extractor's (FCN-1) training recipe.

FCN-1 learns from synthetic heads only (:mod:`wmhkit.synth`, skull kept or stripped, random contrast
and geometry), cached once per run as 3 mm volumes; each step draws a cached head and augments it
cheaply (left-right flip, gamma, a cut field of view as clinical 2D scans have).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wmhkit.brain import (
    WORKING_SPACING_MM,
    load_brain_model_file,
    save_brain_model,
    scale_intensities,
)
from wmhkit.infer import native_bf16
from wmhkit.models.msfcn import BrainFCN
from wmhkit.train.checkpoint import load_checkpoint, save_checkpoint
from wmhkit.train.losses import deep_supervision_loss

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
    init: str | None = None  # a brain model file to start from (fine-tuning) instead of random weights


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
            # Stored scaled (float16 tops out at 65504; random contrasts reach 1e5), which the per-step
            # percentile scaling undoes anyway.
            image = scale_intensities(image)
            tmp = path.with_name(path.stem + ".part.npz")
            np.savez_compressed(tmp, image=image.astype(np.float16), mask=sample.brainmask.astype(np.uint8))
            os.replace(tmp, path)
        paths.append(path)
    return paths


def augment_head(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """Cheap per-step augmentation of a cached head: flip, a cut field of view, gamma.

    The field-of-view cut blanks image and mask together, so that the network learns to follow the brain
    up to the edge of a scan that stops mid-brain (clinical 2D scans often miss the vertex or the
    cerebellum), as inference sees it: zeros beyond the field of view.
    """
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    image = np.array(image, dtype=np.float32)
    mask = np.array(mask, dtype=np.float32)
    if rng.random() < 0.5:
        z = image.shape[2]
        low = int(rng.integers(0, z // 3))
        high = int(rng.integers(2 * z // 3, z + 1))
        for volume in (image, mask):
            volume[:, :, :low] = 0
            volume[:, :, high:] = 0
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
    elif recipe.init:
        model.load_state_dict(load_brain_model_file(recipe.init).state_dict())
    schedule = lambda s: 0.5 * (1 + np.cos(np.pi * min(s, recipe.steps) / recipe.steps))
    log = open(out / "log.csv", "a", encoding="utf-8")
    if step == 0:
        log.write("step,loss,lr,seconds\n")
    model.train()
    last = recipe.steps if stop_at is None else min(stop_at, recipe.steps)
    bar = tqdm(total=recipe.steps, initial=step, desc="train brain", disable=not progress or None)
    bf16 = native_bf16("cpu")  # emulated bf16 is slower than float32
    while step < last:
        start = time.perf_counter()
        batch = [np.load(heads[i]) for i in rng.integers(0, len(heads), recipe.batch_size)]
        pairs = [augment_head(b["image"], b["mask"], rng) for b in batch]
        images = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None])
        masks = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None])
        lr = recipe.learning_rate * schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
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

"""Checkpoints that resume bit-for-bit: weights, optimiser, step, config and RNG states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wmhkit.io import save_torch


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
    save_torch(payload, path)


def load_checkpoint(path: Path, model, optimizer, rng: np.random.Generator) -> tuple[int, dict]:
    payload = torch.load(str(path), map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    rng.bit_generator.state = payload["numpy_rng"]
    torch.set_rng_state(payload["torch_rng"])
    return int(payload["step"]), payload["config"]



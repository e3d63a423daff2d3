"""Training configs: TOML files under ``configs/``, defaults for every key, and command-line overrides.

A config is a plain nested dict with the sections of :data:`DEFAULTS`; a file only needs the keys it
changes. Overrides are ``section.key=value`` strings whose values are parsed as TOML (``optim.lr=1e-3``,
``data.mix={synthetic=0.5, real=0.5}``, ``model.variant="v3"``); a bare word is taken as a string.
"""

from __future__ import annotations

import copy
import tomllib
from contextlib import nullcontext
from pathlib import Path

import torch

DEFAULTS: dict[str, dict] = {
    # The rest of the section goes to wmhkit.models.build_model, except freeze_encoder_steps: networks with
    # a separate .encoder (unet3d_ds) keep it fixed for that many first steps (after --init ENCODER).
    "model": {"name": "unet2d", "freeze_encoder_steps": 0},
    "data": {
        "inputs": "flair_t1",  # wmhkit.train.inputs.build_inputs kind
        "size": 192,  # 2D: slices resized to size x size after the brain field-of-view crop
        "patch": [96, 96, 96],  # 3D: patch shape (working-grid voxels)
        "spacing_mm": 1.0,  # 3D: isotropic working grid
        "mix": {"synthetic": 1.0},  # source -> share of training items
        "synthetic_cases": 60,
        "synthetic_profile": "mixed",
        "synthetic_seed": 1000,
        # Share of synthetic cases with fully random tissue contrasts (None: the generator's default).
        "synthetic_random_contrast": None,
        # What synthetic labels mark: "wmh", or "wm" (white matter: a proxy task to pretrain a base).
        "target": "wmh",
        "real": [],  # labeled folders (challenge layout, BIDS, open_ms labeled_mni)
        "lesion_fraction": 0.6,
        # Checkpoint selection set ("synthetic:N" = N held-out synthetic cases, or folders) and a test
        # set that is scored at every validation but never used to choose a checkpoint.
        "validation": ["synthetic:3"],
        "test": [],
    },
    "augment": {
        "affine": 0.5, "elastic": 0.0, "bias": 0.3, "noise": 0.3, "gamma": 0.3, "blur": 0.2,
        "motion": 0.0, "ghosting": 0.0, "anisotropy": 0.0, "flip": 0.5,
        "rot90_y": 0.0,  # 3D: 90/180/270 degree turns about y (Zeng & Zheng), wmhkit.train.rotate
    },
    "loss": {
        "name": "dice_bce",  # dice_bce | focal | tversky | bootstrap (noise-robust) | register_loss names
        "deep_supervision": [1.0, 0.5, 0.25],
        "batch_dice": False,  # dice_bce: one Dice over the whole batch instead of the mean of per-sample Dice
        "focal_gamma": 2.0,
        "tversky_alpha": 0.3,
        "tversky_beta": 0.7,
        "bootstrap_beta": 0.8,  # bootstrap: weight of the given label against the network's own belief
    },
    "optim": {
        "name": "adamw",  # adam | adamw | sgd
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "momentum": 0.99,  # sgd only
        "schedule": "cosine",  # constant | cosine | poly
        "warmup_steps": 0,
        "steps": 2000,
        "batch_size": 8,
        "clip": 5.0,
        # Share of the last steps whose weights are averaged into model_averaged.pt (0: none); the
        # budget's step count decides where that tail begins.
        "average_tail": 0.0,
        "precision": "auto",  # auto (bf16 where the device computes it natively, else fp32) | bf16 | fp32
    },
    "run": {
        "seed": 0,
        "device": "cpu",
        "threads": 0,  # 0: one per core (divided among DDP processes)
        "workers": 0,  # DataLoader worker processes
        "checkpoint_every": 250,
        "validate_every": 250,
        "flip_tta": False,
        # Minutes the training loop (steps, loading, checkpoints, evaluations) may take, 0: no limit.
        # wmhkit.train.budget sets optim.steps from the measured pace, so the schedule ends at the last step.
        "time_budget_minutes": 0,
    },
}


class ConfigError(ValueError):
    """A config file or override that cannot be used (message names the key)."""


PRECISIONS = ("auto", "bf16", "fp32")


def merge(base: dict, update: dict, where: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base``; unknown sections are refused, unknown keys kept
    only in sections that pass through to a builder (``model``, ``augment``)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("mix",):
            out[key] = merge(out[key], value, path + ".")
        else:
            if where == "" and key not in DEFAULTS:
                raise ConfigError(f"unknown config section [{key}]; known: {', '.join(DEFAULTS)}")
            if where and where.split(".")[0] not in ("model", "augment") and key not in out:
                raise ConfigError(f"unknown config key {path}")
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """``"optim.lr=1e-3"`` -> ``{"optim": {"lr": 0.001}}`` (value parsed as TOML, else a string)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_toml(path: str | Path) -> dict:
    """The tables of a TOML file; ConfigError naming the file when it is missing or not valid TOML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> dict:
    """Defaults <- the TOML file <- overrides, in that order."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        config = merge(config, read_toml(path))
    for text in overrides or []:
        config = merge(config, parse_override(text))
    return config


def autocast_for(precision: str, device: torch.device | str):
    """The forward pass's autocast context for ``[optim] precision`` on ``device``.

    'auto' takes bf16 only where the device computes it natively (:func:`wmhkit.infer.native_bf16`):
    elsewhere emulated bf16 is about ten times slower than float32.
    """
    from wmhkit.infer import native_bf16

    if precision not in PRECISIONS:
        raise ConfigError(f"[optim] precision = {precision!r}; expected one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


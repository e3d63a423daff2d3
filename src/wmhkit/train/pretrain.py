"""Encoder pretraining by brain-age regression (Wu et al. 2022), on synthetic brains of varied atrophy.

Wu et al. pretrain the encoder of their deeply supervised 3D U-Net on brain-age regression from
structural MRI and fine-tune the whole network on WMH. Here the "age" is the synthetic generator's
atrophy parameter (``SynthSample.meta["age"]``, uniform in [0, 1]: ventricles, sulci and cortex change
with it), so no real ages are needed:

1. ``pretrain.cases`` synthetic brains (plus ``pretrain.validation_cases`` held out, another seed) are
   generated once at ``pretrain.spacing_mm`` (3 mm by default: cheap on a CPU) with the generator's fast
   "train" profile and cached in the run folder, cropped to the brain;
2. an :class:`AgeRegressor`: the segmentation network's encoder (:class:`UNet3DEncoder`, built from the
   config's ``[model]`` section by :func:`wmhkit.models.unet3d_ds.encoder_options`, so tensor for tensor
   the same as ``UNet3DDS.encoder``), global average pooling of the bottleneck and a linear head, is
   trained with MSE (or L1) on the standardised age, from the whole brain (``input = "whole"``,
   randomly shifted and left-right flipped) or random patches (``input = "patch"``);
3. ``encoder.pt`` holds the encoder's state dict and config; ``wmhkit train --init encoder.pt`` loads it
   into ``UNet3DDS.encoder`` (:func:`wmhkit.train.engine.load_encoder_weights`).

Run folder: ``last.pt`` (resumable: weights, optimiser, step, config, RNG), ``log.csv`` (step, loss, lr,
seconds), ``metrics.csv`` (validation MAE in age units and Pearson r), ``encoder.pt``, ``config.json``.

Config: a training config (e.g. ``configs/unet3d_ds_cpu.toml``: ``[model]``, ``data.inputs``, ``run``)
with an optional ``[pretrain]`` table (:data:`PRETRAIN_DEFAULTS`) -- or a small file with
``segmentation_config = "unet3d_ds_cpu.toml"`` (relative to itself) and the ``[pretrain]`` table, see
``configs/pretrain_age_cpu.toml``. ``wmhkit train`` does not accept a ``[pretrain]`` table, hence the
second form.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from wmhkit.io import save_torch
from wmhkit.models.unet3d_ds import UNet3DEncoder, encoder_options
from wmhkit.preprocess import mask_bounding_box
from wmhkit.train.config import DEFAULTS, ConfigError, autocast_for, merge, parse_override
from wmhkit.train.data import crop_window

PRETRAIN_DEFAULTS: dict = {
    "task": "age",
    "cases": 48,  # synthetic training brains (generated once, cached in the run folder)
    "validation_cases": 8,  # held out (another seed): validation MAE / correlation
    "seed": 5000,
    # Generator grid spacing (mm) and size (voxels, 192 x 228 x 192 mm: any brain). 3 mm keeps a CPU step
    # at ~1.5 s (base 16, batch 4); the segmentation network works at 1 mm, so the encoder sees coarser
    # anatomy here: 2 mm / [96, 112, 96] / shape [72, 88, 80] is closer and ~3x slower.
    "spacing_mm": 3.0,
    "grid": [64, 76, 64],
    "input": "whole",  # "whole": the brain box padded/cropped to `shape`; "patch": a random `shape` patch
    "shape": [48, 64, 56],  # network input (voxels), divisible by 2**(levels - 1)
    "contrast": "random",  # 1-channel encoders: FLAIR or T1 at random ("random") or FLAIR only ("inputs")
    "loss": "mse",  # mse | l1, on the standardised age
    "steps": 400,
    "batch_size": 4,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "warmup_steps": 0,
    "schedule": "cosine",
    "checkpoint_every": 50,
    "validate_every": 100,
}
TASKS = ("age",)
# The generator's age is uniform in [0, 1]: standardised with its mean and standard deviation.
AGE_MEAN, AGE_STD = 0.5, 1.0 / np.sqrt(12.0)
ENCODER_FILE = "encoder.pt"


# ------------------------------------------------------------------------------------------ config


def load_pretrain_config(path: str | Path | None, overrides: list[str] | None = None) -> dict:
    """A training config plus its ``pretrain`` section: defaults <- file(s) <- overrides.

    ``pretrain.key=value`` overrides go to the ``pretrain`` section, any other to the training config.
    Raises :class:`ConfigError` for unknown keys or a network without a transferable encoder.
    """
    from wmhkit.train.config import load_config, read_toml

    raw: dict = {}
    if path is not None:
        path = Path(path)
        raw = read_toml(path)
    pretrain = raw.pop("pretrain", {})
    base_name = raw.pop("segmentation_config", None)
    config = load_config(path.parent / base_name) if base_name else copy.deepcopy(DEFAULTS)
    config = merge(config, raw)
    section = _merge_pretrain(dict(PRETRAIN_DEFAULTS), pretrain)
    for text in overrides or []:
        update = parse_override(text)
        if "pretrain" in update:
            section = _merge_pretrain(section, update["pretrain"])
        else:
            config = merge(config, update)
    if config["model"]["name"] != "unet3d_ds":
        raise ConfigError(f"model.name is {config['model']['name']!r}: encoder pretraining is for unet3d_ds")
    if section["task"] not in TASKS:
        raise ConfigError(f"pretrain.task must be one of {TASKS}, not {section['task']!r}")
    config["pretrain"] = section
    return config


def _merge_pretrain(section: dict, update: dict) -> dict:
    unknown = sorted(set(update) - set(PRETRAIN_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join('pretrain.' + k for k in unknown)}")
    return {**section, **update}


def pretrain_encoder_options(config: dict) -> dict:
    """:class:`UNet3DEncoder` kwargs of a config: exactly those of its ``UNet3DDS.encoder``."""
    from wmhkit.train.inputs import input_channels

    return encoder_options(config["model"], input_channels(config["data"]["inputs"]))


# ------------------------------------------------------------------------------------------- model


class AgeRegressor(nn.Module):
    """The segmentation network's encoder, global average pooling and a linear head: one number per input.

    Parameters
    ----------
    encoder_config : :class:`UNet3DEncoder` kwargs (:func:`pretrain_encoder_options`)

    ``forward``: (N, C, X, Y, Z), sizes divisible by ``2**(levels - 1)`` -> (N,) standardised age.
    """

    def __init__(self, encoder_config: dict):
        super().__init__()
        self.config = {"encoder_config": dict(encoder_config)}
        self.encoder = UNet3DEncoder(**encoder_config)
        self.head = nn.Linear(self.encoder.widths[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bottleneck = self.encoder(x)[-1]
        return self.head(bottleneck.float().mean(dim=(2, 3, 4)))[:, 0]


# -------------------------------------------------------------------------------------------- data


class AgeCases:
    """Synthetic brains for age regression, cropped to the brain box, in memory as float16.

    ``channels[i]``: (K, X, Y, Z) z-scored images (K = input channels; with ``contrast = "random"`` and a
    1-channel network, FLAIR and T1 stacked so that an item can pick either); ``ages[i]``: the generator's
    age in [0, 1]; ``background[i]``: (K,) value outside the brain.
    """

    def __init__(self, n: int, seed: int, kind: str, section: dict, cache: Path, progress: bool = False):
        from tqdm import tqdm

        from wmhkit.train.inputs import background_values, build_inputs, input_channels

        cache.mkdir(parents=True, exist_ok=True)
        self.both = section["contrast"] == "random" and input_channels(kind) == 1
        self.channels, self.ages, self.background = [], [], []
        grid = tuple(int(g) for g in section["grid"])
        for index in tqdm(range(n), desc="age cases", disable=not progress or None):
            raw = _synthetic_brain(cache, seed, index, float(section["spacing_mm"]), grid)
            flair, t1, brain = raw["flair"].astype(np.float32), raw["t1"].astype(np.float32), raw["brain"]
            if self.both:
                channels = np.concatenate([build_inputs("flair", flair, None, brain),
                                           build_inputs("flair", t1, None, brain)])
            else:
                channels = build_inputs(kind, flair, t1, brain)
            box = mask_bounding_box(brain) or tuple(slice(None) for _ in brain.shape)
            self.background.append(background_values(channels, brain))
            self.channels.append(channels[(slice(None), *box)].astype(np.float16))
            self.ages.append(float(raw["age"]))

    def __len__(self) -> int:
        return len(self.ages)

    def item(self, rng: np.random.Generator, index: int, section: dict, train: bool) -> np.ndarray:
        """Network input (C, *shape) of case ``index``: random shift/flip/contrast when ``train``."""
        channels = self.channels[index]
        background = self.background[index]
        if self.both:
            pick = int(rng.integers(2)) if train else 0
            channels, background = channels[pick:pick + 1], background[pick:pick + 1]
        shape = np.array(section["shape"], int)
        size = np.array(channels.shape[1:])
        if section["input"] == "patch" and train:
            start = rng.integers(0, np.maximum(size - shape, 0) + 1)
        else:
            # Whole brain, centred; training moves it by up to 1/16 of the input size each way.
            start = (size - shape) // 2
            if train:
                reach = np.maximum(shape // 16, 1)
                start = start + rng.integers(-reach, reach + 1)
        out = crop_window(channels.astype(np.float32), start, shape, background)
        if train and rng.random() < 0.5:
            out = out[:, ::-1]  # left-right: the age does not care
        return np.ascontiguousarray(out)


def _synthetic_brain(cache: Path, seed: int, index: int, spacing_mm: float, grid: tuple) -> dict:
    """Canonical FLAIR, T1 (float16, scaled by their 99th brain percentile), brain mask and age; cached."""
    path = cache / f"age_s{seed}_w{spacing_mm:g}_t{'x'.join(map(str, grid))}_{index:05d}.npz"
    if not path.exists():
        from wmhkit.preprocess import to_canonical
        from wmhkit.synth import generate_sample

        sample = generate_sample(seed, "train", False, index=index, work_spacing_mm=spacing_mm, train_shape=grid)
        arrays = {}
        for name, data in (("flair", sample.flair), ("t1", sample.t1), ("brain", sample.brainmask)):
            arrays[name] = to_canonical(data, sample.affine)[0]
        brain = arrays["brain"] > 0
        for name in ("flair", "t1"):
            top = float(np.percentile(arrays[name][brain], 99.0)) if brain.any() else 1.0
            arrays[name] = (arrays[name] / max(top, 1e-6)).astype(np.float16)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part.npz")
        np.savez_compressed(tmp, flair=arrays["flair"], t1=arrays["t1"], brain=brain.astype(np.uint8),
                            age=np.float64(sample.meta["age"]))
        os.replace(tmp, path)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def batch_at(cases: AgeCases, step: int, seed: int, section: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch of ``step``: a pure function of (seed, step), so that a resumed run sees the same."""
    rng = np.random.default_rng([int(seed), int(step), 1])
    size = int(section["batch_size"])
    # Distinct brains in a batch where possible: BatchNorm's batch statistics would otherwise blur the
    # differences between brains that the head has to read.
    indices = (rng.permutation(len(cases))[:size] if size <= len(cases)
               else rng.integers(len(cases), size=size))
    images = np.stack([cases.item(rng, int(i), section, train=True) for i in indices])
    ages = np.array([cases.ages[int(i)] for i in indices], np.float32)
    return torch.from_numpy(images), torch.from_numpy((ages - AGE_MEAN) / AGE_STD)


# ------------------------------------------------------------------------------------------ training


def pretrain(config: dict, out: str | Path, *, resume: bool = False, stop_at: int | None = None,
             progress: bool = True) -> Path:
    """Pretrain the configured encoder on age regression into run folder ``out``; returns ``encoder.pt``.

    ``config``: from :func:`load_pretrain_config`. ``stop_at`` ends after that step (checkpointed);
    ``resume`` continues ``out/last.pt`` with the run's own stored config.
    """
    from tqdm import tqdm

    from wmhkit.train.engine import learning_rate

    out = Path(out)
    last_path = out / "last.pt"
    saved = None
    if resume and last_path.exists():
        saved = torch.load(str(last_path), map_location="cpu", weights_only=False)
        config = saved["config"]
    elif last_path.exists():
        raise FileExistsError(f"{out}: holds a run already; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    section, run = config["pretrain"], config["run"]
    device = torch.device(run["device"])
    torch.set_num_threads(int(run.get("threads") or 0) or max(1, os.cpu_count() or 1))
    torch.manual_seed(run["seed"])
    kind = config["data"]["inputs"]
    train_cases = AgeCases(section["cases"], section["seed"], kind, section, out / "cache", progress)
    held_out = AgeCases(section["validation_cases"], section["seed"] + 7919, kind, section, out / "cache", progress)
    model = AgeRegressor(pretrain_encoder_options(config)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=section["lr"], weight_decay=section["weight_decay"])
    step = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        step = saved["step"]
    (out / "config.json").write_text(json.dumps(config, indent=2))
    schedule = {"lr": section["lr"], "steps": section["steps"], "warmup_steps": section["warmup_steps"],
                "schedule": section["schedule"]}
    last = section["steps"] if stop_at is None else min(stop_at, section["steps"])
    autocast = autocast_for(config["optim"]["precision"], device)
    loss_fn = {"mse": F.mse_loss, "l1": F.l1_loss}[section["loss"]]
    log = _open_log(out / "log.csv", "step,loss,lr,seconds")
    bar = tqdm(total=section["steps"], initial=step, desc="pretrain age", disable=not progress or None)
    model.train()
    try:
        while step < last:
            start = time.perf_counter()
            images, targets = batch_at(train_cases, step, section["seed"], section)
            lr = learning_rate(step, schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                predicted = model(images.to(device))
            loss = loss_fn(predicted.float(), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config["optim"]["clip"] or 1e9)
            optimizer.step()
            step += 1
            log.write(f"{step},{loss.item():.5f},{lr:.6g},{time.perf_counter() - start:.3f}\n")
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % section["validate_every"] == 0 or step == last:
                scores = validate(model, held_out, section, device, autocast)
                _append_metrics(out / "metrics.csv", step, scores)
                bar.write(f"step {step}: validation MAE {scores['mae']:.3f} (age units 0-1), r {scores['r']:.2f}")
            if step % section["checkpoint_every"] == 0 or step == last:
                log.flush()
                save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                            "config": config, "torch_rng": torch.get_rng_state()}, last_path)
    finally:
        bar.close()
        log.close()
    encoder_path = out / ENCODER_FILE
    if step >= section["steps"]:
        save_encoder(encoder_path, model, config, {"step": step, "task": section["task"]})
    return encoder_path


def validate(model: AgeRegressor, cases: AgeCases, section: dict, device, autocast) -> dict:
    """Mean absolute error (age units, 0-1) and Pearson r of the held-out whole-brain predictions."""
    if not len(cases):
        return {"mae": float("nan"), "r": float("nan")}
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(0)
    predictions = []
    with torch.inference_mode(), autocast:
        for index in range(len(cases)):
            x = torch.from_numpy(cases.item(rng, index, section, train=False)[None]).to(device)
            predictions.append(float(model(x).float()[0]) * AGE_STD + AGE_MEAN)
    model.train(was_training)
    truth, predicted = np.array(cases.ages), np.array(predictions)
    r = float(np.corrcoef(truth, predicted)[0, 1]) if len(truth) > 1 and predicted.std() > 0 else float("nan")
    return {"mae": float(np.abs(truth - predicted).mean()), "r": r}


def save_encoder(path: str | Path, model: AgeRegressor, config: dict, info: dict) -> None:
    """``encoder.pt``: the encoder's state dict and config, which ``wmhkit train --init`` recognises."""
    payload = {
        "kind": "encoder",
        "task": config["pretrain"]["task"],
        "network": config["model"]["name"],
        "encoder_config": model.encoder.config,
        "model": {k: v for k, v in config["model"].items()},
        "data": {"inputs": config["data"]["inputs"]},
        "encoder_state_dict": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
        "info": info,
    }
    save_torch(payload, path)


def _open_log(path: Path, header: str):
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115
    if handle.tell() == 0:
        handle.write(header + "\n")
    return handle


def _append_metrics(path: Path, step: int, scores: dict) -> None:
    new = not path.exists()
    with open(path, "a", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "validation_mae", "validation_r"])
        writer.writerow([step, f"{scores['mae']:.4f}", f"{scores['r']:.4f}"])

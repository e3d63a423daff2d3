"""The training loop every WMH network shares: data, steps, validation, checkpoints, DDP.

``train(config, out)`` runs one recipe (a config from :mod:`wmhkit.train.config`) into a run folder:

* ``last.pt``: everything needed to continue bit-for-bit (weights, optimiser, step, config, data
  description, git hash, RNG state). Training items are pure functions of (seed, item index), so the
  step number alone fixes which data comes next.
* ``best.pt`` and ``model.pt``: exported models (network name, architecture config, input recipe,
  weights) — the best by validation Dice, and the final one.
* ``model_averaged.pt`` with ``optim.average_tail = f`` > 0: the mean of the weights (and BatchNorm
  statistics) after every step of the run's last share ``f`` of steps (tail, or Polyak, averaging).
* ``metrics.csv`` (a row per validation), ``log.csv`` (a row per step), ``curves.png``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains on its own share of every global batch and
DistributedDataParallel averages the gradients (gloo on CPU, NCCL on CUDA); only rank 0 validates and
writes files.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from tqdm import tqdm

from wmhkit.infer import channels_last
from wmhkit.io import save_torch
from wmhkit.models import build_model, network_dims, rebuild_model
from wmhkit.train.budget import StepBudget
from wmhkit.train.config import autocast_for
from wmhkit.train.losses import segmentation_loss

METRIC_NAMES = ("dsc", "h95", "avd", "recall", "f1")


# ----------------------------------------------------------------------------------------- runtime


class Runtime:
    """Process group and device of this process (one process without torchrun)."""

    def __init__(self, run: dict):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        wants_cuda = str(run["device"]).startswith("cuda")
        if wants_cuda and not torch.cuda.is_available():
            raise RuntimeError("run.device is cuda but no CUDA device is available")
        self.device = torch.device(f"cuda:{local}" if wants_cuda and self.world > 1 else run["device"])
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if wants_cuda else "gloo")
        threads = int(run.get("threads") or 0) or max(1, (os.cpu_count() or 1) // self.world)
        torch.set_num_threads(threads)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# -------------------------------------------------------------------------------------------- data


def load_sources(config: dict, cache: Path, progress: bool) -> tuple[dict, list, list]:
    """(training cases by source, validation cases, test cases) as wmhkit.train.data.Case lists."""
    from wmhkit.train.data import real_cases, synthetic_cases

    data = config["data"]
    kind = data["inputs"]
    real_entries = [e for e in data["validation"] + data["test"] if not str(e).startswith("synthetic:")]
    if data["target"] != "wmh" and (data["mix"].get("real", 0) > 0 or real_entries):
        raise ValueError(f"data.target = {data['target']!r} is a synthetic proxy task: real cases carry WMH "
                         "labels only (use synthetic validation and no real test set)")
    sources: dict[str, list] = {}
    if data["mix"].get("synthetic", 0) > 0:
        sources["synthetic"] = synthetic_cases(
            data["synthetic_cases"], data["synthetic_seed"], kind, cache / "synthetic",
            profile=data["synthetic_profile"], progress=progress,
            random_contrast_share=data["synthetic_random_contrast"], target=data["target"])
    if data["mix"].get("real", 0) > 0:
        if not data["real"]:
            raise ValueError("data.mix gives real cases a share but data.real lists no folder")
        sources["real"] = [case for folder in data["real"] for case in real_cases(folder, kind)]
    unknown = set(data["mix"]) - {"synthetic", "real"}
    if unknown:
        raise ValueError(f"data.mix: unknown source(s) {sorted(unknown)}; use synthetic and/or real")

    def held_out(entries: list[str], name: str) -> list:
        cases = []
        for entry in entries:
            if str(entry).startswith("synthetic:"):
                # A different seed from the training cases: never seen in training.
                cases += synthetic_cases(int(str(entry).split(":", 1)[1]), data["synthetic_seed"] + 7919, kind,
                                         cache / f"synthetic_{name}", profile=data["synthetic_profile"],
                                         progress=progress,
                                         random_contrast_share=data["synthetic_random_contrast"],
                                         target=data["target"])
            else:
                cases += real_cases(entry, kind)
        return cases

    return sources, held_out(data["validation"], "validation"), held_out(data["test"], "test")


def training_dataset(config: dict, sources: dict, length: int):
    from wmhkit.train.augment import build_augmentation
    from wmhkit.train.data import PatchDataset, SliceDataset

    data, dims = config["data"], network_dims(config["model"]["name"])
    spec = dict(config["augment"])
    # The two-stage FCN paper's right-angle rotations about y are not a TorchIO transform: wrapped around.
    rot90 = float(spec.pop("rot90_y", 0.0))
    augment = build_augmentation(spec, dims)
    if rot90 > 0 and dims == 3:
        from wmhkit.train.rotate import RandomRot90Y

        augment = RandomRot90Y(rot90, augment)
    mix = {k: v for k, v in data["mix"].items() if v > 0}
    if dims == 2:
        return SliceDataset(sources, mix, data["size"], length, config["run"]["seed"],
                            lesion_fraction=data["lesion_fraction"], augment=augment)
    return PatchDataset(sources, mix, tuple(data["patch"]), length, config["run"]["seed"],
                        lesion_fraction=data["lesion_fraction"], augment=augment)


class StepBatches(torch.utils.data.Sampler):
    """Item indices of this rank's share of each global batch, from ``first_step`` on."""

    def __init__(self, first_step: int, steps: int, batch_size: int, rank: int, world: int):
        self.first_step, self.steps, self.batch_size, self.rank, self.world = first_step, steps, batch_size, rank, world

    def __iter__(self):
        for step in range(self.first_step, self.steps):
            start = (step * self.world + self.rank) * self.batch_size
            yield list(range(start, start + self.batch_size))

    def __len__(self) -> int:
        return max(0, self.steps - self.first_step)


# ------------------------------------------------------------------------------------------- model


# [model] keys the engine itself uses; every other key goes to the network's builder.
ENGINE_MODEL_KEYS = ("name", "freeze_encoder_steps")


def make_model(config: dict, in_channels: int) -> torch.nn.Module:
    options = {k: v for k, v in config["model"].items() if k not in ENGINE_MODEL_KEYS}
    options.setdefault("in_channels", in_channels)
    return build_model(config["model"]["name"], **options)


def load_initial_weights(model: torch.nn.Module, path: Path) -> str:
    """Start from a checkpoint, an exported model, an encoder-only file (``wmhkit pretrain``, or any state
    dict whose keys all start with ``encoder.``) or a torchvision-style VGG-16 state dict."""
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    encoder_state = _encoder_only_state(payload)
    if encoder_state is not None:
        return f"encoder: {load_encoder_weights(model, encoder_state, path)} tensors"
    state = payload.get("state_dict", payload.get("model", payload)) if isinstance(payload, dict) else payload
    if any(k.startswith("features.") for k in state):
        from wmhkit.models.sidefcn import load_vgg16_features

        return f"VGG-16 features: {len(load_vgg16_features(model, state))} tensors"
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return f"all {len(state)} tensors"


def _encoder_only_state(payload) -> dict | None:
    """The encoder state dict of an encoder-only file, else None.

    ``wmhkit pretrain`` writes ``{"kind": "encoder", "encoder_state_dict": ..., "encoder_config": ...}``; a
    plain state dict whose keys all start with ``encoder.`` (e.g. pretrained elsewhere) counts too.
    """
    if not isinstance(payload, dict):
        return None
    if "encoder_state_dict" in payload:
        return payload["encoder_state_dict"]
    if payload and all(isinstance(k, str) and k.startswith("encoder.") for k in payload):
        return {k[len("encoder."):]: v for k, v in payload.items()}
    return None


def load_encoder_weights(model: torch.nn.Module, state: dict, source: str | Path = "encoder file") -> int:
    """Copy ``state`` into ``model.encoder`` exactly (every tensor, same names and shapes); returns the count.

    Raises ValueError naming the missing, unexpected and mis-shaped tensors when they do not match, e.g.
    an encoder pretrained with other widths or input channels than the segmentation network's.
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        raise ValueError(f"{source}: holds encoder weights only, but {type(model).__name__} has no .encoder")
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (file vs network)", shapes)):
            if items:
                problems.append(f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''} ({len(items)})")
        raise ValueError(f"{source}: the encoder does not match {type(model).__name__}.encoder "
                         f"(built from the same [model] options?); " + "; ".join(problems))
    encoder.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return len(state)


def set_encoder_frozen(model: torch.nn.Module, frozen: bool, toggle_grad: bool = True) -> None:
    """Freeze (or release) ``model.encoder``: its parameters and BatchNorm statistics stop changing.

    Frozen, the encoder runs in eval mode (running statistics used, not updated) and, with
    ``toggle_grad``, its parameters need no gradient (cheaper backward). Under DDP the set of parameters
    needing gradients must not change, so there ``toggle_grad=False`` and :func:`drop_encoder_grads` keeps
    the optimiser off them instead.
    """
    encoder = model.encoder
    encoder.train(model.training and not frozen)
    if toggle_grad:
        for parameter in encoder.parameters():
            parameter.requires_grad_(not frozen)


def drop_encoder_grads(model: torch.nn.Module) -> None:
    """Set the encoder's gradients to None: optimisers (and weight decay) skip such parameters."""
    for parameter in model.encoder.parameters():
        parameter.grad = None


def export_model(path: Path, model: torch.nn.Module, config: dict, info: dict) -> None:
    """A self-describing model file: enough to rebuild the network and its inputs for inference."""
    payload = {
        "network": config["model"]["name"],
        "config": model.config,
        "data": {k: config["data"][k] for k in ("inputs", "size", "patch", "spacing_mm")},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": info,
    }
    save_torch(payload, path)


def load_exported(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """(network in eval mode, its payload without weights) from an exported model file."""
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    model = rebuild_model(payload["network"], payload["config"])
    model.load_state_dict(payload.pop("state_dict"))
    return model.eval(), payload


def make_optimizer(model: torch.nn.Module, optim: dict) -> torch.optim.Optimizer:
    name, lr, decay = optim["name"], optim["lr"], optim["weight_decay"]
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=optim["momentum"], nesterov=True,
                               weight_decay=decay)
    raise ValueError(f"optim.name must be adam, adamw or sgd, not {name!r}")


def average_tail(optim: dict) -> float:
    """``optim.average_tail``: the share of the run's last steps whose weights are averaged (0: none)."""
    tail = float(optim.get("average_tail") or 0.0)
    if not 0.0 <= tail < 1.0:
        raise ValueError(f"optim.average_tail must be at least 0 and below 1, not {tail}")
    return tail


def weight_average(model: torch.nn.Module) -> torch.optim.swa_utils.AveragedModel:
    """An equal-weight running mean of ``model``'s parameters and buffers (BatchNorm statistics too, so
    the average needs no extra pass over the data to renormalise)."""
    return torch.optim.swa_utils.AveragedModel(model, use_buffers=True)


def learning_rate(step: int, optim: dict) -> float:
    """Warm-up then constant, cosine or polynomial (0.9, as nnU-Net) decay to 0 at optim.steps."""
    base, steps, warmup = optim["lr"], optim["steps"], optim["warmup_steps"]
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    schedule = optim["schedule"]
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "poly":
        return base * (1 - progress) ** 0.9
    raise ValueError(f"optim.schedule must be constant, cosine or poly, not {schedule!r}")


# -------------------------------------------------------------------------------------- validation


def predict_case(model: torch.nn.Module, case, config: dict, device) -> np.ndarray:
    """Probability map (X, Y, Z) of a canonical Case with the network's inference path."""
    from wmhkit import infer

    affine = np.diag([*case.spacing, 1.0])
    flip = bool(config["run"]["flip_tta"])
    if network_dims(config["model"]["name"]) == 2:
        return infer.predict_volume_2d(model, case.channels, affine, case.brain, size=config["data"]["size"],
                                       flip_tta=flip, device=str(device))
    return infer.predict_volume_3d(model, case.channels, affine, patch=tuple(config["data"]["patch"]),
                                   spacing_mm=config["data"]["spacing_mm"], flip_tta=flip, device=str(device))


def evaluate(model: torch.nn.Module, cases: list, config: dict, device) -> dict:
    """Mean of the five challenge metrics over labeled cases ({} when there are none)."""
    from wmhkit.metrics import score

    rows = []
    for case in cases:
        if case.wmh is None:
            continue
        probability = predict_case(model, case, config, device)
        masked = np.where(case.brain > 0, probability, 0.0)
        rows.append(score(case.wmh, (masked >= 0.5).astype(np.uint8), np.diag([*case.spacing, 1.0])).as_dict())
    if not rows:
        return {}
    return {m: float(np.nanmean([r[m] for r in rows])) for m in METRIC_NAMES}


# ---------------------------------------------------------------------------------------- the loop


def train(config: dict, out: str | Path, *, resume: bool = False, init: str | Path | None = None,
          stop_at: int | None = None, progress: bool = True) -> Path:
    """Train the configured network into the run folder ``out``; returns the exported model path.

    ``stop_at`` ends this call after that step (checkpointed); ``resume=True`` continues from
    ``out/last.pt`` exactly as if the run had not stopped. ``init`` starts from other weights.
    """
    out = Path(out)
    runtime = Runtime(config["run"])
    try:
        return _train(config, out, runtime, resume, init, stop_at, progress)
    finally:
        runtime.close()


def _train(config, out, runtime, resume, init, stop_at, progress) -> Path:
    config = copy.deepcopy(config)  # a time budget rewrites optim.steps: the run's copy, not the caller's
    last_path = out / "last.pt"
    if resume and last_path.exists():
        saved = torch.load(str(last_path), map_location="cpu", weights_only=False)
        config = saved["config"]  # the run's own recipe, not whatever the caller passed
    elif not resume and last_path.exists():
        raise FileExistsError(f"{out}: holds a run already; pass --resume to continue it or choose another --out")
    if runtime.main:
        out.mkdir(parents=True, exist_ok=True)
    runtime.barrier()
    optim, run = config["optim"], config["run"]
    autocast = autocast_for(optim["precision"], runtime.device)  # before synthesis: a bad value fails fast
    tail = average_tail(optim)
    torch.manual_seed(run["seed"])
    sources, validation, test = load_sources(config, out / "cache", progress and runtime.main)
    dims = network_dims(config["model"]["name"])
    if dims == 3:
        # Patches from the grid that inference resamples every scan to (validation and test cases are
        # resampled by the evaluation itself).
        from wmhkit.train.data import on_isotropic_grid

        spacing = float(config["data"]["spacing_mm"])
        sources = {name: [on_isotropic_grid(c, spacing) for c in cases] for name, cases in sources.items()}
    channels = next(iter(sources.values()))[0].channels.shape[0]
    model = make_model(config, channels).to(runtime.device)
    if runtime.device.type == "cpu":
        model = model.to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
    optimizer = make_optimizer(model, optim)
    step, best = 0, -1.0
    init_note = None
    averaged = None
    if resume and last_path.exists():
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        step, best = saved["step"], saved["best"]
        if saved.get("averaged") is not None:
            averaged = weight_average(model)
            averaged.load_state_dict(saved["averaged"])
    elif init:
        init_note = load_initial_weights(model, Path(init))
        if runtime.main and progress:
            tqdm.write(f"initial weights from {init}: {init_note}")
    # model.freeze_encoder_steps = N: the (e.g. pretrained) encoder stays fixed for the first N steps.
    freeze = int(config["model"].get("freeze_encoder_steps", 0) or 0)
    if freeze > 0 and not isinstance(getattr(model, "encoder", None), torch.nn.Module):
        raise ValueError(f"model.freeze_encoder_steps: {config['model']['name']} has no separate encoder")
    from wmhkit.train.data import describe

    description = {"train": describe(sources, config["data"]["mix"]),
                   "validation": [c.name for c in validation], "test": [c.name for c in test],
                   "init": str(init) if init else None, "init_loaded": init_note,
                   "time_budget": saved["data"].get("time_budget") if resume and last_path.exists() else None}
    budget = None
    if float(run.get("time_budget_minutes") or 0) > 0:
        budget = StepBudget(float(run["time_budget_minutes"]), optim, run["validate_every"],
                            description["time_budget"], agree=lambda steps: _from_main(steps, runtime))
    if runtime.main:
        (out / "config.json").write_text(json.dumps(config, indent=2))
    net = torch.nn.parallel.DistributedDataParallel(model) if runtime.world > 1 else model
    dataset = training_dataset(config, sources, length=optim["steps"] * optim["batch_size"] * runtime.world)
    last = optim["steps"] if stop_at is None else min(stop_at, optim["steps"])
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(step, last, optim["batch_size"], runtime.rank, runtime.world),
        num_workers=run["workers"], persistent_workers=False)
    logger = RunLog(out, runtime.main)
    bar = tqdm(total=optim["steps"], initial=step, desc=f"train {config['model']['name']}",
               disable=not (progress and runtime.main) or None)
    model.train()
    for batch in loader:
        start = time.perf_counter()
        images = batch["image"].to(runtime.device)
        labels = batch["label"].to(runtime.device)
        if runtime.device.type == "cpu":
            images = channels_last(images)
        lr = learning_rate(step, optim)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if freeze > 0:  # every step: validation's model.train() would otherwise wake the encoder
            set_encoder_frozen(model, step < freeze, toggle_grad=runtime.world == 1)
        with autocast:
            outputs = net(images)
        loss = segmentation_loss(_as_float(outputs), labels, config["loss"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step < freeze:
            drop_encoder_grads(model)
        if optim["clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim["clip"])
        optimizer.step()
        step += 1
        if tail > 0 and (averaged is not None or step > (1.0 - tail) * optim["steps"]):
            if averaged is None:
                averaged = weight_average(model)
            averaged.update_parameters(model)
        logger.step(step, float(loss.item()), lr, time.perf_counter() - start)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if budget is not None and budget.after_step(step):
            last = optim["steps"] if stop_at is None else min(stop_at, optim["steps"])
            bar.total = optim["steps"]
            description["time_budget"] = decided = budget.state()
            bar.write(f"time budget {decided['minutes']:g} min: {decided['seconds_per_step']:.2f} s a step, "
                      f"{decided['steps']} of {decided['configured_steps']} steps")
            if runtime.main:
                (out / "config.json").write_text(json.dumps(config, indent=2))
        boundary = step == last
        if runtime.main and (step % run["validate_every"] == 0 or boundary) and (validation or test):
            model.eval()
            evaluation_start = time.perf_counter()
            scores = {"validation": evaluate(model, validation, config, runtime.device),
                      "test": evaluate(model, test, config, runtime.device)}
            if budget is not None:
                budget.evaluated(time.perf_counter() - evaluation_start)
            model.train()
            logger.validation(step, scores)
            current = scores["validation"].get("dsc", float("nan"))
            if not math.isnan(current) and current > best:
                best = current
                export_model(out / "best.pt", model, config, {"step": step, "scores": scores, "data": description})
            bar.write(f"step {step}: " + _score_text(scores))
        if runtime.main and (step % run["checkpoint_every"] == 0 or boundary):
            if budget is not None and budget.record["refits"]:
                description["time_budget"] = budget.state()
            _save_state(last_path, model, optimizer, step, best, config, description, averaged)
        runtime.barrier()
        if step >= last:
            break
    bar.close()
    logger.close()
    exported = out / "model.pt"
    if runtime.main:
        if step >= optim["steps"]:
            export_model(exported, model, config, {"step": step, "data": description, "git": git_hash()})
            if averaged is not None:
                count = int(averaged.n_averaged)
                export_model(out / "model_averaged.pt", averaged.module, config,
                             {"step": step, "averaged_steps": [step - count + 1, step], "data": description,
                              "git": git_hash()})
        logger.plot()
    runtime.barrier()
    return exported


def _from_main(value: int, runtime: Runtime) -> int:
    """Rank 0's ``value`` on every rank (the value itself without torchrun)."""
    if runtime.world == 1:
        return int(value)
    shared = torch.tensor([int(value)], dtype=torch.int64, device=runtime.device)
    dist.broadcast(shared, 0)
    return int(shared.item())


def _as_float(outputs):
    if isinstance(outputs, list | tuple):
        return [o.float() for o in outputs]
    return outputs.float()


def _score_text(scores: dict) -> str:
    parts = []
    for name, values in scores.items():
        if values:
            parts.append(f"{name} Dice {values['dsc']:.3f} H95 {values['h95']:.1f} AVD {values['avd']:.0f}% "
                         f"recall {values['recall']:.2f} F1 {values['f1']:.2f}")
    return "; ".join(parts)


def _save_state(path: Path, model, optimizer, step: int, best: float, config: dict, description: dict,
                averaged=None) -> None:
    payload = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "best": best,
        "config": config, "data": description, "git": git_hash(), "torch_rng": torch.get_rng_state(),
        "averaged": None if averaged is None else averaged.state_dict(),
    }
    save_torch(payload, path)


class RunLog:
    """log.csv (per step), metrics.csv (per validation) and the curves PNG of a run folder."""

    def __init__(self, out: Path, active: bool):
        self.out, self.active = out, active
        self.steps_file = open(out / "log.csv", "a", encoding="utf-8") if active else None  # noqa: SIM115
        if self.steps_file and self.steps_file.tell() == 0:
            self.steps_file.write("step,loss,lr,seconds\n")

    def step(self, step: int, loss: float, lr: float, seconds: float) -> None:
        if self.steps_file:
            self.steps_file.write(f"{step},{loss:.5f},{lr:.6g},{seconds:.3f}\n")
            if step % 25 == 0:  # so that a long run can be followed with tail -f
                self.steps_file.flush()

    def validation(self, step: int, scores: dict) -> None:
        path = self.out / "metrics.csv"
        header = ["step"] + [f"{s}_{m}" for s in ("validation", "test") for m in METRIC_NAMES]
        new = not path.exists()
        with open(path, "a", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(header)
            writer.writerow([step] + [f"{scores[s].get(m, float('nan')):.4f}" for s in ("validation", "test")
                                      for m in METRIC_NAMES])
        if self.steps_file:
            self.steps_file.flush()

    def close(self) -> None:
        if self.steps_file:
            self.steps_file.close()

    def plot(self) -> None:
        """Loss (running mean) and validation/test Dice against the step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = np.genfromtxt(self.out / "log.csv", delimiter=",", names=True, ndmin=1)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
        if steps.size:
            window = max(1, steps.size // 50)
            smooth = np.convolve(steps["loss"], np.ones(window) / window, mode="valid")
            left.plot(steps["step"][window - 1:], smooth)
        left.set(xlabel="step", ylabel="training loss", title="loss")
        metrics_path = self.out / "metrics.csv"
        if metrics_path.exists():
            metrics = np.genfromtxt(metrics_path, delimiter=",", names=True, ndmin=1)
            for name in ("validation_dsc", "test_dsc"):
                if np.isfinite(metrics[name]).any():
                    right.plot(metrics["step"], metrics[name], marker="o", label=name.replace("_dsc", ""))
            right.legend()
        right.set(xlabel="step", ylabel="Dice", title="Dice", ylim=(0, 1))
        fig.tight_layout()
        fig.savefig(self.out / "curves.png", dpi=100)
        plt.close(fig)

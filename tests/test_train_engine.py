"""The shared training engine: configs and overrides, loss going down, exact resume, DDP, exports."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_nifti
from torch.nn import functional as F

from wmhkit.train.config import ConfigError, load_config
from wmhkit.train.budget import PACE_STEPS, REFIT_EVERY, StepBudget, budgeted_steps
from wmhkit.train.engine import learning_rate, load_exported, train
from wmhkit.train.losses import binary_logits, segmentation_loss, soft_dice_loss

SPACING = (1.0, 1.0, 3.0)


def make_case(root: Path, name: str, seed: int) -> None:
    """A 40x40x10 'brain' (ellipsoid) with two bright FLAIR blobs as lesions, challenge layout."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(40), np.arange(40), np.arange(10), indexing="ij")
    brain = ((x - 20) / 16) ** 2 + ((y - 20) / 17) ** 2 + ((z - 5) / 6) ** 2 <= 1
    wmh = np.zeros(brain.shape, np.uint8)
    for _ in range(2):
        c = rng.integers([12, 12, 3], [28, 28, 7])
        wmh[((x - c[0]) ** 2 + (y - c[1]) ** 2 + (3 * (z - c[2])) ** 2) <= 9] = 1
    wmh &= brain
    flair = np.where(brain, 100 + 5 * rng.standard_normal(brain.shape) + 80 * wmh, 0).astype(np.float32)
    t1 = np.where(brain, 200 + 5 * rng.standard_normal(brain.shape) - 40 * wmh, 0).astype(np.float32)
    affine = np.diag([*SPACING, 1.0])
    (root / name / "pre").mkdir(parents=True)
    write_nifti(root / name / "pre" / "FLAIR.nii.gz", flair, affine)
    write_nifti(root / name / "pre" / "T1.nii.gz", t1, affine)
    write_nifti(root / name / "wmh.nii.gz", wmh, affine)
    write_nifti(root / name / "brainmask.nii.gz", brain.astype(np.uint8), affine)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    for i in range(3):
        make_case(root, f"case{i}", i)
    return root


def tiny_config(data: Path, tmp: Path, **optim) -> Path:
    text = f"""
[model]
name = "unet2d"
variant = "v2"
width = 0.125
norm = "batch"

[data]
inputs = "flair_t1"
size = 32
mix = {{ real = 1.0 }}
real = ["{data}"]
validation = ["{data}"]
lesion_fraction = 0.8

[augment]
affine = 0.0
bias = 0.0
noise = 0.0
gamma = 0.0
blur = 0.0
flip = 0.5

[optim]
name = "adam"
lr = {optim.get("lr", 3e-3)}
schedule = "{optim.get("schedule", "constant")}"
steps = {optim.get("steps", 8)}
batch_size = 4

[run]
seed = 3
threads = 1
checkpoint_every = 4
validate_every = 4
"""
    path = tmp / "tiny.toml"
    path.write_text(text)
    return path


def test_config_file_then_overrides(tmp_path, tiny_data):
    config = load_config(tiny_config(tiny_data, tmp_path), ["optim.lr=0.5", 'model.variant="v3"', "data.mix={synthetic=1.0}"])
    assert config["optim"]["lr"] == 0.5
    assert config["optim"]["steps"] == 8  # from the file
    assert config["model"]["variant"] == "v3"
    assert config["data"]["mix"] == {"synthetic": 1.0}  # a table replaces, not merges
    assert config["loss"]["name"] == "dice_bce"  # default kept


@pytest.mark.parametrize("override", ["optim.nope=1", "nosection.a=1", "novalue"])
def test_bad_overrides_are_refused(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_learning_rate_schedules():
    optim = {"lr": 1.0, "steps": 100, "warmup_steps": 10, "schedule": "cosine"}
    assert learning_rate(0, optim) == pytest.approx(0.1)
    assert learning_rate(10, optim) == pytest.approx(1.0)
    assert learning_rate(100, optim) == pytest.approx(0.0)
    assert learning_rate(55, {**optim, "schedule": "poly"}) == pytest.approx(0.5 ** 0.9)


def test_two_class_logits_give_the_softmax_cross_entropy():
    logits = torch.randn(2, 2, 5, 5)
    target = (torch.rand(2, 1, 5, 5) > 0.5).float()
    softmax_ce = F.cross_entropy(logits, target[:, 0].long())
    assert F.binary_cross_entropy_with_logits(binary_logits(logits), target).item() == pytest.approx(softmax_ce.item(), rel=1e-5)
    deep = segmentation_loss([logits, logits[:, :, ::2, ::2]], target, {"name": "tversky", "deep_supervision": [1, 0.5]})
    assert torch.isfinite(deep)


def test_batch_dice_pools_the_batch_and_per_sample_dice_averages():
    # Sample 0: a confident hit; sample 1: empty target, a false alarm over 4 of 16 pixels.
    logits = torch.full((2, 1, 4, 4), -20.0)
    target = torch.zeros(2, 1, 4, 4)
    logits[0, 0, :2, :2] = 20.0
    target[0, 0, :2, :2] = 1.0
    logits[1, 0, 2:, 2:] = 20.0
    per_sample = soft_dice_loss(logits, target, eps=1.0).item()
    pooled = soft_dice_loss(logits, target, eps=1.0, batch=True).item()
    assert per_sample == pytest.approx(((1 - 9 / 9) + (1 - 1 / 5)) / 2, abs=1e-4)
    assert pooled == pytest.approx(1 - 9 / 13, abs=1e-4)
    with_option = segmentation_loss(logits, target, {"name": "dice_bce", "batch_dice": True})
    without = segmentation_loss(logits, target, {"name": "dice_bce", "batch_dice": False})
    assert with_option.item() - without.item() == pytest.approx(pooled - per_sample, abs=1e-4)


def test_training_lowers_the_loss_and_exports(tmp_path, tiny_data):
    config = load_config(tiny_config(tiny_data, tmp_path, steps=40))
    exported = train(config, tmp_path / "run", progress=False)
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    assert len(log) == 40
    assert log["loss"][-8:].mean() < 0.9 * log["loss"][:8].mean()
    metrics = np.genfromtxt(tmp_path / "run" / "metrics.csv", delimiter=",", names=True)
    assert metrics["validation_dsc"][-1] > metrics["validation_dsc"][0] + 0.3  # it learned the blobs
    for name in ("last.pt", "best.pt", "model.pt", "metrics.csv", "curves.png", "config.json"):
        assert (tmp_path / "run" / name).exists(), name
    model, payload = load_exported(exported)
    assert payload["network"] == "unet2d" and payload["data"]["inputs"] == "flair_t1"
    x = torch.randn(1, 2, 32, 32)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model(x).shape == (1, 1, 32, 32)


def test_resume_reproduces_an_uninterrupted_run(tmp_path, tiny_data):
    config = load_config(tiny_config(tiny_data, tmp_path, steps=8, schedule="cosine"))
    train(config, tmp_path / "whole", progress=False)
    train(config, tmp_path / "parts", stop_at=4, progress=False)
    assert not (tmp_path / "parts" / "model.pt").exists()
    train(config, tmp_path / "parts", resume=True, progress=False)
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)["model"]
    parts = torch.load(tmp_path / "parts" / "last.pt", weights_only=False)["model"]
    assert whole.keys() == parts.keys()
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    # and differs from the weights halfway, so the comparison has teeth
    train(config, tmp_path / "half", stop_at=4, progress=False)
    half = torch.load(tmp_path / "half" / "last.pt", weights_only=False)["model"]
    assert not all(torch.equal(whole[k], half[k]) for k in whole)


def test_tail_averaging_exports_the_mean_of_the_last_steps_and_survives_a_resume(tmp_path, tiny_data):
    config = load_config(tiny_config(tiny_data, tmp_path, steps=8, schedule="cosine"), ["optim.average_tail=0.5"])
    train(config, tmp_path / "whole", progress=False)
    # Steps 5-8 are the last half: their weights, each from a run stopped there (runs resume exactly).
    weights = []
    for stop in (5, 6, 7):
        train(config, tmp_path / f"stop{stop}", stop_at=stop, progress=False)
        weights.append(torch.load(tmp_path / f"stop{stop}" / "last.pt", weights_only=False)["model"])
    weights.append(torch.load(tmp_path / "whole" / "last.pt", weights_only=False)["model"])
    averaged = torch.load(tmp_path / "whole" / "model_averaged.pt", weights_only=True)
    assert averaged["info"]["averaged_steps"] == [5, 8]
    floats = [k for k, v in weights[0].items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats)  # BatchNorm statistics are averaged too
    for key in floats:
        mean = torch.stack([w[key] for w in weights]).mean(0)
        torch.testing.assert_close(averaged["state_dict"][key], mean, rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(averaged["state_dict"][k], weights[-1][k]) for k in floats)
    train(config, tmp_path / "parts", stop_at=6, progress=False)
    train(config, tmp_path / "parts", resume=True, progress=False)
    resumed = torch.load(tmp_path / "parts" / "model_averaged.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(resumed[k], averaged["state_dict"][k]) for k in resumed)
    exported, _ = load_exported(tmp_path / "whole" / "model_averaged.pt")  # loads as a network
    assert not exported.training
    with pytest.raises(ValueError, match="optim.average_tail"):
        train(load_config(tiny_config(tiny_data, tmp_path), ["optim.average_tail=1.0"]), tmp_path / "bad",
              progress=False)


def test_budgeted_steps_fit_the_time_left_within_the_config():
    assert budgeted_steps(3000, 25, 2.0, 100.0) == 75  # 100 s left at 2 s a step: 50 more
    assert budgeted_steps(60, 25, 2.0, 1e6) == 60  # a generous budget never adds steps
    assert budgeted_steps(3000, 25, 2.0, -5.0) == 25  # an exhausted one stops where it is


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_budget(budget: StepBudget, clock: FakeClock, seconds_per_step, until: int) -> list[int]:
    """Steps 1..until at the given pace (a function of the step); optim['steps'] after each."""
    decided = []
    for step in range(1, until + 1):
        seconds = seconds_per_step(step)  # may advance the clock itself (an evaluation)
        clock.now += seconds
        budget.after_step(step)
        decided.append(budget.optim["steps"])
        if step >= budget.optim["steps"]:
            break
    return decided


def test_the_budget_follows_a_machine_that_slows_down():
    clock, optim = FakeClock(), {"steps": 3000}
    budget = StepBudget(10.0, optim, validate_every=10_000, clock=clock)  # 600 s
    decided = run_budget(budget, clock, lambda step: 1.0 if step <= REFIT_EVERY else 2.0, 3000)
    assert decided[PACE_STEPS[1] - 1] == 600  # 1 s a step: 600 steps fit
    assert decided[-1] == len(decided)  # the run ends where the budget says
    # 100 steps at 1 s, then 2 s a step: 100 + 500 / 2 = 350 steps fill 600 s
    assert abs(len(decided) - 350) <= REFIT_EVERY // 2 and clock.now <= 600.0 + 2 * REFIT_EVERY
    assert budget.state()["configured_steps"] == 3000 and budget.state()["refits"] >= 3


def test_evaluations_count_against_the_budget_but_not_in_the_pace():
    clock, optim = FakeClock(), {"steps": 3000}
    budget = StepBudget(10.0, optim, validate_every=100, clock=clock)

    def pace(step):
        if step % 100 == 0:  # an evaluation of 20 s after every 100th step
            clock.now += 20.0
            budget.evaluated(20.0)
        return 1.0

    decided = run_budget(budget, clock, pace, 3000)
    assert budget.state()["seconds_per_step"] == 1.0
    assert 450 <= len(decided) <= 520  # 500 s of steps and 5 evaluations of 20 s
    assert clock.now <= 600.0 + 20.0


def test_a_resumed_run_goes_on_spending_the_same_budget():
    clock, optim = FakeClock(), {"steps": 3000}
    first = StepBudget(10.0, optim, validate_every=10_000, clock=clock)
    run_budget(first, clock, lambda step: 1.0, 200)
    saved = first.state()
    assert saved["spent_s"] == 200.0
    again = StepBudget(10.0, dict(optim), validate_every=10_000, state=saved, clock=clock)
    for step in range(201, 201 + PACE_STEPS[1]):
        clock.now += 1.0
        again.after_step(step)
    assert again.optim["steps"] == 600  # 600 s in all, not 600 more


def test_a_spent_time_budget_stops_the_run_once_the_pace_is_known(tmp_path, tiny_data):
    config = load_config(tiny_config(tiny_data, tmp_path, steps=60), ["run.time_budget_minutes=1e-6"])
    exported = train(config, tmp_path / "run", progress=False)
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    assert len(log) == PACE_STEPS[1]
    assert config["optim"]["steps"] == 60  # the caller's config is left alone
    budget = load_exported(exported)[1]["info"]["data"]["time_budget"]
    assert budget["configured_steps"] == 60 and budget["steps"] == PACE_STEPS[1]
    assert budget["seconds_per_step"] > 0


def test_the_schedule_ends_at_the_budgeted_step(tmp_path, tiny_data, monkeypatch):
    import wmhkit.train.budget as budget

    monkeypatch.setattr(budget, "budgeted_steps", lambda configured, done, *_: 40)
    config = load_config(tiny_config(tiny_data, tmp_path, steps=200, schedule="cosine"), ["run.time_budget_minutes=90"])
    train(config, tmp_path / "run", progress=False)
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    assert len(log) == 40 and (tmp_path / "run" / "model.pt").exists()
    cut = {**config["optim"], "steps": 40}
    assert log["lr"][-1] == pytest.approx(learning_rate(39, cut), rel=1e-4)
    assert log["lr"][-1] < 0.01 * config["optim"]["lr"]  # on the configured 200 steps it would still be ~0.9 lr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["optim"]["steps"] == 40
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert saved["config"]["optim"]["steps"] == 40 and saved["data"]["time_budget"]["steps"] == 40


def test_an_existing_run_is_not_overwritten(tmp_path, tiny_data):
    config_path = tiny_config(tiny_data, tmp_path, steps=2)
    run = [sys.executable, "-m", "wmhkit", "train", "--config", str(config_path), "--out", str(tmp_path / "r"), "--quiet"]
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
    again = subprocess.run(run, capture_output=True, text=True)
    assert again.returncode == 2
    assert "--resume" in again.stderr and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_ddp_with_two_cpu_processes(tmp_path, tiny_data):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    config_path = tiny_config(tiny_data, tmp_path, steps=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "wmhkit", "train", "--config", str(config_path),
         "--out", str(tmp_path / "ddp"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = torch.load(tmp_path / "ddp" / "last.pt", weights_only=False)
    assert saved["step"] == 4
    log = np.genfromtxt(tmp_path / "ddp" / "log.csv", delimiter=",", names=True)
    assert len(log) == 4  # one writer (rank 0), one row per global step


TRAINING_CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.toml")
                          if p.name != "pretrain_age_cpu.toml")  # a [pretrain] file: the test after this one


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_build_their_network(path):
    from wmhkit.train.engine import make_model
    from wmhkit.train.inputs import input_channels

    config = load_config(path)  # unknown sections or keys raise ConfigError
    model = make_model(config, input_channels(config["data"]["inputs"]))
    assert sum(p.numel() for p in model.parameters()) > 0
    assert 0 < config["optim"]["steps"] and 0 < config["run"]["validate_every"] <= config["optim"]["steps"]


def test_shipped_pretrain_config_matches_its_segmentation_encoder():
    from wmhkit.train.engine import make_model
    from wmhkit.train.inputs import input_channels
    from wmhkit.train.pretrain import AgeRegressor, load_pretrain_config, pretrain_encoder_options

    config = load_pretrain_config(Path(__file__).resolve().parents[1] / "configs" / "pretrain_age_cpu.toml")
    regressor = AgeRegressor(pretrain_encoder_options(config))
    segmenter = make_model(config, input_channels(config["data"]["inputs"]))
    # The pretrained encoder must load into the segmentation network exactly, tensor for tensor.
    assert {k: v.shape for k, v in regressor.encoder.state_dict().items()} == \
        {k: v.shape for k, v in segmenter.encoder.state_dict().items()}


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_takes_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, native):
    import wmhkit.infer
    from wmhkit.train.config import ConfigError, autocast_for

    monkeypatch.setattr(wmhkit.infer, "native_bf16", lambda device="cpu": native)
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)

    def dtype_under(precision):
        with autocast_for(precision, "cpu"):
            return layer(x).dtype

    assert dtype_under("auto") == (torch.bfloat16 if native else torch.float32)
    assert dtype_under("bf16") == torch.bfloat16  # asked for explicitly: emulated or not
    assert dtype_under("fp32") == torch.float32
    with pytest.raises(ConfigError, match="precision"):
        autocast_for("half", "cpu")


def test_inference_defaults_to_float32_on_a_cpu_without_native_bf16(monkeypatch):
    import wmhkit.infer
    from wmhkit.infer import predict_slices

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
            return x[:, :1]

    stack = np.zeros((2, 1, 8, 8), np.float32)
    for native, expected in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(wmhkit.infer, "native_bf16", lambda device="cpu", native=native: native)
        seen.clear()
        predict_slices(Probe(), stack)
        assert seen and set(seen) == {expected}

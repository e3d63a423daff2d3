"""Encoder pretraining on synthetic age, and its transfer into the deeply supervised 3D U-Net:
`wmhkit pretrain` writes encoder.pt, `--init` loads exactly its tensors, the freeze schedule holds them."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_nifti

from wmhkit.cli import main
from wmhkit.train.config import load_config
from wmhkit.train.engine import load_initial_weights, make_model, train
from wmhkit.train.pretrain import AgeRegressor, load_pretrain_config, pretrain, pretrain_encoder_options

torch.set_num_threads(1)

MODEL = """
[model]
name = "unet3d_ds"
base = 2
levels = 3
"""
PRETRAIN = """
[data]
inputs = "flair_t1"

[run]
threads = 1

[pretrain]
cases = 2
validation_cases = 2
spacing_mm = 4.0
grid = [48, 57, 48]
shape = [32, 40, 32]
steps = {steps}
batch_size = 2
lr = 3e-3
schedule = "constant"
checkpoint_every = 3
validate_every = 100
"""


def pretrain_config(tmp: Path, steps: int = 6) -> Path:
    path = tmp / "pretrain.toml"
    path.write_text(MODEL + PRETRAIN.format(steps=steps))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A short pretraining run through the CLI: (run folder, encoder.pt)."""
    tmp = tmp_path_factory.mktemp("age")
    out = tmp / "run"
    code = main(["pretrain", "--task", "age", "--config", str(pretrain_config(tmp, steps=30)), "--out", str(out),
                 "--quiet"])
    assert code == 0
    return out, out / "encoder.pt"


def test_pretraining_lowers_the_loss_and_writes_the_encoder(pretrained):
    out, encoder = pretrained
    log = np.genfromtxt(out / "log.csv", delimiter=",", names=True)
    assert len(log) == 30
    assert log["loss"][-8:].mean() < 0.5 * log["loss"][:8].mean()  # it fits the two brains' ages
    payload = torch.load(encoder, weights_only=True)
    assert payload["kind"] == "encoder" and payload["encoder_config"]["in_channels"] == 2
    assert all(k.startswith("blocks.") for k in payload["encoder_state_dict"])
    for name in ("last.pt", "metrics.csv", "config.json"):
        assert (out / name).exists(), name


def test_pretraining_resumes_exactly(tmp_path):
    config = load_pretrain_config(pretrain_config(tmp_path, steps=4))
    pretrain(config, tmp_path / "whole", progress=False)
    pretrain(config, tmp_path / "parts", stop_at=2, progress=False)
    assert not (tmp_path / "parts" / "encoder.pt").exists()
    pretrain(config, tmp_path / "parts", resume=True, progress=False)
    whole = torch.load(tmp_path / "whole" / "encoder.pt", weights_only=True)["encoder_state_dict"]
    parts = torch.load(tmp_path / "parts" / "encoder.pt", weights_only=True)["encoder_state_dict"]
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def test_age_regressor_encoder_is_the_segmentation_encoder(tmp_path):
    config = load_pretrain_config(pretrain_config(tmp_path))
    regressor = AgeRegressor(pretrain_encoder_options(config))
    segmenter = make_model(load_config(None, ['model.name="unet3d_ds"', "model.base=2", "model.levels=3"]), 2)
    mine = {k: v.shape for k, v in regressor.encoder.state_dict().items()}
    theirs = {k: v.shape for k, v in segmenter.encoder.state_dict().items()}
    assert mine == theirs
    assert regressor(torch.randn(2, 2, 16, 16, 16)).shape == (2,)


def segmentation_model(base: int = 2):
    torch.manual_seed(1)
    return make_model(load_config(None, ['model.name="unet3d_ds"', f"model.base={base}", "model.levels=3"]), 2)


def test_init_loads_exactly_the_pretrained_encoder(pretrained):
    _, encoder = pretrained
    saved = torch.load(encoder, weights_only=True)["encoder_state_dict"]
    model = segmentation_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    note = load_initial_weights(model, encoder)
    assert note == f"encoder: {len(saved)} tensors"
    loaded = model.encoder.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    # at least one encoder tensor really changed, and nothing outside the encoder did
    assert any(not torch.equal(before[f"encoder.{k}"], saved[k]) for k in saved)
    after = model.state_dict()
    outside = [k for k in after if not k.startswith("encoder.")]
    assert outside and all(torch.equal(after[k], before[k]) for k in outside)


def test_init_recognises_a_plain_encoder_state_dict_and_refuses_mismatches(pretrained, tmp_path):
    _, encoder = pretrained
    saved = torch.load(encoder, weights_only=True)["encoder_state_dict"]
    plain = tmp_path / "plain.pt"
    torch.save({f"encoder.{k}": v for k, v in saved.items()}, plain)
    model = segmentation_model()
    assert load_initial_weights(model, plain).startswith("encoder:")
    assert torch.equal(model.encoder.blocks[0].body[0].weight, saved["blocks.0.body.0.weight"])
    wider = segmentation_model(base=4)
    with pytest.raises(ValueError, match="does not match.*shape"):
        load_initial_weights(wider, encoder)


# --------------------------------------------------------------------- fine-tuning through the engine


def make_case(root: Path, name: str, seed: int) -> None:
    """A 24x24x16 'brain' with a bright FLAIR blob as lesion, challenge layout."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(24), np.arange(24), np.arange(16), indexing="ij")
    brain = ((x - 12) / 10) ** 2 + ((y - 12) / 10) ** 2 + ((z - 8) / 7) ** 2 <= 1
    wmh = (((x - 12) ** 2 + (y - 10) ** 2 + (z - 8) ** 2) <= 9) & brain
    flair = np.where(brain, 100 + 5 * rng.standard_normal(brain.shape) + 80 * wmh, 0).astype(np.float32)
    t1 = np.where(brain, 200 + 5 * rng.standard_normal(brain.shape) - 40 * wmh, 0).astype(np.float32)
    (root / name / "pre").mkdir(parents=True)
    write_nifti(root / name / "pre" / "FLAIR.nii.gz", flair, np.eye(4))
    write_nifti(root / name / "pre" / "T1.nii.gz", t1, np.eye(4))
    write_nifti(root / name / "wmh.nii.gz", wmh.astype(np.uint8), np.eye(4))
    write_nifti(root / name / "brainmask.nii.gz", brain.astype(np.uint8), np.eye(4))


def finetune_config(tmp: Path, freeze: int, steps: int = 4) -> dict:
    data = tmp / "data"
    if not data.exists():
        make_case(data, "case0", 0)
    return load_config(None, [
        'model.name="unet3d_ds"', "model.base=2", "model.levels=3", f"model.freeze_encoder_steps={freeze}",
        "data.mix={real=1.0}", f'data.real=["{data}"]', "data.validation=[]", "data.patch=[16, 16, 16]",
        "augment.affine=0.0", "augment.bias=0.0", "augment.noise=0.0", "augment.gamma=0.0", "augment.blur=0.0",
        'optim.name="adam"', "optim.lr=1e-2", f"optim.steps={steps}", "optim.batch_size=2", "run.threads=1",
        "run.checkpoint_every=2",
    ])


def test_frozen_encoder_stays_the_pretrained_one_then_learns(pretrained, tmp_path):
    _, encoder = pretrained
    saved = torch.load(encoder, weights_only=True)["encoder_state_dict"]
    config = finetune_config(tmp_path, freeze=2)
    out = tmp_path / "ft"
    train(config, out, init=encoder, stop_at=2, progress=False)
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["data"]["init_loaded"] == f"encoder: {len(saved)} tensors"
    model = state["model"]
    # frozen steps: every encoder tensor (weights and BatchNorm statistics) is still the pretrained one
    assert all(torch.equal(model[f"encoder.{k}"], saved[k]) for k in saved)
    torch.manual_seed(config["run"]["seed"])  # the engine's initial weights, before --init
    initial = make_model(config, 2).state_dict()
    assert not torch.equal(model["heads.0.weight"], initial["heads.0.weight"])  # the decoder trained
    train(config, out, resume=True, progress=False)
    model = torch.load(out / "last.pt", weights_only=False)["model"]
    assert not all(torch.equal(model[f"encoder.{k}"], saved[k]) for k in saved)  # released after step 2


def test_freeze_needs_a_network_with_an_encoder(tmp_path):
    config = finetune_config(tmp_path, freeze=2)
    config["model"] = {"name": "unet2d", "variant": "v2", "width": 0.125, "freeze_encoder_steps": 2}
    config["data"]["size"] = 16
    with pytest.raises(ValueError, match="no separate encoder"):
        train(config, tmp_path / "2d", progress=False)

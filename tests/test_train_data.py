"""Training data: input builders, synthetic cache, real cases, slice/patch samplers, augmentation."""

import json
import time

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data, write_nifti

from wmhkit.preprocess import brain_box
from wmhkit.train.augment import DEFAULT_SPEC, build_augmentation
from wmhkit.train.data import (
    Case,
    PatchDataset,
    SliceDataset,
    describe,
    on_isotropic_grid,
    real_cases,
    synthetic_cases,
)
from wmhkit.train.inputs import (
    KINDS,
    NEEDS_T1,
    build_inputs,
    input_channels,
    morphological_tophat,
)

torch.set_num_threads(1)


def toy_volume(shape=(40, 44, 12), seed=0):
    """(flair, t1, brain, wmh) of an ellipsoid 'brain' with two bright lesion blobs in FLAIR."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    radii = np.array(shape) * np.array([0.38, 0.38, 0.45])
    brain = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1
    wmh = np.zeros(shape, np.uint8)
    wmh[14:18, 16:20, 4:7] = 1
    wmh[24:26, 26:29, 6:8] = 1
    flair = np.where(brain, 100 + 5 * rng.standard_normal(shape), 0).astype(np.float32)
    flair[wmh > 0] = 200
    t1 = np.where(brain, 300 + 10 * rng.standard_normal(shape), 0).astype(np.float32)
    t1[wmh > 0] = 200
    return flair, t1, brain.astype(np.uint8), wmh


def toy_case(name="toy", source="synthetic", kind="flair_t1", seed=0, shape=(40, 44, 12), lesions=True):
    flair, t1, brain, wmh = toy_volume(shape, seed)
    if not lesions:
        wmh[:] = 0
    channels = build_inputs(kind, flair, t1, brain)
    return Case(name, channels, wmh, brain, (1.0, 1.0, 3.0), source, kind, {"seed": seed})


# ------------------------------------------------------------------------------------------- inputs


def test_build_inputs_shapes_and_normalisation():
    flair, t1, brain, _ = toy_volume()
    inside = brain > 0
    for kind in KINDS:
        out = build_inputs(kind, flair, t1, brain)
        assert out.shape == (input_channels(kind),) + flair.shape and out.dtype == np.float32
        if kind.startswith("colour"):
            assert out.min() >= -127 and out.max() <= 128
            assert np.all(out[:, ~inside] == -127)
        else:
            assert np.all(out[:, ~inside] == 0)
            for c in out[:2]:
                assert abs(c[inside].mean()) < 1e-4 and abs(c[inside].std() - 1) < 1e-4
    morph = build_inputs("flair_t1_morph", flair, t1, brain)[2]
    assert morph.min() >= 0
    # The small bright lesions stand out of the top-hat; the flat brain around them does not.
    _, _, _, wmh = toy_volume()
    assert morph[wmh > 0].mean() > 5 * morph[inside & (wmh == 0)].mean()


def test_flair_only_colour_kind_puts_flair_in_the_t1_slot_and_ignores_any_t1():
    flair, t1, brain, _ = toy_volume()
    flair_only = build_inputs("colour_flair", flair, None, brain)
    assert np.array_equal(flair_only[0], flair_only[1])
    with_t1 = build_inputs("colour", flair, t1, brain)
    assert np.array_equal(flair_only[[0, 2]], with_t1[[0, 2]])  # FLAIR and its top-hat as in "colour"
    assert np.array_equal(build_inputs("colour_flair", flair, t1, brain), flair_only)


def test_missing_t1_is_a_clear_error():
    flair, _, brain, _ = toy_volume()
    assert build_inputs("flair", flair, None, brain).shape[0] == 1
    for kind in NEEDS_T1:
        with pytest.raises(ValueError, match="needs a T1"):
            build_inputs(kind, flair, None, brain)
    with pytest.raises(ValueError, match="unknown input kind"):
        build_inputs("rgb", flair, None, brain)


def test_morphological_tophat_keeps_small_bright_spots_only():
    image = np.zeros((64, 64, 1), np.float32)
    image[:32] = 1.0  # a plateau wider than the disk: background
    image[40:43, 40:43] = 3.0  # a 3-pixel spot: kept
    out = morphological_tophat(image, np.ones_like(image, bool), (1.0, 1.0), diameter_mm=15)
    assert np.allclose(out[40:43, 40:43], 3.0)
    assert np.allclose(out[5:27, 5:59], 0.0)


# ------------------------------------------------------------------------------------------ samplers


def test_slice_dataset_determinism_and_shapes():
    cases = {"synthetic": [toy_case("a"), toy_case("b", seed=1)]}
    ds = SliceDataset(cases, {"synthetic": 1.0}, size=32, length=50, seed=3)
    first, again, other = ds[7], ds[7], ds[8]
    assert first["image"].shape == (2, 32, 32) and first["label"].shape == (1, 32, 32)
    assert first["image"].dtype == torch.float32 and first["label"].dtype == torch.float32
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    fresh = SliceDataset(cases, {"synthetic": 1.0}, size=32, length=50, seed=3)[7]
    assert torch.equal(first["image"], fresh["image"])
    assert not torch.equal(first["image"], other["image"])
    assert not torch.equal(first["image"], SliceDataset(cases, {"synthetic": 1.0}, 32, 50, seed=4)[7]["image"])
    ds.set_epoch(1)
    assert not torch.equal(first["image"], ds[7]["image"])


def test_slice_dataset_lesion_fraction_and_mix():
    cases = {"synthetic": [toy_case("s")], "real": [toy_case("r", source="real", seed=5)]}
    ds = SliceDataset(cases, {"synthetic": 3.0, "real": 1.0}, size=24, length=400, seed=0, lesion_fraction=1.0)
    assert all(ds[i]["label"].sum() > 0 for i in range(40))
    none = SliceDataset({"synthetic": [toy_case("n", lesions=False)]}, {"synthetic": 1}, 24, 20, 0, 1.0)
    assert all(none[i]["label"].sum() == 0 for i in range(20))
    with pytest.raises(ValueError, match="without cases"):
        SliceDataset(cases, {"other": 1.0}, 24, 10, 0)


def test_slice_mix_ratio_from_items():
    # Two sources told apart by their content: lesion-free cases whose only channel is +1 or -1.
    def flat(name, value):
        brain = np.ones((16, 16, 6), np.uint8)
        return Case(name, np.full((1, 16, 16, 6), value, np.float32), None, brain, (1, 1, 1), "x")

    ds = SliceDataset({"a": [flat("a", 1.0)], "b": [flat("b", -1.0)]}, {"a": 0.2, "b": 0.8}, 8, 500, seed=1)
    share_a = np.mean([float(ds[i]["image"].mean()) > 0 for i in range(500)])
    assert abs(share_a - 0.2) < 0.05


def aligned_case():
    """A case whose label is exactly where its only channel is bright (lesions 6-10 pixels wide)."""
    shape = (60, 50, 10)
    grid = np.indices(shape[:2]).astype(float)
    disc = ((grid[0] - 29.5) / 24) ** 2 + ((grid[1] - 24.5) / 20) ** 2 <= 1
    brain = np.repeat(disc[:, :, None], shape[2], axis=2).astype(np.uint8)
    wmh = np.zeros(shape, np.uint8)
    wmh[18:28, 14:22, 3:7] = 1
    wmh[34:40, 27:34, 7:10] = 1  # one lesion per slice, so that centroids compare one object
    image = np.where(wmh > 0, 10.0, 0.0).astype(np.float32)[None]
    return Case("aligned", image, wmh, brain, (1.0, 1.0, 3.0), "synthetic", "flair")


@pytest.mark.parametrize("spec", [None, {"affine": 1.0}, {"affine": 1.0, "elastic": 1.0, "flip": 1.0}])
@pytest.mark.parametrize("zoom", [1, 2])
def test_slice_image_and_label_stay_aligned(spec, zoom):
    case = aligned_case()
    x0, x1, y0, y1 = brain_box(case.brain > 0, case.spacing[:2])
    assert x1 - x0 == y1 - y0
    # Whole zoom factors keep the label's pixels exact, so that any offset comes from the sampler.
    size = zoom * (x1 - x0)
    augment = None if spec is None else build_augmentation(spec, dims=2)
    ds = SliceDataset({"synthetic": [case]}, {"synthetic": 1.0}, size=size, length=16, seed=2,
                      lesion_fraction=1.0, augment=augment)
    offsets = []
    for i in range(16):
        item = ds[i]
        label = item["label"][0].numpy() > 0.5
        image = np.clip(item["image"][0].numpy(), 0, None)
        assert label.any()
        iou = (label & (image > 5.0)).sum() / (label | (image > 5.0)).sum()  # half a pixel of lesion
        assert iou > 0.75, iou
        # Intensity-weighted centroid: linear interpolation keeps it, thresholds of soft edges do not.
        weighted = (np.indices(image.shape) * image).reshape(2, -1).sum(1) / image.sum()
        offsets.append(np.argwhere(label).mean(0) - weighted)
    # Exact without augmentation. With it, nearest-neighbour labels gain or lose a pixel here and there,
    # which moves single centroids by a fraction of a pixel but not systematically; a real slip (a flip or
    # shift applied to one of them only, a half-pixel grid convention) would.
    offsets = np.array(offsets)
    assert np.abs(offsets).max() < (1e-3 if spec is None else 0.75)
    assert np.abs(offsets.mean(0)).max() < (1e-3 if spec is None else 0.15)


@pytest.mark.parametrize("size", [41, 48, 97])
def test_slice_labels_follow_the_image_through_any_resize(size):
    # A pixel is lesion when at least half of it is, in the label as in the (bilinearly resized) image.
    ds = SliceDataset({"synthetic": [aligned_case()]}, {"synthetic": 1.0}, size, 6, seed=0, lesion_fraction=1.0)
    for i in range(6):
        item = ds[i]
        assert np.array_equal(item["label"][0].numpy() > 0.5, item["image"][0].numpy() >= 5.0)


def test_patch_dataset_shapes_and_lesion_centring():
    case = toy_case(shape=(40, 44, 12))
    ds = PatchDataset({"s": [case]}, {"s": 1.0}, (8, 8, 4), length=30, seed=0, lesion_fraction=1.0, jitter=0.0)
    for i in range(30):
        item = ds[i]
        assert item["image"].shape == (2, 8, 8, 4) and item["label"].shape == (1, 8, 8, 4)
        assert item["label"][0, 4, 4, 2] == 1  # centred on a lesion voxel
    assert torch.equal(ds[3]["image"], ds[3]["image"])
    # Random brain patches: centred in the brain; a patch larger than the volume is padded with the
    # channels' outside value (-127 for the colour kinds).
    colour = toy_case(kind="colour", shape=(20, 22, 6))
    big = PatchDataset({"s": [colour]}, {"s": 1.0}, (24, 24, 8), length=5, seed=0, lesion_fraction=0.0)
    item = big[0]
    assert item["image"].shape == (3, 24, 24, 8)
    assert np.all(item["image"][:, 0].numpy() == -127) and item["label"][:, 0].sum() == 0
    brainy = PatchDataset({"s": [case]}, {"s": 1.0}, (4, 4, 2), length=20, seed=1, lesion_fraction=0.0, jitter=0)
    assert np.mean([float((brainy[i]["image"][0] != 0).float().mean()) for i in range(20)]) > 0.7


def test_3d_training_cases_move_to_the_isotropic_grid_of_inference():
    # A thick-slice case (1 x 1 x 3 mm) on 1 mm voxels: three times the slices, the same lesion and
    # brain volumes in ml, the lesions still where they were, and the colour kinds' outside value kept.
    for kind in ("flair_t1", "colour"):
        case = toy_case(kind=kind, shape=(40, 44, 12))
        iso = on_isotropic_grid(case, 1.0)
        assert iso.spacing == pytest.approx((1.0, 1.0, 1.0)) and iso.brain.shape == (40, 44, 36)
        assert iso.channels.shape == (case.channels.shape[0], 40, 44, 36) and iso.channels.dtype == np.float32
        assert iso.wmh.sum() * 1.0 == pytest.approx(case.wmh.sum() * 3.0, rel=0.2)
        assert iso.brain.sum() * 1.0 == pytest.approx(case.brain.sum() * 3.0, rel=0.05)
        assert iso.wmh[15, 17, 16] == 1 and iso.wmh[5, 5, 16] == 0  # slice 5 of 3 mm = 15-18 mm
        outside = case.channels[:, 0, 0, 0]
        np.testing.assert_allclose(iso.channels[:, 0, 0, 0], outside, atol=1e-4)
        np.testing.assert_allclose(iso.channels[:, 0, 0, -1], outside, atol=1e-4)
    assert on_isotropic_grid(iso, 1.0) is iso  # already there: unchanged


def test_samplers_with_augmentation_run_3d():
    case = toy_case(shape=(24, 24, 16))
    ds = PatchDataset({"s": [case]}, {"s": 1.0}, (16, 16, 16), length=3, seed=0, lesion_fraction=1.0,
                      augment=build_augmentation(dict(DEFAULT_SPEC, affine=1.0, anisotropy=1.0, elastic=0), dims=3))
    a, b = ds[1], ds[1]
    assert a["image"].shape == (2, 16, 16, 16) and set(np.unique(a["label"].numpy())) <= {0.0, 1.0}
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


# -------------------------------------------------------------------------------------- augmentation


def test_augmentation_keeps_labels_binary_and_shapes():
    flair, t1, brain, wmh = toy_volume((48, 48, 3))
    image = build_inputs("flair_t1", flair, t1, brain)[..., 1]
    label, mask = wmh[..., 1], brain[..., 1]
    everything = build_augmentation({k: 1.0 for k in DEFAULT_SPEC}, dims=2)
    assert everything.skipped == ["anisotropy", "motion"]
    state = torch.get_rng_state()
    for seed in range(4):
        out, lab = everything(image, label, seed=seed, brain=mask, background=[0, 0])
        assert out.shape == image.shape and out.dtype == np.float32
        assert lab.shape == label.shape and lab.dtype == label.dtype
        assert set(np.unique(lab)) <= {0, 1}
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    again, _ = everything(image, label, seed=3, brain=mask, background=[0, 0])
    assert np.array_equal(out, again)
    # Tensors in, tensors out, with a (1, H, W) label.
    out_t, lab_t = everything(torch.from_numpy(image), torch.from_numpy(label[None]), seed=1)
    assert isinstance(out_t, torch.Tensor) and tuple(lab_t.shape) == (1, 48, 48)


def test_intensity_only_augmentation_leaves_label_and_outside_alone():
    flair, t1, brain, wmh = toy_volume((48, 48, 3))
    image = build_inputs("colour", flair, t1, brain)[..., 1]
    label, mask = wmh[..., 1], brain[..., 1]
    spec = {"bias": 1.0, "gamma": 1.0, "noise": 1.0, "blur": 1.0, "ghosting": 1.0}
    augment = build_augmentation(spec, dims=2)
    out, lab = augment(image, label, seed=0, brain=mask, background=[-127, -127, -127])
    assert np.array_equal(lab, label)
    assert not np.allclose(out, image)
    assert np.all(out[:, mask == 0] == -127)
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augmentation({"rotate": 0.5})


# ------------------------------------------------------------------------------------ synthetic cache


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth_cache")
    kwargs = dict(profile="train", progress=False, work_spacing_mm=3.0, train_shape=(40, 48, 40), severity="severe")
    start = time.perf_counter()
    cases = synthetic_cases(2, 11, "flair_t1", folder, **kwargs)
    return folder, kwargs, cases, time.perf_counter() - start


def test_synthetic_cases_are_built_and_cached(synth_cache):
    folder, kwargs, cases, _ = synth_cache
    assert len(cases) == 2 and {c.source for c in cases} == {"synthetic"}
    for case in cases:
        assert case.channels.shape == (2, 40, 48, 40) and case.channels.dtype == np.float32
        assert case.wmh.dtype == np.uint8 and case.wmh.any() and case.brain.any()
        assert case.spacing == (3.0, 3.0, 3.0) and case.meta["seed"] == 11
        inside = case.brain > 0
        assert abs(case.channels[0][inside].mean()) < 0.01
    files = sorted(folder.iterdir())
    assert len(files) == 4 and not any(".part" in f.name for f in files)
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    again = synthetic_cases(2, 11, "flair_t1", folder, **kwargs)
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes  # reused, not regenerated
    assert all(np.array_equal(a.channels, b.channels) and np.array_equal(a.wmh, b.wmh) for a, b in zip(cases, again))
    # Another kind reuses the synthesised images and only adds its channel files.
    flair_only = synthetic_cases(2, 11, "flair", folder, **kwargs)
    assert flair_only[0].channels.shape[0] == 1
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes and len(list(folder.iterdir())) == 6
    # describe() is JSON-able and names the seeds.
    text = json.dumps(describe({"synthetic": cases}, {"synthetic": 1.0}))
    assert json.loads(text)["sources"]["synthetic"]["seeds"] == [11]


def test_synthetic_cases_feed_the_samplers(synth_cache):
    _, _, cases, _ = synth_cache
    # 64 pixels over a ~60-voxel brain box: one-voxel lesions must not vanish in the resize.
    ds = SliceDataset({"synthetic": cases}, {"synthetic": 1.0}, size=64, length=10, seed=0, lesion_fraction=1.0)
    assert all(ds[i]["label"].sum() > 0 for i in range(10))
    patches = PatchDataset({"synthetic": cases}, {"synthetic": 1.0}, (16, 16, 16), 10, 0, lesion_fraction=1.0)
    assert all(patches[i]["label"].sum() > 0 for i in range(10))


def test_white_matter_proxy_target_from_the_same_cache(synth_cache):
    folder, kwargs, cases, _ = synth_cache
    wm_cases = synthetic_cases(2, 11, "flair_t1", folder, target="wm", **kwargs)
    for lesions, wm in zip(cases, wm_cases):
        np.testing.assert_array_equal(lesions.channels, wm.channels)  # same brains, other labels
        assert wm.meta["target"] == "wm" and lesions.meta["target"] == "wmh"
        assert wm.wmh.sum() > 5 * lesions.wmh.sum() > 0
        assert not (wm.wmh.astype(bool) & (wm.brain == 0)).any()
        # Lesions sit in white matter.
        assert (lesions.wmh.astype(bool) & ~wm.wmh.astype(bool)).sum() < 0.05 * lesions.wmh.sum()
    with pytest.raises(ValueError, match="unknown synthetic target"):
        synthetic_cases(1, 11, "flair_t1", folder, target="gm", **kwargs)


def test_proxy_target_refuses_real_test_sets(tmp_path):
    from wmhkit.train.config import load_config
    from wmhkit.train.engine import load_sources

    config = load_config(None, ['data.target="wm"', 'data.test=["some/real/folder"]'])
    with pytest.raises(ValueError, match="proxy task"):
        load_sources(config, tmp_path, progress=False)


# ---------------------------------------------------------------------------------------- real cases


def test_real_cases_challenge_layout_drops_other_pathology(tmp_path):
    flair, t1, brain, wmh = toy_volume((20, 22, 8))
    labels = wmh.copy()
    labels[2:5, 2:5, 2:4] = 2
    affine = np.diag([-1.0, 1.0, 3.0, 1.0])  # LAS storage: real_cases must make it canonical
    case = tmp_path / "site" / "3"
    (case / "pre").mkdir(parents=True)
    write_nifti(case / "pre" / "FLAIR.nii.gz", flair, affine)
    write_nifti(case / "pre" / "T1.nii.gz", t1, affine)
    write_nifti(case / "wmh.nii.gz", labels, affine, np.uint8)
    write_nifti(case / "brainmask.nii.gz", brain, affine, np.uint8)
    (found,) = real_cases(tmp_path, "flair_t1")
    assert found.name == "site_3" and found.source == "real"
    assert found.channels.shape == (2, 20, 22, 8)
    assert found.wmh.sum() == wmh.sum()  # label 2 is not WMH
    assert np.array_equal(found.wmh, wmh[::-1])  # flipped into RAS order
    assert found.spacing == (1.0, 1.0, 3.0)
    no_t1 = tmp_path / "flair_only" / "x"
    (no_t1 / "pre").mkdir(parents=True)
    write_nifti(no_t1 / "pre" / "FLAIR.nii.gz", flair, affine)
    write_nifti(no_t1 / "wmh.nii.gz", wmh, affine, np.uint8)
    write_nifti(no_t1 / "brainmask.nii.gz", brain, affine, np.uint8)
    assert real_cases(tmp_path / "flair_only", "flair")[0].channels.shape[0] == 1
    with pytest.raises(ValueError, match="no T1"):
        real_cases(tmp_path / "flair_only", "flair_t1")


@requires_shared_data("open_ms", "labeled_mni")
def test_real_cases_open_ms_labeled():
    from wmhkit.datasets import open_ms_labeled

    record = open_ms_labeled(SHARED_DATA / "open_ms" / "labeled_mni")[0]
    (case,) = real_cases([record], "flair")
    assert case.channels.shape == (1, 182, 218, 182)
    assert set(np.unique(case.wmh)) == {0, 1} and case.wmh[case.brain == 0].sum() == 0
    # Skull-stripped: the brain is the filled non-zero FLAIR.
    assert 900_000 < case.brain.sum() < 1_600_000
    item = SliceDataset({"real": [case]}, {"real": 1.0}, 64, 4, 0, lesion_fraction=1.0)[0]
    assert item["label"].sum() > 0

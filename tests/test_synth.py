"""Tests of the synthetic training-data engine (`wmhkit.synth`) and `wmhkit synth`.

Fast settings: the training profile on a small coarse grid, and the clinical/research profiles with a
2 mm working grid (their output grids keep the full declared geometry).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from wmhkit.cli import main
from wmhkit.synth import generate_sample, sample_rng
from wmhkit.synth.geometry import (
    CLINICAL_INPLANE_MM,
    CLINICAL_MATRICES,
    CLINICAL_SLICE_MM,
    RESEARCH_MATRICES,
    RESEARCH_SPACING_MM,
    sample_geometry,
)
from wmhkit.synth.lesions import HELD_OUT_PATIENTS, load_library

FAST = dict(profile="train", work_spacing_mm=2.5, train_shape=(64, 80, 64))
ARRAYS = ("flair", "t1", "wmh", "brainmask", "tissue")


def _wm(sample) -> np.ndarray:
    return np.isin(sample.tissue, sample.meta["wm_labels"])


def test_same_seed_identical_different_seed_differs():
    a = generate_sample(11, **FAST)
    b = generate_sample(11, **FAST)
    c = generate_sample(12, **FAST)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.meta == b.meta
    assert not np.array_equal(a.flair, c.flair)
    # The index gives independent cases under one seed.
    d = generate_sample(11, index=1, **FAST)
    assert not np.array_equal(a.flair, d.flair)


def test_rng_streams_are_per_seed_and_index():
    assert sample_rng(1, 0).random() == sample_rng(1, 0).random()
    assert sample_rng(1, 0).random() != sample_rng(1, 1).random()


@pytest.mark.parametrize("profile,seed", [("clinical2d", 3), ("research3d", 4)])
def test_output_grid_agreement_and_lesions_in_white_matter(profile, seed):
    s = generate_sample(seed, profile, work_spacing_mm=2.0, severity="severe")
    shape = tuple(s.meta["shape"])
    for name in ARRAYS:
        assert getattr(s, name).shape == shape, name
    np.testing.assert_allclose(np.linalg.norm(s.affine[:3, :3], axis=0), s.meta["voxel_size_mm"], rtol=1e-3)
    assert s.meta["profile"] == profile
    assert set(np.unique(s.wmh)) <= {0, 1} and set(np.unique(s.brainmask)) <= {0, 1}
    wmh = s.wmh > 0
    assert wmh.sum() > 0
    assert not (wmh & (s.brainmask == 0)).any()
    # Skull-stripped by default: nothing outside the brain mask.
    assert not s.flair[s.brainmask == 0].any() and not s.t1[s.brainmask == 0].any()
    # Lesions live in white matter; resampling to the output grid moves the border by < 1 voxel.
    wm_near = ndi.binary_dilation(_wm(s), iterations=1)
    assert (wmh & wm_near).sum() / wmh.sum() >= 0.95
    assert (wmh & _wm(s)).sum() / wmh.sum() >= 0.85
    # Count and volume in meta are those of the written label.
    n = ndi.label(wmh, structure=np.ones((3, 3, 3)))[1]
    assert s.meta["lesion_count"] == n
    vox_ml = abs(np.linalg.det(s.affine[:3, :3])) / 1000
    assert s.meta["lesion_volume_ml"] == pytest.approx(wmh.sum() * vox_ml, rel=1e-3)
    # FLAIR: lesions brighter than white matter.
    wm_only = _wm(s) & ~ndi.binary_dilation(wmh, iterations=2) & (s.brainmask > 0)
    assert np.median(s.flair[wmh]) > np.median(s.flair[wm_only])


def test_training_grid_lesions_strictly_in_white_matter():
    for seed in range(3):
        s = generate_sample(seed, severity="severe", **FAST)
        wmh = s.wmh > 0
        assert wmh.any()
        assert not (wmh & ~_wm(s)).any()
        assert not (wmh & (s.brainmask == 0)).any()


def test_lesion_free_and_lesional_samples_both_occur():
    # 40 cases: with a median load of a few ml, 20 cases put the sample median above 10 ml too often.
    loads = [generate_sample(seed, **FAST).meta for seed in range(40)]
    free = [m for m in loads if m["lesion_severity"] == "none"]
    assert free and all(m["lesion_volume_ml"] == 0 and m["lesion_count"] == 0 for m in free)
    assert sum(m["lesion_volume_ml"] > 0 for m in loads) >= 20
    # Skewed towards small loads, with a heavy tail.
    volumes = sorted(m["lesion_volume_ml"] for m in loads)
    assert volumes[len(volumes) // 2] < 10
    assert volumes[len(volumes) // 4] < 1 and volumes[-1] > 15


def test_validation_patients_never_lend_lesions_and_others_do():
    used = set()
    for seed in range(6):
        used |= set(generate_sample(seed, severity="severe", **FAST).meta["lesion_real_patients"])
    assert used, "severe samples should paste real lesion components"
    assert not used & set(HELD_OUT_PATIENTS)


def test_random_contrast_share_is_obeyed_without_changing_the_anatomy():
    plain = generate_sample(3, random_contrast_share=0.0, **FAST)
    random = generate_sample(3, random_contrast_share=1.0, **FAST)
    assert plain.meta["random_contrast"] is False and random.meta["random_contrast"] is True
    np.testing.assert_array_equal(plain.wmh, random.wmh)
    assert not np.allclose(plain.flair, random.flair)


def test_skull_flag_keeps_non_brain_tissue():
    s = generate_sample(5, skull=True, **FAST)
    assert s.flair[s.brainmask == 0].max() > 0
    assert s.meta["skull"] is True


def test_air_around_most_skull_on_heads_is_zero_and_noisy_in_some():
    from wmhkit.synth import BACKGROUND_NOISE_SHARE

    zero_air, noisy_air = 0, 0
    n = 30  # a binomial share: 12 seeds happen to draw no noisy air
    for seed in range(n):
        s = generate_sample(seed, skull=True, **FAST)
        far_air = ~ndi.binary_dilation(s.tissue > 0, iterations=5)
        assert far_air.sum() > 1000
        if np.all(s.flair[far_air] == 0):
            zero_air += 1
        elif (s.flair[far_air] > 0).mean() > 0.9:  # Rician noise: air is never exactly 0
            noisy_air += 1
    assert zero_air + noisy_air == n
    assert zero_air >= n * (1 - BACKGROUND_NOISE_SHARE) - 7 and noisy_air >= 2


def test_band_limited_noise_has_unit_variance_and_sinc_shaped_correlation():
    from wmhkit.synth import _correlated_noise

    noise = _correlated_noise(np.random.default_rng(0), (96, 96, 40), (0.65, 0.65, 1.0))
    assert abs(float(noise.std()) - 1.0) < 0.03
    lag = {(a, k): float(np.mean(noise * np.roll(noise, k, axis=a))) for a in range(3) for k in (1, 2)}
    # A low-pass at 0.65 of the band correlates as sinc(0.65 k) (0.44 at lag 1, -0.20 at lag 2; the
    # window softens that to 0.49 and -0.14), as the real clinical FLAIRs do (0.44-0.56 and -0.14 to
    # -0.24); a Gaussian correlation with the same lag 1 would give +0.06 at lag 2.
    for axis in (0, 1):
        assert 0.42 < lag[axis, 1] < 0.56
        assert -0.25 < lag[axis, 2] < -0.1
    assert abs(lag[2, 1]) < 0.03  # the full band: white


def test_edge_enhancement_lines_a_dark_cavity_with_a_bright_rim_and_leaves_flat_tissue():
    from wmhkit.synth.fields import edge_enhance

    # A CSF-dark box (0.15) in white matter (1.0), 1 mm voxels, softened as a point spread would.
    volume = np.ones((40, 40, 40), np.float32)
    volume[15:25, 15:25, 15:25] = 0.15
    volume = ndi.gaussian_filter(volume, 0.8)
    sharp = edge_enhance(volume, 1.5, 1.0)
    row = sharp[25:34, 20, 20]  # outward from the box's wall
    assert row.max() > 1.05 and row.argmax() <= 3  # a bright lining within 3 mm of the wall ...
    assert abs(float(sharp[2, 2, 2]) - 1.0) < 1e-4  # ... and none far from any edge
    assert sharp.min() >= 0.0 and sharp[20, 20, 20] <= volume[20, 20, 20] + 1e-6


@pytest.mark.parametrize("profile", ["clinical2d", "research3d", "train"])
def test_each_profiles_share_of_cases_is_edge_enhanced_and_records_the_draw(profile):
    from wmhkit.synth import EDGE_ENHANCE_AMOUNT, EDGE_ENHANCE_SHARE, _edge_enhancement

    share = EDGE_ENHANCE_SHARE[profile]
    image = np.zeros((12, 12, 12), np.float32)
    image[6:] = 1.0
    records, changed = [], 0
    rng = np.random.default_rng(4)
    for _ in range(200):
        record: dict = {}
        (out,) = _edge_enhancement(rng, [image], np.ones(3), record, share)
        records.append(record)
        changed += not np.array_equal(out, image)
    amounts = np.array([r["edge_enhance"] for r in records])
    assert changed == int((amounts > 0).sum())
    assert abs(changed / 200 - share) < 0.1
    assert EDGE_ENHANCE_AMOUNT[0] <= amounts[amounts > 0].min() and amounts.max() <= EDGE_ENHANCE_AMOUNT[1]


def test_a_generated_case_records_its_edge_enhancement_draw():
    sample = generate_sample(7, **FAST)
    assert "edge_enhance" in sample.meta["acquisition"]


def test_noise_scales_with_voxel_volume():
    from wmhkit.synth import NOISE_REFERENCE_VOXEL_MM3, _voxel_snr_factor

    def factor(spacing, profile="clinical2d"):
        return _voxel_snr_factor(SimpleNamespace(profile=profile, spacing=spacing))

    reference = NOISE_REFERENCE_VOXEL_MM3["clinical2d"]
    assert factor((1.0, 1.0, reference)) == pytest.approx(1.0)
    assert factor((1.0, 1.0, 4 * reference)) == pytest.approx(0.5)  # four times the signal per voxel
    assert factor((0.45, 0.45, 3.0)) > 1.0 > factor((1.0, 1.0, 8.0))
    assert factor((1.0, 1.0, 1.0), "train") == 1.0


def test_a_finer_clinical_matrix_interpolates_the_same_acquisition():
    # 512 and 320 matrices over one FOV, both acquired at 1 mm: the finer one's noise has the narrower
    # band (no sub-millimetre speckle) and the same per-voxel SD, not the 1.6 x of a true 0.45 mm voxel.
    from wmhkit.synth import _voxel_snr_factor, clinical_noise_band

    def grid(inplane):
        return SimpleNamespace(profile="clinical2d", spacing=(inplane, inplane, 3.0), slice_axis=2)

    fine, usual = grid(0.45), grid(0.72)
    band_fine, band_usual = clinical_noise_band(fine, 1.0), clinical_noise_band(usual, 1.0)
    assert band_fine == pytest.approx([0.45, 0.45, 1.0])
    assert band_usual == pytest.approx([0.72, 0.72, 1.0])
    assert _voxel_snr_factor(fine, band_fine) == pytest.approx(_voxel_snr_factor(usual, band_usual))
    assert _voxel_snr_factor(usual, band_usual) == pytest.approx(1.0)  # where NOISE_SIGMA was matched
    assert _voxel_snr_factor(fine) > 1.5  # the old rule: the output voxel's own volume
    # A coarse matrix is not sharper than the scanner's filter allows.
    assert clinical_noise_band(grid(1.0), 0.9)[:2] == pytest.approx([0.8, 0.8])


def test_fine_clinical_matrices_have_band_limited_noise():
    from wmhkit.synth import CLINICAL2D_FINEST_ACQUIRED_MM, CLINICAL2D_KSPACE_FRACTION

    seen = 0
    for index in range(60):
        s = generate_sample(5, "clinical2d", index=index, work_spacing_mm=3.0, severity="mild")
        inplane = min(s.meta["voxel_size_mm"][:2])
        band = s.meta["acquisition"]["noise_kspace_fraction"]
        acquired = s.meta["acquisition"]["acquired_inplane_mm"]
        assert acquired >= CLINICAL2D_FINEST_ACQUIRED_MM - 1e-3
        assert band[:2] == pytest.approx([inplane / acquired] * 2, abs=2e-3)
        assert band[2] == 1.0
        if inplane < 0.5:  # a 448-512 matrix: interpolated from >= 0.75 mm
            seen += 1
            assert band[0] <= 0.5 / CLINICAL2D_FINEST_ACQUIRED_MM + 1e-3
        else:
            assert band[0] <= CLINICAL2D_KSPACE_FRACTION[1] + 1e-3
    assert seen >= 3


def _neighbour_correlation(values: np.ndarray, keep: np.ndarray, axis: int) -> float:
    pairs = keep & np.roll(keep, 1, axis=axis)
    return float(np.corrcoef(values[pairs], np.roll(values, 1, axis=axis)[pairs])[0, 1])


def test_clinical_noise_is_correlated_in_plane_and_not_across_slices():
    # The noisy air of a skull-on case is noise alone: it shows the noise's correlation without anatomy.
    for seed in range(40):
        s = generate_sample(seed, "clinical2d", skull=True, work_spacing_mm=2.5)
        far_air = ~ndi.binary_dilation(s.tissue > 0, iterations=5)
        if (s.flair[far_air] > 0).mean() > 0.9:
            break
    else:
        pytest.fail("no skull-on clinical case with noisy air in 40 seeds")
    axis = s.meta["slice_axis"]
    band = s.meta["acquisition"]["noise_kspace_fraction"]
    assert band[axis] == 1.0 and max(c for i, c in enumerate(band) if i != axis) <= 0.8
    in_plane = [_neighbour_correlation(s.flair, far_air, a) for a in range(3) if a != axis]
    assert min(in_plane) > 0.08  # white noise: ~0
    assert abs(_neighbour_correlation(s.flair, far_air, axis)) < 0.03


def test_clinical_slices_are_mostly_3_to_5_mm_with_a_thick_tail():
    spacing = np.array([sample_geometry(sample_rng(seed), "clinical2d").spacing[2] for seed in range(400)])
    assert 3.9 <= np.median(spacing) <= 4.6  # uniform 3-8 mm would give 5.5
    assert 0.15 <= (spacing > 6.0).mean() <= 0.32
    assert spacing.max() > 7.5 and spacing.min() < 3.1


@pytest.mark.parametrize("seed", range(40))
def test_profiles_declare_their_geometry(seed):
    rng = sample_rng(seed)
    g = sample_geometry(rng, "clinical2d")
    sx, sy, sz = g.spacing
    assert g.slice_axis == 2 and g.world_axes[2] == 2  # axial slices
    assert CLINICAL_INPLANE_MM[0] - 1e-9 <= sx == sy <= CLINICAL_INPLANE_MM[1] + 1e-9
    assert CLINICAL_SLICE_MM[0] <= sz <= CLINICAL_SLICE_MM[1]
    assert 0.8 * sz - 1e-9 <= g.slice_thickness_mm <= sz + 1e-9
    assert max(g.shape[:2]) in CLINICAL_MATRICES and 14 <= g.shape[2] <= 60
    np.testing.assert_allclose(np.linalg.norm(g.affine[:3, :3], axis=0), g.spacing)
    r = sample_geometry(rng, "research3d")
    assert RESEARCH_SPACING_MM[0] <= r.spacing[0] <= RESEARCH_SPACING_MM[1]
    assert np.all(r.spacing == r.spacing[0])
    assert sorted(r.shape) in [sorted(m) for m in RESEARCH_MATRICES]
    np.testing.assert_allclose(np.linalg.norm(r.affine[:3, :3], axis=0), r.spacing)
    assert sample_geometry(rng, "mixed").profile in ("clinical2d", "research3d")


def test_lesion_library_is_complete():
    lib = load_library()
    assert set(np.unique(lib["patient"])) == set(range(1, 31))
    assert lib["voxels"].min() >= 1 and len(lib["voxels"]) == len(lib["shapes"])
    # Normalised to the brain-mask bounding box (a few consensus lesions lie partly outside the mask).
    assert np.all((lib["centroid"] >= -0.25) & (lib["centroid"] <= 1.25))


def test_cli_writes_challenge_layout_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["synth", "-n", "2", "-o", str(out), "--seed", "3", "--profile", "clinical2d", "--work-spacing", "2"]
    assert main(args) == 0
    cases = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(cases) == 2
    for case in cases:
        for f in ("pre/FLAIR.nii.gz", "pre/T1.nii.gz", "wmh.nii.gz", "brainmask.nii.gz", "tissue.nii.gz"):
            img = nib.load(str(case / f))
            assert img.shape == nib.load(str(case / "wmh.nii.gz")).shape
            np.testing.assert_allclose(img.affine, nib.load(str(case / "wmh.nii.gz")).affine)
        meta = json.loads((case / "meta.json").read_text())
        for key in ("seed", "profile", "age", "skull", "lesion_volume_ml", "lesion_count", "lesion_shape_sources",
                    "voxel_size_mm", "shape", "flair_lesion_wm_contrast", "tissue_labels", "ventricle_labels"):
            assert key in meta, key
        assert meta["seed"] == 3 and meta["profile"] == "clinical2d"
        assert list(nib.load(str(case / "pre/FLAIR.nii.gz")).shape) == meta["shape"]
        assert "csf_lateral_ventricle" in meta["tissue_labels"].values()
    first = (cases[0] / "pre/FLAIR.nii.gz").read_bytes()
    first_voxels = np.asanyarray(nib.load(str(cases[0] / "pre/FLAIR.nii.gz")).dataobj).copy()
    capsys.readouterr()
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert (cases[0] / "pre/FLAIR.nii.gz").read_bytes() == first
    # --force regenerates bit-identical data (determinism through the CLI).
    assert main(args + ["--force"]) == 0
    assert np.array_equal(np.asanyarray(nib.load(str(cases[0] / "pre/FLAIR.nii.gz")).dataobj), first_voxels)


def test_cli_help_has_example(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "wmhkit synth -n 20" in capsys.readouterr().out


def test_dataset_items_are_reproducible_whatever_the_workers():
    import torch

    from wmhkit.synth.dataset import SynthDataset, make_loader

    ds = SynthDataset(length=2, seed=4, shape=(48, 56, 48), spacing_mm=3.5)
    item = ds[1]
    assert item["image"].shape == (2, 48, 56, 48) and item["image"].dtype == torch.float32
    assert item["wmh"].shape == (1, 48, 56, 48) and item["tissue"].shape == (48, 56, 48)
    assert 0.0 <= float(item["age"]) <= 1.0
    assert not (item["wmh"].bool() & ~item["brainmask"].bool()).any()
    serial = [b["image"] for b in make_loader(ds, num_workers=0)]
    parallel = [b["image"] for b in make_loader(ds, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))
    assert torch.equal(serial[1][0], item["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], item["image"])
    with pytest.raises(IndexError):
        ds[2]

"""Tests of the realism details of `wmhkit.synth`: atlas repairs, partial volume, smooth brain edge,
bias cap, scalp thinning and the gyral-scale deformation (each could silently regress)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import REPO, SHARED_DATA, requires_shared_data
from wmhkit import synth
from wmhkit.synth import generate_sample, sample_rng
from wmhkit.synth.anatomy import (
    ATLAS_CEPHALIC_INDEX,
    CEPHALIC_INDEX_QUANTILES,
    CORTEX_CLASSES,
    NONBRAIN_CLASSES,
    PITCH_CENTRE_DEG,
    SCALP_DEPTH_MM,
    WM_CLASSES,
    add_scalp_fat,
    apply_atrophy,
    load_atlas,
    random_spatial_params,
    warp_atlas,
)
from wmhkit.synth.contrast import (
    BIAS_SIGMA_MAX,
    BIAS_SIGMA_MAX_RANDOM,
    CLINICAL2D_CORTEX_FLAIR,
    CLINICAL2D_STRIATUM_FLAIR,
    CLASS_RANGES,
    CORTEX_CLASSES,
    GROUP_RANGES,
    LESION_FLAIR,
    LESION_FLAIR_SUBTLE,
    _scalp_vessel_mask,
    draw_contrast,
    render,
)

# A 1 mm training grid over the middle of the brain: real sulcal scale, ~1 s a case.
MID = dict(profile="train", work_spacing_mm=1.0, train_shape=(96, 112, 80))


def test_atlas_has_no_background_pockets_under_the_skull():
    # Colin27 left a background band between the dura and the bone behind the right parietal lobe
    # (a black notch in every skull-on case); the atlas build fills such pockets with bone.
    atlas = load_atlas()
    head = atlas.labels > 0
    gap = ndi.binary_closing(head, structure=np.ones((3, 3, 3)), iterations=4) & ~head
    near_dura = ndi.binary_dilation(atlas.labels == atlas.id("dura_meninges"), structure=np.ones((3, 3, 3)))
    assert not (gap & near_dura).any()


def test_sulcal_csf_fraction_is_soft_and_follows_the_labels():
    atlas = load_atlas()
    assert 0.0 <= atlas.csf_frac.min() and atlas.csf_frac.max() <= 1.0
    rng = sample_rng(3)
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    grid[:3, 3] = [-48.0, -56.0, -30.0]
    anat = warp_atlas(rng, grid, (96, 112, 80), random_spatial_params(rng))
    sulcal = anat.labels == atlas.id("csf_sulcal_extracerebral")
    wm = np.isin(anat.labels, atlas.ids(("wm_deep",)))
    # Thin sulci are partly cortex: the fraction there is between the pure classes, not 0/1.
    assert 0.35 < np.median(anat.csf_frac[sulcal]) < 0.95
    assert np.median(anat.csf_frac[wm]) < 0.02


@requires_shared_data("templates", "ch2bet.nii.gz")
def test_sulci_left_as_cortex_by_the_segmentation_carry_their_csf_share():
    # Colin27's T1 shows most sulci as darker lines inside what its segmentation calls cortex; the
    # atlas's CSF fraction there must follow the T1, or those sulci vanish from every rendered case.
    build = _build_script()
    atlas = load_atlas()
    t1 = build.colin_t1_on_atlas_grid(SHARED_DATA, atlas.labels.shape, atlas.affine)
    cortex = np.isin(atlas.labels, atlas.ids(CORTEX_CLASSES))
    t1 = ndi.gaussian_filter(t1, 0.5)
    dark = cortex & (t1 < 68)  # well below the cortex's own 75-90
    # Away from CSF labels, where their smoothed mask alone gives the fraction 0.
    unlabelled = dark & ~ndi.binary_dilation(atlas.labels == atlas.id("csf_sulcal_extracerebral"))
    assert unlabelled.sum() > 500  # 853 since the fused banks were opened (medial_sulci), 1612 before
    assert np.median(atlas.csf_frac[unlabelled]) > 0.15
    assert np.median(atlas.csf_frac[dark]) > 0.18  # 0.11 from the CSF labels alone
    assert np.median(atlas.csf_frac[cortex & (t1 > 82)]) < 0.01


def _build_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_synth_assets", REPO / "scripts" / "build_synth_assets.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def test_fused_sulcal_banks_are_split_midway_and_a_plain_ribbon_is_not():
    build = _build_script()
    wm, cortex = build.ID["wm_deep"], build.ID["gm_cortex_frontal"]
    labels = np.zeros((40, 12, 12), np.uint8)
    # Two white-matter folds with a 7 mm grey-matter tongue between them (a closed sulcus), then a
    # plain 4 mm ribbon over the second fold's far side, open to the outside.
    labels[:12], labels[12:19], labels[19:30], labels[30:34] = wm, cortex, wm, cortex
    medial = build.medial_sulci(labels)
    assert medial[15].all()  # the plane midway between the folds, 4 mm from each
    assert medial.sum() == medial[15].sum()  # one voxel thick, nothing in the open ribbon
    # A thinner tongue (two 2 mm banks touching) is a closed sulcus as well.
    labels[:] = wm
    labels[12:16] = cortex
    medial = build.medial_sulci(labels)
    assert medial[12:16].any(axis=0).all() and medial.sum() == 12 * 12


def test_the_atlas_cortex_is_a_ribbon_within_reach_of_white_matter_or_csf():
    # Colin27, an average of 27 scans, shows closed sulci as 5-7 mm grey-matter tongues; the atlas build
    # opens them (build_synth_assets.medial_sulci). Without that, 3.6 % of the cortex lay more than
    # 2.5 mm from both white matter and CSF and rendered as thick bright blobs.
    atlas = load_atlas()
    labels = atlas.labels
    cortex = np.isin(labels, atlas.ids(CORTEX_CLASSES))
    wm = np.isin(labels, atlas.ids(WM_CLASSES))
    outside = np.isin(labels, [0, atlas.id("csf_sulcal_extracerebral")] + atlas.ids(NONBRAIN_CLASSES))
    reach = np.minimum(ndi.distance_transform_edt(~wm), ndi.distance_transform_edt(~outside))[cortex]
    assert np.mean(reach > 2.5) < 0.015


def test_cortex_white_matter_boundary_renders_as_a_blend():
    # Boundary voxels hold both tissues: labelled WM with a GM share near one half, they must render
    # between pure WM and pure cortex, not at the WM level their label alone would give.
    atlas = load_atlas()
    assert atlas.gm_share.max() <= 1.0 and (atlas.gm_share > 0).any()
    rng = sample_rng(5)
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    grid[:3, 3] = [-48.0, -56.0, -30.0]
    anat = warp_atlas(rng, grid, (96, 112, 80), random_spatial_params(rng))
    contrast = draw_contrast(rng, random_contrast=False)
    contrast.update(texture=0.0, bias_sigma=0.0, coil_gain=[0.0, 0.0], vessels=0, flow_artefact=0.0, pv_gradient=0.0, jc_gradient=0.0,
                    ependymal_rim=0.0, wm_regional=0.0)
    flair, _ = render(rng, anat, np.zeros(anat.labels.shape, np.float32), contrast, 1.0)
    wm = (anat.labels == atlas.id("wm_juxtacortical")) & (anat.csf_frac < 0.02)
    cortex = (anat.labels == atlas.id("gm_cortex_frontal")) & (anat.csf_frac < 0.02)
    pure_wm = np.median(flair[wm & (anat.gm_share == 0)])
    pure_gm = np.median(flair[cortex & (anat.gm_share > 0.95)])
    mixed = np.median(flair[wm & (anat.gm_share > 0.3) & (anat.gm_share < 0.45)])
    assert pure_gm > pure_wm * 1.05
    share = (mixed - pure_wm) / (pure_gm - pure_wm)
    assert 0.2 < share < 0.6, share


def test_ventricle_wall_voxels_render_by_the_share_the_surface_cuts_off():
    # On a rotated grid the ventricles' surface passes through voxels at every offset: their signed
    # distance must be sub-voxel (not the atlas's whole-voxel steps) and their intensity the blend of
    # CSF and white matter in that proportion, so the wall is smooth rather than a staircase.
    atlas = load_atlas()
    rng = sample_rng(6)
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    grid[:3, 3] = [-48.0, -56.0, -30.0]
    params = random_spatial_params(rng)
    params["matrix"] = params["matrix"] @ np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])
    anat = warp_atlas(rng, grid, (96, 112, 80), params)
    vent = np.isin(anat.labels, atlas.ids(("csf_lateral_ventricle",)))
    wm = anat.labels == atlas.id("wm_periventricular")
    wall = ndi.binary_dilation(vent) & wm
    offsets = anat.vent_surface[wall]
    assert np.unique(np.round(offsets, 2)).size > 20  # the atlas alone gives 0.5 mm steps
    contrast = draw_contrast(rng, random_contrast=False)
    contrast.update(texture=0.0, bias_sigma=0.0, coil_gain=[0.0, 0.0], vessels=0, flow_artefact=0.0, pv_gradient=0.0,
                    jc_gradient=0.0, ependymal_rim=0.0, wm_regional=0.0)
    flair, _ = render(rng, anat, np.zeros(anat.labels.shape, np.float32), contrast, 1.0)
    pure_wm = np.median(flair[wm & (anat.vent_surface > 1.0) & (anat.vent_surface < 3.0) & (anat.gm_share == 0)])
    pure_csf = np.median(flair[vent & (anat.vent_surface < -1.0)])
    for lo, hi in ((0.0, 0.2), (0.2, 0.4)):  # CSF share 0.5-0.3 and 0.3-0.1
        level = np.median(flair[wall & (anat.vent_surface > lo) & (anat.vent_surface < hi) & (anat.csf_frac < 0.02)])
        share = (pure_wm - level) / (pure_wm - pure_csf)
        assert 0.5 - hi - 0.1 < share < 0.5 - lo + 0.1, (lo, share)


def _mid_brain_without_distractors(seed: int):
    """(anatomy, contrast) on a 1 mm grid over the middle of the brain, with the draw's texture, bias,
    coil gain, vessels, CSF flow and tissue noise turned off, so that one effect can be measured alone."""
    rng = sample_rng(seed)
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    grid[:3, 3] = [-48.0, -56.0, -30.0]
    anat = warp_atlas(rng, grid, (96, 112, 80), random_spatial_params(rng))
    contrast = draw_contrast(rng, random_contrast=False)
    drawn = dict(contrast)
    contrast.update(texture=0.0, bias_sigma=0.0, coil_gain=[0.0, 0.0], vessels=0, flow_artefact=0.0)
    contrast["flair_std"] = contrast["flair_std"] * 0
    contrast["t1_std"] = contrast["t1_std"] * 0
    return anat, contrast, drawn


def test_white_matter_varies_regionally_by_the_drawn_sd_brighter_on_flair_where_darker_on_t1():
    atlas = load_atlas()
    anat, contrast, drawn = _mid_brain_without_distractors(7)
    assert 0.04 <= drawn["wm_regional"] <= 0.1
    # Without the tissue noise and gradients the regional field is deep WM's only variation.
    contrast.update(pv_gradient=0.0, jc_gradient=0.0, ependymal_rim=0.0, wm_regional_scale_mm=12.0)
    deep = ndi.binary_erosion(anat.labels == atlas.id("wm_deep"), iterations=3)
    spread = {}
    for sd in (0.0, 0.08):
        contrast["wm_regional"] = sd
        flair, t1 = render(sample_rng(1), anat, np.zeros(anat.labels.shape, np.float32), contrast, 1.0)
        spread[sd] = float(np.std(flair[deep]) / np.median(flair[deep]))
    assert spread[0.0] < 0.01 and 0.04 < spread[0.08] < 0.12, spread
    assert np.corrcoef(flair[deep], t1[deep])[0, 1] < -0.9


def test_a_lesion_stands_out_from_its_own_white_matter_by_the_drawn_contrast_in_the_halo_too():
    atlas = load_atlas()
    anat, contrast, drawn = _mid_brain_without_distractors(8)
    assert LESION_FLAIR_SUBTLE[0] <= drawn["lesion_flair_contrast"] <= LESION_FLAIR[1]
    # A strong normal periventricular rise: the white matter a periventricular lesion replaces is brighter
    # than deep white matter, and the lesion must still stand out from it by its contrast.
    contrast.update(pv_gradient=0.3, wm_regional=0.0, lesion_heterogeneity=0.0, lesion_flair_contrast=0.2)
    wm = np.isin(anat.labels, atlas.ids(WM_CLASSES))
    near = wm & (anat.d_vent <= 2.0)
    far = wm & (anat.d_vent >= 15.0)
    assert near.sum() > 50 and far.sum() > 50
    fraction = np.zeros(anat.labels.shape, np.float32)
    fraction[near] = 1.0
    fraction[far] = 0.5
    plain, _ = render(sample_rng(2), anat, np.zeros_like(fraction), contrast, 1.0)
    lesional, _ = render(sample_rng(2), anat, fraction, contrast, 1.0)
    assert np.median(plain[near]) > 1.1 * np.median(plain[far])  # the halo is there
    np.testing.assert_allclose(lesional[near] / plain[near], 1.2, rtol=1e-3)
    np.testing.assert_allclose(lesional[far] / plain[far], 1.1, rtol=1e-3)  # half the voxel is lesion


def test_thin_sulci_render_grey_not_as_dark_as_ventricles():
    ratios = []
    for seed in range(8):
        s = generate_sample(seed, **MID)
        if s.meta["random_contrast"]:
            continue
        names = {v: int(k) for k, v in s.meta["tissue_labels"].items()}
        sulcal = s.tissue == names["csf_sulcal_extracerebral"]
        # The ventricles' inside: their wall voxels are partial volumes (most of a young case's slit).
        vent = ndi.binary_erosion(s.tissue == names["csf_lateral_ventricle"])
        wm = np.isin(s.tissue, s.meta["wm_labels"]) & (s.wmh == 0)
        sulcal_level = np.median(s.flair[sulcal]) / np.median(s.flair[wm])
        vent_level = np.median(s.flair[vent]) / np.median(s.flair[wm])
        ratios.append(sulcal_level / vent_level)
        # Still CSF: darker than white matter.
        assert sulcal_level < 0.95
    assert len(ratios) >= 4
    assert min(ratios) > 1.5


@pytest.mark.parametrize("profile,seed,roughness", [("clinical2d", 21, 0.045), ("research3d", 22, 0.25)])
def test_stripped_image_is_zero_outside_a_smooth_brain_mask(profile, seed, roughness):
    s = generate_sample(seed, profile, work_spacing_mm=1.0, severity="mild")
    lo, hi = synth.NOISE_SIGMA[profile]  # research 3D FLAIRs are less noisy than clinical 2D ones
    # ... at the profile's reference voxel; the grid's own voxel volume scales it.
    voxel = SimpleNamespace(profile=profile, spacing=s.meta["voxel_size_mm"])
    # ... on clinical 2D grids the acquired voxel's (meta rounds the band to 3 decimals, sigma to 4)
    band = s.meta["acquisition"]["noise_kspace_fraction"] if profile == "clinical2d" else None
    assert 0.995 * lo <= s.meta["noise_sigma_rel_wm"] / synth._voxel_snr_factor(voxel, band) <= 1.005 * hi
    mask = s.brainmask > 0
    assert not s.flair[~mask].any() and not s.t1[~mask].any()
    assert not (s.wmh.astype(bool) & ~mask).any()
    # Smooth edge: a ~3 mm majority (median) filter changes few voxels per surface voxel. The mask of
    # the labels' nearest-neighbour voxels (no smoothing) gives about 3x these numbers (0.086 and 0.35).
    spacing = np.asarray(s.meta["voxel_size_mm"])
    size = [max(3, 2 * int(round(1.5 / sp)) + 1) for sp in spacing]
    if s.meta["slice_axis"] is not None:
        size[s.meta["slice_axis"]] = 1
    majority = ndi.median_filter(mask.astype(np.uint8), size=size) > 0
    surface = mask & ~ndi.binary_erosion(mask)
    assert (mask != majority).sum() / surface.sum() < roughness


def test_brain_mask_smoothing_bridges_one_voxel_notches():
    cube = np.zeros((30, 30, 30), bool)
    cube[5:25, 5:25, 5:25] = True
    cube[14, 5:25, 5:10] = False  # a thin cleft into the surface
    smooth = synth.smooth_brain_fraction(cube, 1.0) >= 0.5
    assert smooth[14, 15, 6] and smooth[15, 15, 15]
    assert not smooth[2, 15, 15]


def test_bias_field_is_capped_for_realistic_contrast():
    rng = sample_rng(0)
    realistic = [draw_contrast(rng, False)["bias_sigma"] for _ in range(300)]
    randomised = [draw_contrast(rng, True)["bias_sigma"] for _ in range(300)]
    assert max(realistic) <= BIAS_SIGMA_MAX < max(randomised) <= BIAS_SIGMA_MAX_RANDOM


def test_coil_profile_brightens_the_brain_periphery_by_the_drawn_gain():
    from wmhkit.synth.contrast import COIL_GAIN, coil_profile

    rng = sample_rng(4)
    grid = np.diag([2.0, 2.0, 2.0, 1.0])
    grid[:3, 3] = [-90.0, -115.0, -80.0]
    anat = warp_atlas(rng, grid, (90, 110, 90), random_spatial_params(rng, strength=0.0))
    radius = coil_profile(anat.labels)
    brain = np.isin(anat.labels, load_atlas().brain_ids())
    assert radius.min() >= -0.5 and radius.max() == 0.5  # capped at the brain's edge
    deep, edge = brain & (anat.d_vent < 3), brain & (anat.d_csf <= 1.0) & (anat.d_vent > 25)
    assert radius[edge].mean() > radius[deep].mean() + 0.5
    contrast = draw_contrast(rng, False, profile="clinical2d")
    contrast.update(texture=0.0, bias_sigma=0.0, vessels=0, flow_artefact=0.0, coil_gain=[0.0, 0.0])
    flat, _ = render(sample_rng(1), anat, np.zeros(anat.labels.shape, np.float32), contrast, 2.0)
    contrast["coil_gain"] = [0.3, 0.0]
    coiled, _ = render(sample_rng(1), anat, np.zeros(anat.labels.shape, np.float32), contrast, 2.0)
    gain = coiled[brain] / np.maximum(flat[brain], 1e-6)
    np.testing.assert_allclose(gain, np.exp(0.3 * radius[brain]), rtol=1e-4)
    # Clinical 2D FLAIRs are periphery-bright; 3D grids draw around 0, either sign.
    draws = {p: np.array([draw_contrast(sample_rng(i), False, profile=p)["coil_gain"] for i in range(40)])
             for p in COIL_GAIN}
    assert draws["clinical2d"].min() >= 0.05 and draws["research3d"].min() < 0 < draws["research3d"].max()


def test_classes_of_a_shared_tissue_draw_one_mean_from_the_groups_range():
    # A group's classes carry no ranges of their own (they would never be read), and every one of them
    # lands within a few percent of one mean drawn from GROUP_RANGES.
    atlas = load_atlas()
    for group, ranges in GROUP_RANGES.items():
        members = [name for name, entry in CLASS_RANGES.items() if entry[0] == group]
        assert len(members) > 1 and all(len(CLASS_RANGES[name]) == 1 for name in members)
        # Sulcal CSF is brightened on FLAIR after the draw (inflow), so FLAIR checks the others.
        for m, modality in enumerate(("flair", "t1")):
            names = [n for n in members if not (modality == "flair" and n == "csf_sulcal_extracerebral")]
            lo, hi = ranges[m]
            for seed in range(30):
                values = draw_contrast(sample_rng(seed), False)[f"{modality}_mean"][atlas.ids(tuple(names))]
                # The bright-cortex distractor (8 % of cases) multiplies the FLAIR cortex by up to 1.2.
                boost = 1.2 if (group, modality) == ("gm", "flair") else 1.0
                assert values.max() / values.min() <= boost * 1.04 / 0.96 + 1e-6, (group, modality, seed)
                assert lo * 0.96 <= values.min() and values.max() <= hi * 1.04 * boost, (group, modality, seed)


def test_the_septum_is_drawn_no_brighter_than_white_matter_on_flair():
    # Real clinical FLAIRs show the septum at 0.60-1.20 x the brain's median (median 0.67); drawn up to
    # 1.7 x white matter, the synthetic septum rendered at 1.30 and read as "a bright rod" (session 30).
    septum = load_atlas().id("septum_pellucidum")
    levels = np.array([draw_contrast(sample_rng(seed), False)["flair_mean"][septum] for seed in range(60)])
    assert levels.max() <= 0.9 * 1.04 and 0.45 < np.median(levels) < 0.75


def test_clinical_2d_draws_a_brighter_flair_cortex_and_striatum_and_nothing_else_changes():
    atlas = load_atlas()
    cortex = atlas.ids(CORTEX_CLASSES)
    striatum = atlas.ids(("gm_deep_striatum",))
    for seed in range(20):
        plain = draw_contrast(sample_rng(seed), False)
        clinical = draw_contrast(sample_rng(seed), False, profile="clinical2d")
        lo, hi = CLINICAL2D_CORTEX_FLAIR
        # Sub-classes differ by up to 4 % from the drawn tissue mean; the bright-cortex distractor adds up to 20 %.
        assert (clinical["flair_mean"][cortex] >= lo * 0.96).all()
        assert (clinical["flair_mean"][cortex] <= hi * 1.04 * 1.2).all()
        lo, hi = CLINICAL2D_STRIATUM_FLAIR
        assert lo <= clinical["flair_mean"][striatum].min() and clinical["flair_mean"][striatum].max() <= hi
        assert (clinical["flair_mean"][striatum] > plain["flair_mean"][striatum]).all()
        # Cerebellar grey matter shares the cortex's draw.
        grey = np.concatenate([atlas.ids(CORTEX_CLASSES + ("cerebellum_gm",)), striatum])
        others = np.setdiff1d(np.arange(len(plain["flair_mean"])), grey)
        np.testing.assert_array_equal(clinical["flair_mean"][others], plain["flair_mean"][others])
        np.testing.assert_array_equal(clinical["t1_mean"], plain["t1_mean"])
        assert clinical["lesion_flair_contrast"] == plain["lesion_flair_contrast"]


def head_width_over_length(labels: np.ndarray, ventricle_id: int) -> float:
    """Median over axial sections through the lateral ventricles of the head's x extent / y extent."""
    ratios = []
    for k in np.flatnonzero((labels == ventricle_id).any(axis=(0, 1))):
        head = labels[:, :, k] > 0
        ratios.append(np.ptp(np.flatnonzero(head.any(axis=1))) / np.ptp(np.flatnonzero(head.any(axis=0))))
    return float(np.median(ratios))


def test_head_width_over_length_is_drawn_around_the_real_median_with_template_proportions_in_the_upper_half():
    atlas = load_atlas()
    ventricle = atlas.id("csf_lateral_ventricle")
    assert head_width_over_length(atlas.labels, ventricle) == pytest.approx(ATLAS_CEPHALIC_INDEX, abs=0.01)
    drawn = np.array([random_spatial_params(sample_rng(seed))["cephalic_index"] for seed in range(300)])
    lo, median, hi = CEPHALIC_INDEX_QUANTILES
    assert lo <= drawn.min() < lo + 0.02 and hi - 0.02 < drawn.max() <= hi
    assert np.median(drawn) == pytest.approx(median, abs=0.02)
    # Heads with the proportions of template-registered scans (the labeled real cases: 0.96-1.05 x the
    # atlas's, i.e. an index up to 0.89) make up a good share of the draws.
    assert 0.15 < np.mean(drawn > 0.885) < 0.3
    # The warped head has the drawn proportions (no rotation or shear at strength 0; 2 mm grid).
    grid = np.diag([2.0, 2.0, 2.0, 1.0])
    grid[:3, 3] = [-110.0, -130.0, -90.0]
    for seed in (0, 3, 8):
        params = random_spatial_params(sample_rng(seed), strength=0.0)
        labels = warp_atlas(sample_rng(seed), grid, (110, 130, 100), params).labels
        assert head_width_over_length(labels, ventricle) == pytest.approx(params["cephalic_index"], abs=0.02)


def test_slice_planes_are_drawn_rising_towards_the_back_of_the_atlas_as_the_real_clinical_ones():
    # Registered to Colin27, the real clinical FLAIRs' axial planes are pitched 5.5-16.4 deg (median 9.8);
    # a plane of the world grid, seen in atlas space, climbs by tan(pitch) mm per mm towards the back.
    rises = []
    for seed in range(300):
        matrix = random_spatial_params(sample_rng(seed))["matrix"]
        u, _, vt = np.linalg.svd(matrix)
        normal = (u @ vt).T @ np.array([0.0, 0.0, 1.0])  # the world's axial normal in atlas axes (RAS)
        rises.append(np.degrees(np.arctan2(normal[1], normal[2])))
    rises = np.array(rises)
    assert np.median(rises) == pytest.approx(PITCH_CENTRE_DEG, abs=1.5)
    assert 6.0 <= PITCH_CENTRE_DEG <= 10.0
    # Both the real clinical planes and the atlas's own (registered scans, AC-PC planning) are drawn.
    assert np.mean(rises > 12.0) > 0.1 and np.mean(rises < 2.0) > 0.1
    # At strength 0 the atlas's plane itself.
    unrotated = random_spatial_params(sample_rng(0), strength=0.0)["matrix"]
    assert np.allclose(unrotated, np.diag(np.diag(unrotated)))


def warped_head(rng):
    """A warped atlas head on a 1 mm grid that holds the whole scalp (200 x 250 x 150 mm)."""
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    grid[:3, 3] = [-100.0, -125.0, -60.0]
    return warp_atlas(rng, grid, (200, 250, 150), random_spatial_params(rng))


def test_scalp_thinning_only_removes_outer_soft_tissue():
    atlas = load_atlas()
    rng = sample_rng(5)
    anat = warped_head(rng)
    before = anat.labels.copy()
    amounts = add_scalp_fat(anat, rng)
    changed = before != anat.labels
    soft = atlas.ids(("muscle_soft_tissue", "scalp_fat"))
    assert changed.any() and np.isin(before[changed], soft).all()
    assert np.isin(anat.labels[changed], [0, atlas.id("scalp_fat")]).all()
    # Thinner head: soft tissue became background (the outermost 1 mm of this grid's scalp is ~30 ml).
    removed_ml = ((anat.labels == 0) & (before > 0)).sum() / 1000.0
    assert removed_ml > 8 * (amounts["scalp_thinning_mm"] - 0.5)
    assert (anat.labels == atlas.id("scalp_fat")).sum() > (before == atlas.id("scalp_fat")).sum()
    # Nothing inside the skull changes.
    brain = ~np.isin(before, [0] + atlas.ids(NONBRAIN_CLASSES))
    assert not (changed & brain).any()
    # The layered scalp: no scalp muscle is left on the bone (the areolar layer there is a bright line
    # under the dark galea), and the galea between the two fat lines survives in places.
    bone = np.isin(anat.labels, atlas.ids(("skull_bone", "skull_marrow")))
    on_bone = ndi.binary_dilation(bone, ndi.generate_binary_structure(3, 1)) & ~bone
    scalp = anat.d_skin < SCALP_DEPTH_MM
    assert not (on_bone & scalp & (anat.labels == atlas.id("muscle_soft_tissue"))).any()
    assert (on_bone & scalp & (anat.labels == atlas.id("scalp_fat"))).sum() / 1000.0 > 20
    assert (scalp & (anat.labels == atlas.id("muscle_soft_tissue"))).any()


def test_the_skull_vault_holds_a_marrow_diploe_between_its_tables():
    # Real FLAIRs show the vault as two thin dark tables around a brighter diploe; Colin27's own marrow
    # label covered 9 % of it, so the atlas build carves the bone's inside (scripts/build_synth_assets.py;
    # 31 % of the vault within 12 mm of the brain).
    atlas = load_atlas()
    skull = np.isin(atlas.labels, atlas.ids(("skull_bone", "skull_marrow")))
    marrow = atlas.labels == atlas.id("skull_marrow")
    d_brain = ndi.distance_transform_edt(~np.isin(atlas.labels, atlas.brain_ids()))
    vault = skull & (d_brain < 12)
    assert marrow[vault].mean() > 0.25
    # The inner table stays whole (INNER_TABLE_MM, 2.9 mm, in the build): a black line over the brain,
    # as real FLAIRs have, and no bright marrow against the dura.
    assert not (marrow & (d_brain < 2.8)).any()
    # The tables stay bone: most of the marrow lies inside the bone (Colin27's own marrow label is
    # mostly on the bone's surface: 89 % of it touches the outside there, 15 % of the carved atlas's).
    touching = ndi.binary_dilation(~skull, ndi.generate_binary_structure(3, 1)) & marrow & vault
    assert touching.sum() < 0.25 * marrow[vault].sum()


def test_scalp_vessels_are_bright_tubes_in_the_scalp_over_the_vault():
    atlas = load_atlas()
    rng = sample_rng(9)
    anat = warped_head(rng)
    add_scalp_fat(anat, rng)
    contrast = draw_contrast(rng, random_contrast=False)
    contrast.update(texture=0.0, bias_sigma=0.0, coil_gain=[0.0, 0.0], vessels=0, flow_artefact=0.0)
    assert _scalp_vessel_mask(rng, anat, 0) is None
    vessels = _scalp_vessel_mask(sample_rng(10), anat, 30)
    labels = anat.labels.reshape(-1)
    assert vessels.size > 30 * 10
    # Only in the scalp's soft tissue and fat, never in bone or brain, and on the sides of the vault
    # (they start at 35-80 % of the brain's height and climb or descend from there).
    assert np.isin(labels[vessels], atlas.ids(("scalp_fat", "muscle_soft_tissue"))).all()
    assert (anat.d_skin.reshape(-1)[vessels] < SCALP_DEPTH_MM).all()
    z = np.unravel_index(vessels, anat.labels.shape)[2]
    brain_z = np.flatnonzero(np.isin(anat.labels, atlas.brain_ids()).any(axis=(0, 1)))
    assert np.median(z) > brain_z[0] + 0.35 * np.ptp(brain_z)
    # Tubes that run up the head: an axial slice cuts them as small dots (components of a few voxels).
    mask = np.zeros(anat.labels.shape, bool)
    mask.reshape(-1)[vessels] = True
    sizes = [np.bincount(ndi.label(mask[:, :, k])[0].ravel())[1:] for k in range(mask.shape[2]) if mask[:, :, k].any()]
    assert np.median(np.concatenate(sizes)) <= 3
    # ... and go on through the slices: nearly every vessel voxel has one within 3 voxels in-plane in
    # the slice above or below, and the tubes reach over tens of slices.
    near = ndi.binary_dilation(mask, np.ones((7, 7, 1), bool))
    linked = np.zeros_like(mask)
    linked[:, :, 1:] |= near[:, :, :-1]
    linked[:, :, :-1] |= near[:, :, 1:]
    assert linked[mask].mean() > 0.9
    assert np.ptp(z) > 40
    # On FLAIR they are brighter than the fat around them: without them, hardly any scalp voxel is.
    scalp = np.isin(anat.labels, atlas.ids(("scalp_fat", "muscle_soft_tissue"))) & (anat.d_skin < SCALP_DEPTH_MM)
    bright = []
    for count in (0, 30):
        flair, _ = render(sample_rng(10), anat, np.zeros(anat.labels.shape, np.float32),
                          dict(contrast, scalp_vessels=count), 1.0)
        fat = np.median(flair[anat.labels == atlas.id("scalp_fat")])
        bright.append((scalp & (flair > 1.5 * fat)).sum())
    assert bright[1] > 300 and bright[0] < 0.1 * bright[1], bright


def test_gyral_scale_deformation_moves_cortex_but_keeps_volumes_and_the_ventricle_walls():
    atlas = load_atlas()
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    grid[:3, 3] = [-48.0, -56.0, -30.0]
    params = random_spatial_params(sample_rng(7))
    params["fine_deform_mm"] = 1.1
    flat = dict(params, fine_deform_mm=0.0)
    a = warp_atlas(sample_rng(8), grid, (96, 112, 80), params).labels
    b = warp_atlas(sample_rng(8), grid, (96, 112, 80), flat).labels
    cortex = np.isin(b, atlas.ids(("gm_cortex_frontal", "gm_cortex_parietooccipital")))
    assert (a[cortex] != b[cortex]).mean() > 0.15
    # Fading it out towards the ventricles keeps their walls smooth: 23 % of the wall voxels changed
    # label at full strength, against under 1 % now.
    vent = b == atlas.id("csf_lateral_ventricle")
    wall = vent & ~ndi.binary_erosion(vent)
    assert ((a == atlas.id("csf_lateral_ventricle")) != vent)[wall].mean() < 0.03
    for name in ("wm_deep", "gm_cortex_frontal", "csf_lateral_ventricle"):
        va, vb = (a == atlas.id(name)).sum(), (b == atlas.id(name)).sum()
        assert abs(va - vb) / vb < 0.05, name


def test_flair_cortex_is_a_bright_ribbon_and_the_head_outside_the_brain_is_dark():
    # Measured on the real FLAIRs (scripts/compare_flair_intensities.py): the cortex stands out from
    # white matter, and the scalp, bone and muscle around the brain sit at about a third of the brain's
    # median. Before calibration the rendered cortex was about as bright as white matter and the head
    # around the brain at 0.58 x the brain (now 0.27). Since the closed sulci were opened
    # (build_synth_assets.medial_sulci) two thirds of the cortex voxels of this 2 mm grid touch sulcal CSF
    # and share its darkness (all cortex-labelled voxels: 1.05 x WM over these seeds), so the ribbon is
    # measured away from it: 1.12 x.
    atlas = load_atlas()
    cortex_ratio, outside_ratio = [], []
    for seed in range(6):
        s = generate_sample(seed, "train", skull=True, work_spacing_mm=2.0, train_shape=(96, 112, 96),
                            random_contrast_share=0.0)
        wm = np.median(s.flair[np.isin(s.tissue, atlas.ids(synth.WM_CLASSES)) & (s.wmh == 0)])
        ribbon = np.isin(s.tissue, atlas.ids(CORTEX_CLASSES))
        ribbon &= ~ndi.binary_dilation(s.tissue == atlas.id("csf_sulcal_extracerebral"))
        outside = np.median(s.flair[np.isin(s.tissue, atlas.ids(NONBRAIN_CLASSES))])
        cortex_ratio.append(np.median(s.flair[ribbon]) / wm)
        outside_ratio.append(outside / np.median(s.flair[s.brainmask > 0]))
    assert np.mean(cortex_ratio) >= 1.08
    assert np.mean(outside_ratio) <= 0.45


def fully_atrophied_middle(seed: int):
    """The warped anatomy of a 1 mm grid over the brain's middle, at full atrophy (ventricles grown 4 mm)."""
    anat, rng = middle_anatomy(seed)
    apply_atrophy(anat, 1.0, rng)
    return anat


def test_grown_ventricles_leave_no_thalamus_sheets_inside():
    # Ventricles grow into white matter, not into the thalamus; without absorbing what is left between
    # the grown parts, 3.8-4.5 % of the ventricle volume had thalamus within 2 mm on both sides (a grey
    # line inside a dark rim on old cases); with it 1.0-1.3 %.
    atlas = load_atlas()
    anat = fully_atrophied_middle(5)
    ventricle = anat.labels == atlas.id("csf_lateral_ventricle")
    between = np.zeros_like(ventricle)
    for axis in range(3):
        before = np.roll(ventricle, 1, axis) | np.roll(ventricle, 2, axis)
        after = np.roll(ventricle, -1, axis) | np.roll(ventricle, -2, axis)
        between |= before & after
    sheets = between & (anat.labels == atlas.id("gm_deep_thalamus"))
    assert sheets.sum() < 0.02 * ventricle.sum()
    # The septum pellucidum, a real membrane between the ventricles, stays.
    assert (anat.labels == atlas.id("septum_pellucidum")).any()


def test_the_atlas_septum_keeps_the_lateral_ventricles_apart():
    # Colin27's segmentation joined the two lateral ventricles across the midline in 372 voxel rows
    # (fused frontal horns); the atlas build closes the midline with the septum and, behind it, white matter.
    atlas = load_atlas()
    lateral = atlas.labels == atlas.id("csf_lateral_ventricle")
    x_mm = atlas.affine[0, 0] * np.arange(atlas.labels.shape[0]) + atlas.affine[0, 3]
    assert not lateral[(x_mm >= 0.0) & (x_mm <= 1.0)].any()  # the two-voxel midline sheet
    parts, n = ndi.label(lateral)
    sizes = np.bincount(parts.ravel())[1:]
    left, right = np.argsort(sizes)[::-1][:2] + 1
    assert sizes[right - 1] > 0.5 * sizes[left - 1]
    sides = [np.sign(x_mm[np.argwhere(parts == k)[:, 0]]) for k in (left, right)]
    assert {float(np.median(s)) for s in sides} == {-1.0, 1.0}
    assert all(np.all(s == s[0]) for s in sides)  # each one on its own side of the midline


@pytest.mark.parametrize("seed", [5, 6])
def test_fully_grown_ventricles_stay_two_across_the_midline_wall(seed):
    # Growing the ventricles by 4 mm into white matter joined them over and behind the septum (one
    # connected ventricle in every fully atrophied case); the midline wall stops that.
    atlas = load_atlas()
    anat = fully_atrophied_middle(seed)
    parts, _ = ndi.label(anat.labels == atlas.id("csf_lateral_ventricle"))
    sizes = np.sort(np.bincount(parts.ravel())[1:])[::-1]
    assert sizes[1] > 0.5 * sizes[0]
    assert (anat.labels[np.abs(anat.atlas_x) < 1.0] == atlas.id("septum_pellucidum")).sum() > 500


def middle_anatomy(seed: int):
    """The warped anatomy of a 1 mm grid over the brain's middle, and the rng to go on with."""
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    grid[:3, 3] = [-48.0, -56.0, -30.0]
    rng = sample_rng(seed)
    return warp_atlas(rng, grid, (96, 112, 80), random_spatial_params(rng)), rng


def test_young_ventricles_shrink_into_the_tissue_beside_them_and_keep_the_septum():
    # Growth alone (0-4 mm) left the synthetic ventricles twice the real scans' size; at atrophy 0 they
    # now give up to ~1 mm of their wall to the white matter, striatum or thalamus next to them.
    atlas = load_atlas()
    lateral = atlas.id("csf_lateral_ventricle")
    anat, rng = middle_anatomy(7)
    before = anat.labels.copy()
    septum_before = (before == atlas.id("septum_pellucidum")).sum()
    applied = apply_atrophy(anat, 0.0, rng)
    assert -1.2 <= applied["ventricle_growth_mm"] <= -0.8
    was, now = before == lateral, anat.labels == lateral
    assert not (now & ~was).any()
    assert 0.4 * was.sum() < now.sum() < 0.85 * was.sum()
    given = was & ~now
    assert set(np.unique(anat.labels[given])) <= set(atlas.ids(WM_CLASSES + ("gm_deep_striatum", "gm_deep_thalamus")))
    # Only the wall goes: the shrunk voxels lie within the shrink distance of the old surface.
    assert np.all(anat.vent_surface[given] >= 0.0)
    assert (anat.labels == atlas.id("septum_pellucidum")).sum() == septum_before
    parts, _ = ndi.label(now)
    sizes = np.sort(np.bincount(parts.ravel())[1:])[::-1]
    assert sizes[1] > 0.5 * sizes[0]  # still a left and a right ventricle


def test_nearest_atlas_gather_matches_grid_sample_nearest_on_a_rotated_grid():
    import torch
    import torch.nn.functional as F

    from wmhkit.synth.anatomy import _nearest_atlas_index

    rng = np.random.default_rng(3)
    atlas_shape = (23, 31, 17)
    volume = rng.random(atlas_shape).astype(np.float32)
    # A rotated, scaled grid reaching past the atlas on every side, with points near half-voxel ties.
    axes = np.meshgrid(*[np.linspace(-1.3, 1.3, n) for n in (19, 27, 15)], indexing="ij")
    angle = 0.4
    x = np.cos(angle) * axes[0] - np.sin(angle) * axes[1]
    y = np.sin(angle) * axes[0] + np.cos(angle) * axes[1]
    grid_xyz = np.stack([axes[2], y, x]).astype(np.float32)
    grid_xyz += rng.normal(0, 0.01, grid_xyz.shape).astype(np.float32)
    index, inside = _nearest_atlas_index(grid_xyz, atlas_shape)
    gathered = np.where(inside.ravel(), volume.ravel()[index], 0.0).reshape(inside.shape)
    expected = F.grid_sample(torch.from_numpy(volume)[None, None], torch.from_numpy(grid_xyz).permute(1, 2, 3, 0)[None],
                             mode="nearest", padding_mode="zeros", align_corners=True)[0, 0].numpy()
    assert 0.2 < inside.mean() < 0.9
    np.testing.assert_array_equal(gathered, expected)

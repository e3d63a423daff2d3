"""Image formation on the working grid: per-class intensities, lesions, distractors, bias field.

Intensities are relative to white matter (WM = 1). Each class has a FLAIR and a T1 range chosen so that
the usual orderings hold (FLAIR: CSF dark, WM < GM, lesions brighter than WM; T1: CSF < GM < WM) while the exact values
vary widely from sample to sample; a share of samples instead gets fully random contrasts (domain
randomisation, as in SynthSeg) so that the network cannot rely on any one scanner's look.
"""

from __future__ import annotations

import numpy as np

from wmhkit.preprocess import mask_bounding_box
from wmhkit.synth.anatomy import (
    CORTEX_CLASSES,
    SCALP_DEPTH_MM,
    VENTRICLE_CLASSES,
    WM_CLASSES,
    WarpedAnatomy,
    load_atlas,
    off_midline,
)
from wmhkit.synth.fields import gaussian_blur, smooth_noise, smooth_noise_at, white_noise

# Bias field (std of the log gain at a ~60 mm scale): realistic cases stay within what a head coil
# with vendor intensity correction leaves (about +-25 % across the head); random-contrast cases get up
# to twice that (augmentation).
BIAS_SIGMA_MAX = 0.12
BIAS_SIGMA_MAX_RANDOM = 0.3
# Receive-coil profile: log gain from the brain's centre to its edge (see coil_profile). Phased-array
# head coils leave the periphery brighter than the centre. The real clinical 2D FLAIRs here fall from
# 1.14 x the brain median 4 mm under the brain's surface to 0.86 x 56 mm in
# (scripts/compare_flair_intensities.py, rings every 4 mm); synthetic clinical cases without a profile
# fell from 1.06 to 0.91, with a gain of 0.05-0.35 from 1.16 to 0.83, and their cortex band (1 mm rings)
# from 1.06 to 1.18 (real 1.14). The 3D and MNI-processed FLAIRs are flat (bias-corrected), so research
# 3D grids draw around 0, either sign (3 T centre brightening), and training grids span both.
COIL_GAIN = {"clinical2d": (0.05, 0.35), "research3d": (-0.1, 0.15), "train": (-0.1, 0.35)}
# Tissue that shares voxels with sulcal CSF (partial volume): the cortex and what lies under it.
PV_CLASSES = CORTEX_CLASSES + WM_CLASSES + (
    "csf_sulcal_extracerebral", "cerebellum_gm", "cerebellum_wm", "brainstem",
)

# Tissues whose classes share one drawn mean and differ from it by a few percent, so that intensities
# vary inside a tissue without breaking its ordering: (FLAIR low, high), (T1 low, high) of that mean.
GROUP_RANGES = {
    # Real FLAIRs show the cortex as a brighter ribbon, by how much depends on the scan. The rendered
    # cortex loses much of its drawn value to partial volume with sulcal CSF and white matter (see
    # render): drawn at 1.1-1.35 x WM it rendered at ~1.0 x, and the brain's FLAIR spread (interquartile
    # range / median, scripts/compare_flair_intensities.py) was 0.14, below every real source: 0.24 on
    # the raw clinical scans, 0.185 on the MNI-processed labeled ones. 1.15-1.6 spans both.
    "gm": ((1.15, 1.6), (0.55, 0.8)),
    # It was 0.06-0.35 on FLAIR: inside the ventricles the synthetic clinical 2D FLAIRs read 0.19-0.25 x
    # the brain's median 2.5 mm from the wall, the real ones 0.09 (0.05-0.14); at 0.03-0.25 with the
    # clinical grids' edge enhancement, 0.12 (scripts/periventricular_profile.py --edge; docs/synth.md,
    # twenty-eighth session). Sulcal CSF is brightened from it in draw_contrast.
    "csf": ((0.03, 0.25), (0.08, 0.3)),
}

# name: (group, (FLAIR low, high), (T1 low, high)), or (group,) for a group of GROUP_RANGES.
CLASS_RANGES = {
    "background": ("air", (0.0, 0.0), (0.0, 0.0)),
    # WM bands share one value; render() adds smooth gradients towards ventricles and cortex instead,
    # because hard steps between bands look like nothing in a real scan.
    "wm_periventricular": ("wm", (1.0, 1.0), (1.0, 1.0)),
    "wm_deep": ("wm", (1.0, 1.0), (1.0, 1.0)),
    "wm_juxtacortical": ("wm", (1.0, 1.0), (1.0, 1.0)),
    "gm_cortex_frontal": ("gm",),
    "gm_cortex_parietooccipital": ("gm",),
    "gm_cortex_temporal": ("gm",),
    "gm_deep_striatum": ("dgm", (1.02, 1.2), (0.7, 0.88)),
    "gm_deep_thalamus": ("dgm", (0.98, 1.15), (0.75, 0.92)),
    "csf_lateral_ventricle": ("csf",),
    "csf_third_fourth_ventricle": ("csf",),
    "csf_sulcal_extracerebral": ("csf",),
    "cerebellum_gm": ("gm",),
    "cerebellum_wm": ("wm", (0.95, 1.08), (0.92, 1.0)),
    "brainstem": ("wm", (1.0, 1.25), (0.85, 1.0)),
    # The septum's brightest FLAIR on the real clinical 2D scans is 0.60-1.20 x the brain's median
    # (median 0.67; scripts/periventricular_profile.py --septum). Drawn at 0.4-1.7 x WM it rendered at
    # 1.30 (clinical 2D, seed 11), "a bright rod" to readers; at 0.3-0.9, 0.78 (research 3D 0.90).
    "septum_pellucidum": ("septum", (0.3, 0.9), (0.3, 0.9)),
    "choroid_plexus": ("choroid", (0.3, 1.6), (0.3, 0.8)),
    # Outside the brain, real clinical FLAIRs are dark: over the head around the brain the median is
    # ~0.33 x the brain's median and even the brightest 3 % (scalp fat) reach only 0.6-1.1 x it. Under
    # the scalp, 5-13 mm deep, they stay at ~0.2 x (bone with marrow and CSF in thick slices), not black.
    # Fat and muscle were 0.55-1.0 and 0.15-0.4 until the receive-coil profile (COIL_GAIN) brightened
    # the scalp with the cortex: the head's 90th percentile rose to 0.80 x the brain (real 0.65).
    # Bone and dura were 0.05-0.2 and 0.15-0.5: the line between the diploe and the brain, black on the
    # real clinical FLAIRs (0.09 x the brain's median at its darkest, scripts/scalp_rim_profile.py), was
    # 0.21 (0.12 now, with the atlas's whole inner table).
    "skull_bone": ("bone", (0.03, 0.12), (0.02, 0.15)),
    "skull_marrow": ("marrow", (0.15, 0.45), (0.8, 1.5)),
    # Fat was 0.5-0.9 until the fat line widened to 2.5-4 mm (anatomy.add_scalp_fat): 2 mm below the
    # skin the median depth profile (scripts/scalp_rim_profile.py, seed 11) then read 0.50 x the brain's
    # median over all slab slices, the real clinical FLAIRs' 0.44; at 0.4-0.7 it reads 0.45 (0.46 on
    # the script's slices, real 0.41).
    "scalp_fat": ("fat", (0.4, 0.7), (1.2, 1.9)),
    "muscle_soft_tissue": ("muscle", (0.06, 0.22), (0.4, 0.7)),
    "eye": ("eye", (0.05, 0.4), (0.05, 0.3)),
    "orbital_fat": ("fat", (0.55, 1.1), (1.1, 1.8)),
    "dura_meninges": ("dura", (0.05, 0.25), (0.2, 0.7)),
}

# Regional variation of white matter (render): smooth patches a centimetre or two across, a few percent
# brighter or darker on FLAIR (darker or brighter on T1), that no rater calls lesion. Measured as the SD
# of FLAIR smoothed at 4 mm over FLAIR smoothed at 20 mm inside white matter eroded by 3 mm, lesions
# dilated by 4 mm left out (a dev script, docs/synth.md, twenty-ninth session): 0.049-0.050 on the
# labeled real cases with few lesions, 0.017-0.030 on synthetic research 3D cases without it and
# 0.035-0.060 (median 0.039) with it. The 3D networks' false alarms on those real cases were such
# patches, 1-4 ml at 1.05-1.2 x the brain median.
WM_REGIONAL_SD = (0.04, 0.1)
WM_REGIONAL_SCALE_MM = (8.0, 16.0)

# Scalp vessels (render): real clinical FLAIRs show small bright dots in the scalp around the head, on
# an axial slice through the ventricles 2-64 of them (median 11; scripts/scalp_rim_profile.py, "dots"),
# every scan some; without vessels the synthetic heads had none.
SCALP_VESSEL_SHARE = 0.85
SCALP_VESSELS = (10, 60)
SCALP_VESSEL_FLAIR = (1.6, 2.6)
# Where the vessels start: this range of the brain's height, from its bottom.
SCALP_VESSEL_HEIGHTS = (0.35, 0.8)

# The real clinical 2D FLAIRs show the cortex as a brighter band over the white matter than the 3D and
# MNI-processed ones (scripts/compare_flair_intensities.py, "cortex over white matter"): their FLAIR
# inside the brain peaks at 1.14 x the brain median 3-6 mm below its surface, where the 3D FLAIRs stay
# at 1.02-1.04. Clinical 2D cases draw their cortex from this range.
CLINICAL2D_CORTEX_FLAIR = (1.3, 1.8)
# The caudate and putamen stand out from white matter on the real clinical 2D FLAIRs: median 1.15 x deep
# white matter (1.06-1.17 over 7 patients; scripts/deep_grey_contrast.py, Colin27's labels registered).
# Synthetic clinical cases drawn from CLASS_RANGES rendered at 1.05 (1.00-1.11), and the centre read as
# "one flat grey block" (blind readers, sessions 23-25); drawn from this range they render at 1.15
# (1.07-1.21): the blur of the deep grey matter's edges and the coil profile's darker centre take off
# about a tenth. The MNI-processed FLAIRs show 1.03, so the other profiles keep CLASS_RANGES.
CLINICAL2D_STRIATUM_FLAIR = (1.1, 1.34)


# Lesion FLAIR contrast over the white matter at the lesion (a share of cases subtle). The rated lesions of
# the 3 labeled real cases render at 1.31-1.40 x the white matter 2-6 voxels around them (volume-weighted
# median per case), none of their volume under 1.10 and 0-9 % in 1.10-1.20 (scripts/lesion_visibility.py).
# A drawn contrast renders at 0.4-0.9 of itself: soft edges, partial volume and thick slices dilute it,
# most in small lesions. Until cache 24, lesions took a fixed multiple of deep white matter (+8-25 %
# subtle, else +30-110 %) whatever tissue they replaced; the subtle cases rendered at 1.03-1.07 x their
# surroundings (in the brighter periventricular halo, below it): labelled but invisible; 16 % of the
# lesion volume of cache 24's training cases rendered under 1.10 (docs/training.md, session 30).
# Subtle cases now render at 1.13-1.19.
LESION_FLAIR_SUBTLE = (0.25, 0.35)
LESION_FLAIR = (0.3, 1.0)


def draw_contrast(rng: np.random.Generator, random_contrast: bool, profile: str = "train") -> dict:
    """Per-class mean/std for FLAIR and T1 plus lesion and artefact settings for an output grid of
    ``profile`` ('clinical2d', 'research3d' or 'train'): a clinical 2D grid draws the FLAIR grey matter
    from CLINICAL2D_CORTEX_FLAIR instead of GROUP_RANGES and the striatum from CLINICAL2D_STRIATUM_FLAIR
    instead of CLASS_RANGES, and each profile its COIL_GAIN.

    Returns a dict of plain values (JSON-able apart from the (n_labels,) float arrays under
    ``flair_mean``, ``flair_std``, ``t1_mean``, ``t1_std``).
    """
    names = load_atlas().names
    n = max(names) + 1
    clinical2d = profile == "clinical2d"
    out: dict = {"random_contrast": bool(random_contrast)}
    for m, modality in enumerate(("flair", "t1")):
        group_mean: dict[str, float] = {}
        mean = np.zeros(n, np.float32)
        for k, name in sorted(names.items()):
            group, *ranges = CLASS_RANGES[name]
            lo, hi = (GROUP_RANGES[group] if group in GROUP_RANGES else ranges)[m]
            if clinical2d and modality == "flair" and group == "gm":
                lo, hi = CLINICAL2D_CORTEX_FLAIR
            if clinical2d and modality == "flair" and name == "gm_deep_striatum":
                lo, hi = CLINICAL2D_STRIATUM_FLAIR
            if group == "air":
                continue
            if random_contrast:
                if group not in group_mean:
                    group_mean[group] = rng.uniform(0.0, 1.6)
                mean[k] = group_mean[group] * rng.uniform(0.9, 1.1)
            elif group == "wm":
                mean[k] = 1.0
            elif group in GROUP_RANGES:
                # One draw per tissue, a few percent between its sub-classes.
                if group not in group_mean:
                    group_mean[group] = rng.uniform(lo, hi)
                mean[k] = group_mean[group] * rng.uniform(0.96, 1.04)
            else:
                mean[k] = rng.uniform(lo, hi)
        if not random_contrast and modality == "flair":
            # Sulcal and convexity CSF is often less suppressed than ventricular CSF on FLAIR (inflow,
            # partial volume within the slice).
            sulcal = [k for k, v in names.items() if v == "csf_sulcal_extracerebral"][0]
            mean[sulcal] *= rng.uniform(1.0, 1.3)
        if not random_contrast and modality == "flair" and rng.random() < 0.08:
            # Bright cortex ribbon: some FLAIRs show GM much brighter than WM (a distractor).
            for name in CORTEX_CLASSES:
                mean[[k for k, v in names.items() if v == name][0]] *= rng.uniform(1.05, 1.2)
        if random_contrast:
            mean[0] = 0.0
            wm_ids = [k for k, v in names.items() if v.startswith("wm_")]
            mean /= max(float(mean[wm_ids].mean()), 0.05)  # keep WM at 1 so lesion contrast stays meaningful
        # Voxel-scale variation on the working grid is kept small: blurred by the point spread it turns
        # into blotches; the acquisition's noise is added on the output grid instead.
        std = mean * rng.uniform(0.01, 0.035, n).astype(np.float32)
        out[f"{modality}_mean"] = mean
        out[f"{modality}_std"] = std
    # Lesion contrast: FLAIR always brighter than WM, sometimes subtly; T1 iso- to hypointense.
    subtle = rng.random() < 0.15
    out["lesion_flair_contrast"] = float(rng.uniform(*LESION_FLAIR_SUBTLE) if subtle else rng.uniform(*LESION_FLAIR))
    # Darker and more varied (x 0.5-0.9, five times the FLAIR's heterogeneity; real rated lesions spread
    # over 0.28-0.95 x white matter inside a case) was cache 28: the 3D U-Net then missed more of
    # patient19 (Dice 0.31 and 0.11 over two seeds, 0.52 and 0.42 before; docs/training.md, session 31).
    out["lesion_t1_contrast"] = float(rng.uniform(0.0, 0.4))
    out["lesion_heterogeneity"] = float(rng.uniform(0.03, 0.2))
    # Tissue grain (1-3 mm): real white matter is never as flat as one drawn value plus noise.
    out["texture"] = float(rng.uniform(0.02, 0.08))
    out["texture_scale_mm"] = float(rng.uniform(1.0, 3.0))
    # Deep grey matter blends into the surrounding white matter over a few mm (no segmentation edges).
    out["dgm_blur_mm"] = float(rng.uniform(0.8, 2.0))
    # Normal periventricular FLAIR signal rise ("caps/halo" that is NOT lesion), and a juxtacortical tint.
    out["pv_gradient"] = float(rng.uniform(-0.02, 0.12))
    out["jc_gradient"] = float(rng.uniform(-0.04, 0.06))
    # Thin bright ependymal lining of the ventricles (~1 mm): normal on FLAIR, not WMH.
    out["ependymal_rim"] = float(rng.uniform(0.05, 0.3) if rng.random() < 0.4 else 0.0)
    out["bias_sigma"] = float(rng.uniform(0.0, BIAS_SIGMA_MAX_RANDOM if random_contrast else BIAS_SIGMA_MAX))
    out["coil_gain"] = [float(g) for g in rng.uniform(*COIL_GAIN[profile], 2)]  # FLAIR, T1
    out["flow_artefact"] = float(rng.uniform(0.3, 1.0) if rng.random() < 0.3 else 0.0)
    out["vessels"] = int(rng.integers(5, 40) if rng.random() < 0.5 else 0)
    out["scalp_vessels"] = int(rng.integers(*SCALP_VESSELS) if rng.random() < SCALP_VESSEL_SHARE else 0)
    out["wm_regional"] = float(rng.uniform(*WM_REGIONAL_SD))
    out["wm_regional_scale_mm"] = float(rng.uniform(*WM_REGIONAL_SCALE_MM))
    return out


def render(
    rng: np.random.Generator,
    anat: WarpedAnatomy,
    lesion_frac: np.ndarray,
    contrast: dict,
    spacing_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """FLAIR-like and T1-like images (float32, WM ~ 1) of one warped anatomy.

    Parameters
    ----------
    anat : warped anatomy on the working grid (labels, distance maps)
    lesion_frac : float32 (X, Y, Z) in [0, 1]
    contrast : from :func:`draw_contrast`; spacing_mm : isotropic working voxel size
    """
    labels = anat.labels
    shape = labels.shape
    atlas = load_atlas()
    # Work on flat index sets where an effect is local: most voxels are not WM, lesion or CSF.
    wm_idx = np.flatnonzero(np.isin(labels, atlas.ids(WM_CLASSES)))
    wm_gradient = contrast["pv_gradient"] * np.exp(-np.clip(anat.d_vent.ravel()[wm_idx], 0, None) / 6.0)
    wm_gradient += contrast["jc_gradient"] * np.exp(-anat.d_csf.ravel()[wm_idx] / 4.0)
    if contrast["ependymal_rim"] > 0:
        wm_gradient += contrast["ependymal_rim"] * (anat.d_vent.ravel()[wm_idx] <= 1.0)
    if contrast["wm_regional"] > 0:
        scale_vox = contrast["wm_regional_scale_mm"] / spacing_mm
        wm_gradient += contrast["wm_regional"] * smooth_noise_at(rng, shape, scale_vox, wm_idx)
    les_idx = np.flatnonzero(lesion_frac)
    les_frac = lesion_frac.ravel()[les_idx]
    vessels = _vessel_mask(rng, labels, contrast["vessels"])
    scalp_vessels = _scalp_vessel_mask(rng, anat, contrast.get("scalp_vessels", 0))
    het_idx = les_idx if vessels is None else np.union1d(les_idx, vessels)
    het_at = smooth_noise_at(rng, shape, 2.0 / spacing_mm, het_idx)
    # One tissue texture for both modalities (it is the same anatomy), separate bias fields.
    texture = None
    if contrast["texture"] > 0:
        texture = 1.0 + contrast["texture"] * smooth_noise(rng, shape, contrast["texture_scale_mm"] / spacing_mm)
    dgm_ids = atlas.ids(("gm_deep_striatum", "gm_deep_thalamus"))
    wm_id = atlas.id("wm_deep")
    dgm_box = mask_bounding_box(np.isin(labels, dgm_ids), int(np.ceil(6.0 / spacing_mm)))
    dgm_tissue = None
    if dgm_box is not None:
        dgm_tissue = np.isin(labels[dgm_box], dgm_ids + atlas.ids(WM_CLASSES))
    log_bias = contrast["bias_sigma"] * smooth_noise(rng, shape, 60.0 / spacing_mm, channels=2)
    if any(contrast["coil_gain"]):
        radius = coil_profile(labels)
        for m, gain in enumerate(contrast["coil_gain"]):
            log_bias[m] += np.float32(gain) * radius
    bias = np.exp(log_bias, out=log_bias)
    pv_idx, pv_frac, pv_is_csf = _sulcal_partial_volume(anat)
    wall_idx, wall_csf, wall_is_vent = _ventricle_partial_volume(anat, spacing_mm)
    share_idx, share, share_in_cortex = _cortex_wm_partial_volume(anat)
    share_labels = labels.reshape(-1)[share_idx]
    cortex_ids = atlas.ids(CORTEX_CLASSES)
    images = []
    for m, modality in enumerate(("flair", "t1")):
        mean = contrast[f"{modality}_mean"]
        std = contrast[f"{modality}_std"]
        img = mean[labels]
        if dgm_box is not None:
            # Graded deep grey matter: blur its intensity into the neighbouring white matter (CSF is set
            # to the WM value before blurring, so ventricles do not darken the basal ganglia).
            sub = img[dgm_box]
            soft = np.where(dgm_tissue, sub, np.float32(mean[wm_id]))
            soft = gaussian_blur(soft, contrast["dgm_blur_mm"] / spacing_mm)
            img[dgm_box] = np.where(dgm_tissue, soft, sub)
        img += std[labels] * white_noise(rng, shape)
        flat = img.reshape(-1)
        if share_idx.size:
            # Cortex/white-matter boundary voxels hold both tissues in the proportion Colin27's T1 shows
            # there, instead of the label's one class (a staircase that the point spread turns into blobs).
            gm_level = np.where(share_in_cortex, mean[share_labels], mean[cortex_ids].mean())
            wm_level = np.where(share_in_cortex, mean[atlas.id("wm_juxtacortical")], mean[share_labels])
            flat[share_idx] += wm_level + share * (gm_level - wm_level) - mean[share_labels]
        flat[wm_idx] *= 1.0 + (wm_gradient if modality == "flair" else -0.5 * wm_gradient)
        if wall_idx.size:
            # Wall voxels hold CSF and the tissue around it by where the ventricles' surface cuts them,
            # so a wall at any angle is smooth, not a staircase of whole voxels.
            csf_level = mean[atlas.id("csf_lateral_ventricle")]
            own = flat[wall_idx]
            tissue = np.where(wall_is_vent, mean[atlas.id("wm_periventricular")], own)
            csf = np.where(wall_is_vent, own, csf_level)
            flat[wall_idx] = tissue + wall_csf * (csf - tissue)
        if pv_idx.size:
            # A CSF-labelled voxel's other share is cortex (sulci lie between cortical banks).
            gm_level = mean[atlas.id("gm_cortex_frontal")]
            tissue = np.where(pv_is_csf, gm_level, flat[pv_idx])
            flat[pv_idx] = tissue + pv_frac * (mean[atlas.id("csf_sulcal_extracerebral")] - tissue)
        if texture is not None:
            img *= texture
        if modality == "flair" and contrast["flow_artefact"] > 0:
            # CSF inflow/pulsation artefacts: bright smudges in the ventricles.
            csf_idx = np.flatnonzero(np.isin(labels, atlas.ids(VENTRICLE_CLASSES)))
            blobs = np.clip(smooth_noise_at(rng, shape, 5.0 / spacing_mm, csf_idx) - 1.2, 0.0, None)
            flat[csf_idx] += blobs * contrast["flow_artefact"]
        if vessels is not None:
            # Vessels in the sulci: flow voids (dark) or slow-flow hyperintensity (bright). They are about
            # a voxel wide, so they only take part of it (fully dark voxels read as dashed black sulci).
            level = rng.uniform(0.05, 0.4) if rng.random() < 0.6 else rng.uniform(0.9, 1.5)
            share = rng.uniform(0.3, 0.7)
            vessel = level * (1.0 + 0.05 * het_at[np.searchsorted(het_idx, vessels)])
            flat[vessels] += share * (vessel - flat[vessels])
        if modality == "flair" and scalp_vessels is not None:
            # Scalp vessels: small bright dots in the fat on real clinical FLAIRs (slow flow).
            flat[scalp_vessels] += rng.uniform(0.7, 1.0) * (rng.uniform(*SCALP_VESSEL_FLAIR) - flat[scalp_vessels])
        if les_idx.size:
            h = het_at[np.searchsorted(het_idx, les_idx)]
            if modality == "flair":
                lesion = 1.0 + contrast["lesion_flair_contrast"] * (1.0 + contrast["lesion_heterogeneity"] * 2.0 * h)
            else:
                lesion = 1.0 - contrast["lesion_t1_contrast"] * (1.0 + contrast["lesion_heterogeneity"] * h)
            wm_ref = float(mean[atlas.id("wm_deep")])
            noise = 1.0 + std[labels.ravel()[les_idx]] / max(wm_ref, 1e-3) * rng.standard_normal(les_idx.size)
            # The lesion's share of a voxel is its own tissue changed by the lesion's contrast, so a lesion
            # stands out from the white matter around it (halo, regional variation, wall partial volume
            # included) by the drawn contrast, as raters see it (LESION_FLAIR).
            flat[les_idx] *= 1.0 + les_frac * (lesion * noise - 1.0)
        img *= bias[m]
        np.clip(img, 0.0, None, out=img)
        images.append(img.astype(np.float32, copy=False))
    return images[0], images[1]


def coil_profile(labels: np.ndarray) -> np.ndarray:
    """float32 (X, Y, Z): squared radius from the brain's centre, normalised by its half-extent along
    each axis (0 at the centre, 1 at the brain's edge and beyond: the scalp gains no more than the
    cortex under it), minus 0.5 so that the gain leaves the brain's mid-depth as it was."""
    brain = np.isin(labels, load_atlas().brain_ids())
    radius = np.zeros(labels.shape, np.float32)
    if not brain.any():
        return radius
    for axis in range(3):
        present = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        centre, half = (present[0] + present[-1]) / 2.0, max((present[-1] - present[0]) / 2.0, 1.0)
        shape = [1, 1, 1]
        shape[axis] = -1
        radius += (((np.arange(labels.shape[axis]) - centre) / half) ** 2).astype(np.float32).reshape(shape)
    return np.minimum(radius, 1.0) - 0.5


def _sulcal_partial_volume(anat: WarpedAnatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of voxels that share their volume with sulcal CSF, that share, and which are
    CSF-labelled. Rendering mixes their intensity towards CSF by the share instead of the label's hard
    class: thin sulci become soft grey lines and the pial surface is smooth, as on a real FLAIR."""
    atlas = load_atlas()
    frac = anat.csf_frac.reshape(-1)
    idx = np.flatnonzero(frac > 0.02)
    idx = idx[np.isin(anat.labels.reshape(-1)[idx], atlas.ids(PV_CLASSES))]
    is_csf = anat.labels.reshape(-1)[idx] == atlas.id("csf_sulcal_extracerebral")
    return idx, np.clip(frac[idx], 0.0, 1.0), is_csf


def _ventricle_partial_volume(anat: WarpedAnatomy, spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of the voxels the ventricles' surface passes through (ventricle-labelled, or the
    white matter and striatum they grow into), their CSF share (from the signed distance of the voxel's
    centre to the surface, over one voxel) and which are ventricle-labelled. The thalamus, septum and
    choroid plexus keep their hard edges (the ventricles do not grow into them), and so does the midline
    wall (anatomy.off_midline)."""
    atlas = load_atlas()
    share = np.clip(0.5 - anat.vent_surface.reshape(-1) / np.float32(spacing_mm), 0.0, 1.0)
    idx = np.flatnonzero((share > 0.0) & (share < 1.0))
    labels = anat.labels.reshape(-1)[idx]
    is_vent = np.isin(labels, atlas.ids(VENTRICLE_CLASSES))
    grown_into = np.isin(labels, atlas.ids(WM_CLASSES + ("gm_deep_striatum",)))
    grown_into &= off_midline(anat).reshape(-1)[idx]
    keep = is_vent | grown_into
    return idx[keep], share[idx[keep]], is_vent[keep]


def _cortex_wm_partial_volume(anat: WarpedAnatomy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of cortex and white-matter voxels near their common boundary, their grey-matter
    share, and which are cortex-labelled."""
    atlas = load_atlas()
    share = anat.gm_share.reshape(-1)
    idx = np.flatnonzero(share > 0.0)
    labels = anat.labels.reshape(-1)[idx]
    keep = np.isin(labels, atlas.ids(CORTEX_CLASSES + WM_CLASSES))
    idx, labels = idx[keep], labels[keep]
    return idx, np.clip(share[idx], 0.0, 1.0), np.isin(labels, atlas.ids(CORTEX_CLASSES))


def _scalp_vessel_mask(rng: np.random.Generator, anat: WarpedAnatomy, count: int) -> np.ndarray | None:
    """Flat indices of ``count`` thin tubes (1-2 voxels) in the scalp's soft tissue and fat, or None.

    The scalp's arteries and veins (superficial temporal, occipital, frontal branches) run up the head
    in the subcutaneous layer, so each tube climbs (or descends) one axial slice of the working grid at
    a time, wandering in-plane, and an axial slice cuts it as a dot.
    """
    if count == 0:
        return None
    atlas = load_atlas()
    labels = anat.labels
    allowed = np.isin(labels, atlas.ids(("scalp_fat", "muscle_soft_tissue"))) & (anat.d_skin < SCALP_DEPTH_MM)
    # They start on the sides of the vault, not in the face and neck, which hold most of the soft
    # tissue, nor at the vertex, where the layer turns flat and a climbing tube would leave it at once.
    brain_z = np.flatnonzero(np.isin(labels, atlas.brain_ids()).any(axis=(0, 1)))
    if brain_z.size == 0:
        return None
    vault = np.zeros(labels.shape[2], bool)
    lo, hi = (int(brain_z[0] + share * (brain_z[-1] - brain_z[0])) for share in SCALP_VESSEL_HEIGHTS)
    vault[lo:hi] = True
    start = np.flatnonzero(allowed & vault)
    if start.size == 0:
        return None
    return _climbing_tubes(rng, allowed, start[rng.integers(start.size, size=count)])


def _climbing_tubes(rng: np.random.Generator, allowed: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Flat indices of tubes that climb or descend through ``allowed`` (bool (X, Y, Z)) from the flat
    indices ``starts``, one z slice a step, 20-80 steps each, half of them two voxels wide."""
    count = starts.size
    shape = np.array(allowed.shape)
    x, y, z = np.unravel_index(starts, allowed.shape)
    step = np.where(rng.random(count) < 0.5, 1, -1)
    thick = rng.random(count) < 0.5
    length = rng.integers(20, 80, size=count)
    drift = 0.5 * rng.standard_normal((count, 2))
    offsets = np.stack(np.meshgrid(np.arange(-3, 4), np.arange(-3, 4), indexing="ij"), -1).reshape(1, -1, 2)
    mask = np.zeros(allowed.shape, bool)
    alive = np.ones(count, bool)
    for t in range(int(length.max())):
        mask[x[alive], y[alive], z[alive]] = True
        mask[np.minimum(x + 1, shape[0] - 1)[alive & thick], y[alive & thick], z[alive & thick]] = True
        # One slice up (or down), to the allowed voxel nearest the drifting course: a tube follows the
        # layer however it curves, and ends where the layer does.
        z = z + step
        alive &= (t + 1 < length) & (z >= 0) & (z < shape[2])
        if not alive.any():
            break
        drift = 0.8 * drift + 0.3 * rng.standard_normal((count, 2))
        here = np.stack([x, y], -1)
        near = here[:, None, :] + offsets
        ok = (near >= 0).all(-1) & (near < shape[:2]).all(-1)
        near = np.clip(near, 0, shape[:2] - 1)
        ok &= allowed[near[..., 0], near[..., 1], np.clip(z, 0, shape[2] - 1)[:, None]]
        alive &= ok.any(1)
        miss = np.where(ok, ((near - (here + drift)[:, None, :]) ** 2).sum(-1), np.inf)
        pick = near[np.arange(count), np.argmin(miss, axis=1)]
        # A step of 2-3 voxels in-plane (where the layer bends) is bridged within the new slice, so the
        # tube stays connected.
        for part in (1.0 / 3.0, 2.0 / 3.0):
            mid = np.rint(here + part * (pick - here)).astype(int)
            mask[mid[alive, 0], mid[alive, 1], z[alive]] = True
        x, y = np.where(alive, pick[:, 0], x), np.where(alive, pick[:, 1], y)
    return np.flatnonzero(mask & allowed)


def _vessel_mask(rng: np.random.Generator, labels: np.ndarray, count: int) -> np.ndarray | None:
    """Flat indices of thin random tubes (1-2 voxels) in sulcal CSF and cortex, or None."""
    if count == 0:
        return None
    atlas = load_atlas()
    allowed = np.isin(labels, atlas.ids(("csf_sulcal_extracerebral",) + CORTEX_CLASSES))
    start = np.flatnonzero(labels == atlas.id("csf_sulcal_extracerebral"))
    if start.size == 0:
        return None
    mask = np.zeros(labels.shape, bool)
    shape = np.array(labels.shape)
    for _ in range(count):
        p = np.array(np.unravel_index(start[rng.integers(start.size)], labels.shape), dtype=float)
        d = rng.standard_normal(3)
        pts = []
        for _step in range(int(rng.integers(15, 60))):
            d = d / np.linalg.norm(d) + 0.35 * rng.standard_normal(3)
            p = np.clip(p + d / np.linalg.norm(d), 0, shape - 1)
            pts.append(p.copy())
        pts = np.rint(np.array(pts)).astype(int)
        mask[pts[:, 0], pts[:, 1], pts[:, 2]] = True
        if rng.random() < 0.4:  # thicker vessel
            pts2 = np.clip(pts + rng.integers(0, 2, 3), 0, shape - 1)
            mask[pts2[:, 0], pts2[:, 1], pts2[:, 2]] = True
    return np.flatnonzero(mask & allowed)

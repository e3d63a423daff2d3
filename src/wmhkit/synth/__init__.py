"""Synthetic training data: real anatomy, real lesion shapes, randomised everything else.

``generate_sample(seed, profile=...)`` returns one paired FLAIR-like / T1-like image with its labels,
all on the same output grid. Pipeline (see each module for details):

1. geometry.sample_geometry : the output grid (clinical 2D axial, research 3D, or a training grid);
2. anatomy.warp_atlas : the label atlas moved by a random affine, a smooth and a gyral-scale
   deformation onto an axis-aligned working grid (1 mm by default), with a sulcal-CSF partial-volume
   fraction; then anatomy.apply_atrophy with the "age" parameter (and add_scalp_fat with a skull);
3. lesions.make_lesions : a soft lesion-fraction map in white matter, load and pattern by severity;
4. contrast.render : per-class intensities, lesions, distractors, bias field (working grid);
5. geometry.blur_for_output + sample_to_output : slice profile / anti-aliasing blur and resampling to
   the output grid; lesion and brain fractions are resampled linearly and thresholded at 0.5 (a voxel
   is lesion if at least half of it is; the brain fraction is smoothed first, for a smooth mask edge);
   a share of the cases edge-enhanced (an unsharp mask, as reconstruction filters and resampling leave
   edges; EDGE_ENHANCE_SHARE, most clinical 2D cases);
   then Rician noise and, unless ``skull``, skull stripping (0 outside the brain mask).

Every random draw comes from one ``numpy.random.Generator`` seeded from (seed, index), so a sample is
bit-identical for the same seed and index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from wmhkit.io import voxel_volume_ml
from wmhkit.preprocess import mask_bounding_box
from wmhkit.synth.anatomy import (
    WM_CLASSES,
    add_scalp_fat,
    apply_atrophy,
    load_atlas,
    random_spatial_params,
    warp_atlas,
)
from wmhkit.synth.contrast import draw_contrast, render
from wmhkit.synth.fields import edge_enhance, gaussian_blur, slice_profile_blur, white_noise
from wmhkit.synth.geometry import PROFILES, Geometry, blur_for_output, sample_geometry, sample_to_output, working_grid
from wmhkit.synth.lesions import draw_severity, draw_target_ml, make_lesions

__all__ = ["PROFILES", "SynthSample", "generate_sample", "sample_rng", "label_names", "training_geometry"]

RANDOM_CONTRAST_SHARE = 0.2
# Edge enhancement (unsharp mask) of a share of cases per output profile: amount and Gaussian sigma (mm);
# see _edge_enhancement. Every real clinical 2D FLAIR here leaves the ventricles steeply (0.83-0.96 x the
# brain median 1.5 mm from the wall, scripts/periventricular_profile.py --edge --clinical); synthetic
# clinical cases without enhancement reach 0.69-0.79, with it 0.76-1.11 (median 0.90). The slice profile
# alone leaves a real 1 mm 3D FLAIR as soft (0.71), so the real 2D scans carry their vendors'
# reconstruction sharpening (docs/synth.md, twenty-eighth session).
EDGE_ENHANCE_SHARE = {"clinical2d": 0.9, "research3d": 0.5, "train": 0.5}
EDGE_ENHANCE_AMOUNT = (0.4, 1.5)
EDGE_ENHANCE_SIGMA_MM = (1.0, 2.0)
# Smoothing of the brain mask's surface (Gaussian sigma, mm), see smooth_brain_fraction.
BRAIN_EDGE_SIGMA_MM = 1.5
# Noise SD relative to white matter, on the output grid, and its band (share of each axis's k-space that
# the scanner acquired; it reconstructs on a finer matrix, so the noise is band-limited: in-plane only
# on 2D grids, whose slices are encoded separately). Matched on the real FLAIRs
# (scripts/compare_flair_intensities.py): Immerkaer's Laplacian noise estimate is 0.017-0.033 of the
# brain median on the raw clinical 2D scans, 0.017 on the raw 3D one, 0.034-0.044 on the MNI-resampled
# ones; clinical 2D cases give 0.011-0.038 here (median 0.019, real 0.022). Research 3D grids stay below
# that match: at it, the noise still showed as 2-3 mm speckle over white matter that the real 3D FLAIR
# shows smooth (its grain is anatomy more than noise; docs/synth.md, twelfth session). Training grids
# span both.
NOISE_SIGMA = {"clinical2d": (0.045, 0.075), "research3d": (0.025, 0.05), "train": (0.025, 0.07)}
# NOISE_SIGMA holds at the profile's reference voxel (mm^3): on clinical 2D grids the 1 x 1 x 3 mm voxel
# acquired for the real clinical FLAIRs' median grid (0.72 x 0.72 x 3 mm), on research 3D grids a 1 mm
# voxel. It scales with voxel volume ** -0.5: the real clinical FLAIRs' 1 mm grain falls from 0.063-0.073
# (0.57 x 0.57 x 3.3 mm) to 0.053-0.063 (0.72 x 0.72 x 3) and 0.043 (0.72 x 0.72 x 4) (docs/synth.md,
# fifteenth session). Without it the 1 x 1 x 5-8 mm cases looked grainiest of all.
NOISE_REFERENCE_VOXEL_MM3 = {"clinical2d": 3.0, "research3d": 1.0}
NOISE_VOLUME_EXPONENT = 0.5
NOISE_VOLUME_FACTOR = (0.35, 1.6)
# A clinical 2D FLAIR reconstructs on a finer matrix than it acquires, and a 512 matrix is interpolated,
# not sharper: the noise has the acquired band (output voxel / acquired voxel in-plane) and the acquired
# voxel's SD (interpolation keeps the per-voxel variance). The acquired voxel is the output's / a band
# drawn from CLINICAL2D_KSPACE_FRACTION, never finer than CLINICAL2D_FINEST_ACQUIRED_MM: on the real 0.57
# mm scans here Immerkaer's noise (0.021-0.026) and the 1 mm grain (0.028-0.032) are the 0.72 mm scans'
# (0.017-0.023, 0.024-0.029), as 0.6-0.8 bands give; the 0.4-0.5 mm synthetic cases, whose per-voxel SD
# was that of a true 0.45 mm voxel (x 1.6), showed sub-millimetre speckle that gave them away to blind
# readers (docs/synth.md, seventeenth session).
CLINICAL2D_FINEST_ACQUIRED_MM = 0.75
# The real clinical FLAIRs' noise correlates at 0.44-0.56 between neighbours and -0.14 to -0.24 at two
# voxels (sinc-shaped, from zero-filled reconstruction); bands of 0.6-0.8 give 0.44-0.52 and -0.08 to
# -0.17 on the synthetic ones (same measure). The Gaussian correlation used before gave 0.35-0.50 and
# -0.03 to +0.17: the same pixel-to-pixel noise with more power at 1-2 mm, a grain the montage showed.
CLINICAL2D_KSPACE_FRACTION = (0.6, 0.8)
KSPACE_FRACTION = (0.6, 0.9)
BACKGROUND_NOISE_SHARE = 0.3


@dataclass
class SynthSample:
    """One synthetic case on its output grid.

    flair, t1 : float32 (X, Y, Z), arbitrary scanner-like units
    wmh, brainmask : uint8 (X, Y, Z), 0/1
    tissue : uint8 (X, Y, Z), atlas labels (names in ``meta['tissue_labels']``)
    affine : (4, 4) voxel -> world mm, shared by every array
    meta : JSON-able description (seed, profile, age, lesion load, contrast, geometry ...)
    """

    flair: np.ndarray
    t1: np.ndarray
    wmh: np.ndarray
    brainmask: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray
    meta: dict


def sample_rng(seed: int, index: int = 0) -> np.random.Generator:
    """The generator of case ``index`` of a run seeded with ``seed`` (independent streams)."""
    return np.random.default_rng([int(seed), int(index)])


def label_names() -> dict[int, str]:
    """Tissue label id -> name, as written to ``tissue.nii.gz``."""
    return dict(load_atlas().names)


def training_geometry(
    rng: np.random.Generator, shape: tuple[int, int, int] = (128, 160, 128), spacing_mm: float = 1.5
) -> Geometry:
    """An axis-aligned RAS grid of ``shape`` at ``spacing_mm`` around the brain (for the Dataset)."""
    aff = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    centre = rng.uniform([-8, -12, -8], [8, 12, 12])
    aff[:3, 3] = centre - spacing_mm * (np.array(shape) - 1) / 2.0
    return Geometry("train", tuple(int(s) for s in shape), aff, np.full(3, spacing_mm), (0, 1, 2))


def generate_sample(
    rng_or_seed: np.random.Generator | int,
    profile: str = "mixed",
    skull: bool = False,
    *,
    index: int = 0,
    work_spacing_mm: float = 1.0,
    train_shape: tuple[int, int, int] = (128, 160, 128),
    severity: str | None = None,
    random_contrast_share: float = RANDOM_CONTRAST_SHARE,
) -> SynthSample:
    """Generate one case.

    Parameters
    ----------
    rng_or_seed : a Generator, or an int seed combined with ``index`` (see :func:`sample_rng`)
    profile : 'clinical2d', 'research3d', 'mixed' (either, 50/50) or 'train' (an isotropic grid of
        ``train_shape`` at ``work_spacing_mm``, generated directly without resampling: the fast path
        for the training Dataset)
    skull : keep skull, scalp, eyes and neck; otherwise everything outside the brain mask is 0
    work_spacing_mm : working-grid voxel size; 1 mm for realistic output, 2 mm for fast tests
    severity : force a lesion load category ('none', 'mild', 'moderate', 'severe'); None draws it
    random_contrast_share : probability of fully random tissue contrasts instead of FLAIR/T1-like ones
        (the same random draw is made whatever the value, so other settings of a seed stay comparable)
    """
    seed = None
    if isinstance(rng_or_seed, np.random.Generator):
        rng = rng_or_seed
    else:
        seed = int(rng_or_seed)
        rng = sample_rng(seed, index)
    atlas = load_atlas()
    train = profile == "train"
    geom = training_geometry(rng, train_shape, work_spacing_mm) if train else sample_geometry(rng, profile)
    age = float(rng.uniform(0.0, 1.0))
    random_contrast = bool(rng.random() < random_contrast_share)
    spatial = random_spatial_params(rng)

    if train:
        work_aff, work_shape = geom.affine, geom.shape
    else:
        work_aff, work_shape = working_grid(geom, work_spacing_mm)
    anat = warp_atlas(rng, work_aff, work_shape, spatial)
    atrophy = apply_atrophy(anat, age, rng, work_spacing_mm)
    if skull:
        atrophy.update(add_scalp_fat(anat, rng, work_spacing_mm))
    severity = severity or draw_severity(rng, age)
    target_ml = draw_target_ml(rng, severity)
    frac, lesion_info = make_lesions(rng, anat, work_spacing_mm, severity, target_ml)
    contrast = draw_contrast(rng, random_contrast, profile=geom.profile)
    flair_w, t1_w = render(rng, anat, frac, contrast, work_spacing_mm)
    brain_w = smooth_brain_fraction(np.isin(anat.labels, atlas.brain_ids()), work_spacing_mm)

    acquisition: dict = {}
    if train:
        flair, t1 = _simulate_resolution(rng, flair_w, t1_w, work_spacing_mm, acquisition)
        frac_o, brain_o, tissue = frac, brain_w, anat.labels
    else:
        flair, t1, frac_o, brain_o, tissue = _acquire_on_output_grid(
            rng, geom, work_aff, work_spacing_mm, (flair_w, t1_w, frac, brain_w), anat.labels, acquisition
        )
    brainmask = brain_o >= 0.5
    wmh = (frac_o >= 0.5) & brainmask
    noise, band = _acquisition_noise(rng, geom, acquisition)
    # Skull-stripped output is 0 outside the brain mask.
    keep = brainmask if not skull else _background_kept(rng, tissue > 0)
    flair = _rician(rng, flair, noise, keep, band)
    t1 = _rician(rng, t1, noise * rng.uniform(0.7, 1.3), keep, band)
    scale_f, scale_t = float(rng.uniform(300, 1500)), float(rng.uniform(300, 1500))
    flair = (flair * scale_f).astype(np.float32)
    t1 = (t1 * scale_t).astype(np.float32)
    meta = _describe(
        seed=seed, index=index, geom=geom, skull=skull, age=age, atrophy=atrophy, severity=severity,
        target_ml=target_ml, wmh=wmh, lesion_info=lesion_info, contrast=contrast, random_contrast=random_contrast,
        scale_f=scale_f, noise=noise, work_spacing_mm=work_spacing_mm, spatial=spatial, acquisition=acquisition,
    )
    return SynthSample(
        flair=flair,
        t1=t1,
        wmh=wmh.astype(np.uint8),
        brainmask=brainmask.astype(np.uint8),
        tissue=tissue,
        affine=geom.affine.copy(),
        meta=meta,
    )


def _acquire_on_output_grid(rng, geom: Geometry, work_aff, work_spacing_mm: float, volumes, labels, record: dict):
    """Point spread, slice profile and resampling from the working grid to ``geom``, then the images'
    edge enhancement in the profile's share of cases (and, on 2D grids, slice-to-slice gain steps); ``volumes`` =
    (FLAIR, T1, lesion fraction, brain fraction).

    Returns (flair, t1, lesion fraction, brain fraction, tissue labels) on the output grid."""
    flair_w, t1_w, frac, brain_w = volumes
    # In-plane point spread (sigma, mm): 2D FLAIRs are sharp in-plane (their blur is across slices).
    psf = float(rng.uniform(0.15, 0.45) if geom.slice_axis is not None else rng.uniform(0.3, 0.7))
    record["psf_sigma_mm"] = round(psf, 3)
    stack = np.stack(
        [blur_for_output(v, geom, work_spacing_mm, psf) for v in (flair_w, t1_w)]
        + [blur_for_output(v, geom, work_spacing_mm) for v in (frac, brain_w)]
    )
    flair, t1, frac_o, brain_o = sample_to_output(stack, work_aff, geom)
    flair, t1 = _edge_enhancement(rng, (flair, t1), geom.spacing, record, EDGE_ENHANCE_SHARE[geom.profile])
    tissue = sample_to_output(labels[None].astype(np.float32), work_aff, geom, mode="nearest")[0].astype(np.uint8)
    if geom.slice_axis is not None:
        # 2D multi-slice: interleaved excitation leaves small slice-to-slice intensity steps.
        jitter = float(rng.uniform(0.0, 0.03))
        record["slice_gain_sd"] = round(jitter, 4)
        shape = [1, 1, 1]
        shape[geom.slice_axis] = geom.shape[geom.slice_axis]
        for img in (flair, t1):
            img *= (1.0 + jitter * rng.standard_normal(geom.shape[geom.slice_axis])).reshape(shape).astype(np.float32)
    return flair, t1, frac_o, brain_o, tissue


def _acquisition_noise(rng, geom: Geometry, record: dict) -> tuple[float, list[float]]:
    """The grid's noise: SD relative to white matter (NOISE_SIGMA, scaled by the acquired voxel's volume)
    and the k-space band it fills per axis (see clinical_noise_band and _correlated_noise)."""
    noise = float(rng.uniform(*NOISE_SIGMA[geom.profile]))
    if geom.slice_axis is not None:
        inplane_mm = float(min(s for a, s in enumerate(geom.spacing) if a != geom.slice_axis))
        drawn_band = float(rng.uniform(*CLINICAL2D_KSPACE_FRACTION))
        acquired_mm = max(inplane_mm / drawn_band, CLINICAL2D_FINEST_ACQUIRED_MM)
        band = clinical_noise_band(geom, acquired_mm)
        noise *= _voxel_snr_factor(geom, band)
        record["acquired_inplane_mm"] = round(acquired_mm, 3)
    else:
        band = [float(rng.uniform(*KSPACE_FRACTION))] * 3
        noise *= _voxel_snr_factor(geom)
    record["noise_kspace_fraction"] = [round(c, 3) for c in band]
    return noise, band


def _describe(*, seed, index, geom: Geometry, skull, age, atrophy, severity, target_ml, wmh, lesion_info, contrast,
              random_contrast, scale_f, noise, work_spacing_mm, spatial, acquisition) -> dict:
    """The sample's JSON-able ``meta`` (see :class:`SynthSample`)."""
    atlas = load_atlas()
    voxel_ml = voxel_volume_ml(geom.affine)
    n_lesions = int(ndi.label(wmh, structure=np.ones((3, 3, 3)))[1]) if wmh.any() else 0
    return {
        "generator": "wmhkit.synth",
        "seed": seed,
        "index": int(index),
        "profile": geom.profile,
        "skull": bool(skull),
        "age": round(age, 4),
        "atrophy": {k: round(v, 3) for k, v in atrophy.items()},
        "lesion_severity": severity,
        "lesion_target_ml": round(target_ml, 3),
        "lesion_volume_ml": round(float(wmh.sum()) * voxel_ml, 4),
        "lesion_count": n_lesions,
        "lesion_shape_sources": lesion_info["sources"],
        "lesion_sources_detail": lesion_info.get("contributions", {}),
        "lesion_real_patients": lesion_info["real_patients"],
        "flair_lesion_wm_contrast": round(contrast["lesion_flair_contrast"], 4),
        "t1_lesion_wm_contrast": round(-contrast["lesion_t1_contrast"], 4),
        "random_contrast": random_contrast,
        "flair_wm_intensity": round(scale_f * float(contrast["flair_mean"][atlas.id("wm_deep")]), 2),
        "noise_sigma_rel_wm": round(noise, 4),
        "bias_sigma": round(contrast["bias_sigma"], 4),
        "coil_gain": [round(g, 4) for g in contrast["coil_gain"]],
        "distractors": {
            "csf_flow_artefact": round(contrast["flow_artefact"], 3),
            "ependymal_rim": round(contrast["ependymal_rim"], 3),
            "periventricular_gradient": round(contrast["pv_gradient"], 3),
            "wm_regional_sd": round(contrast["wm_regional"], 4),
            "wm_regional_scale_mm": round(contrast["wm_regional_scale_mm"], 2),
            "vessels": contrast["vessels"],
            "scalp_vessels": contrast["scalp_vessels"],
            "septum_flair_rel_wm": round(float(contrast["flair_mean"][atlas.id("septum_pellucidum")]), 3),
            "choroid_flair_rel_wm": round(float(contrast["flair_mean"][atlas.id("choroid_plexus")]), 3),
        },
        "shape": list(geom.shape),
        "voxel_size_mm": [round(float(s), 4) for s in geom.spacing],
        "slice_axis": geom.slice_axis,
        "slice_thickness_mm": None if geom.slice_thickness_mm is None else round(geom.slice_thickness_mm, 3),
        "orientation": geom.orientation,
        "working_spacing_mm": work_spacing_mm,
        "spatial": {
            "matrix": np.round(spatial["matrix"], 4).tolist(),
            "shift_mm": np.round(spatial["shift"], 2).tolist(),
            "deform_mm": round(spatial["deform_mm"], 3),
            "fine_deform_mm": round(spatial["fine_deform_mm"], 3),
            "cephalic_index": round(spatial["cephalic_index"], 3),
        },
        "acquisition": acquisition,
        "tissue_labels": {str(k): v for k, v in sorted(atlas.names.items())},
        "wm_labels": atlas.ids(WM_CLASSES),
        "ventricle_labels": atlas.ids(("csf_lateral_ventricle", "csf_third_fourth_ventricle")),
    }


def smooth_brain_fraction(brain: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Brain mask (working grid) as a smooth fraction whose 0.5 level is the exported mask's edge.

    Thresholding the nearest-neighbour labels directly gives a ragged, blocky edge, which skull-stripped
    images then show; real skull strippers give a smooth surface. Blurring over ~1.5 mm irons out the
    voxel steps and bridges the sulcal openings narrower than that, and the output grid then samples the
    edge at its own resolution.
    """
    return gaussian_blur(brain.astype(np.float32), BRAIN_EDGE_SIGMA_MM / spacing_mm)


def clinical_noise_band(geom: Geometry, acquired_inplane_mm: float) -> list[float]:
    """Share of each axis's k-space band that a clinical 2D grid's noise fills: output voxel / acquired
    voxel in-plane (at most the top of CLINICAL2D_KSPACE_FRACTION: the scanner's own filter), 1 across
    slices, which are excited and encoded separately."""
    top = CLINICAL2D_KSPACE_FRACTION[1]
    band = [min(float(s) / acquired_inplane_mm, top) for s in geom.spacing]
    band[geom.slice_axis] = 1.0
    return band


def _voxel_snr_factor(geom: Geometry, band=None) -> float:
    """Noise scale of a grid's voxel size: signal grows with voxel volume and noise does not, so a
    1 x 1 x 8 mm voxel is far less noisy than a 1 x 1 x 3 mm one. (Volume / the profile's reference) **
    -NOISE_VOLUME_EXPONENT, within NOISE_VOLUME_FACTOR; 1 on training grids.

    With the clinical 2D noise ``band`` (see clinical_noise_band) the volume is the acquired voxel's,
    output spacing / band per axis: a 0.45 mm matrix has the noise of the coarser voxels it interpolates.
    """
    reference = NOISE_REFERENCE_VOXEL_MM3.get(geom.profile)
    if reference is None:
        return 1.0
    spacing = np.asarray(geom.spacing, float)
    if band is not None:
        spacing = spacing / np.asarray(band, float)
    volume = float(np.prod(spacing))
    return float(np.clip((volume / reference) ** -NOISE_VOLUME_EXPONENT, *NOISE_VOLUME_FACTOR))


def _background_kept(rng: np.random.Generator, head: np.ndarray) -> np.ndarray | None:
    """Where a skull-on image keeps its noise: the head and a margin of 1-4 voxels (most scanners zero
    the air: 60-74 % of the voxels 4-12 voxels outside the head are exactly 0 in the real clinical
    FLAIRs here, and all of them in the 3D one), or everywhere (None) in BACKGROUND_NOISE_SHARE of the
    cases, for scanners that keep it."""
    if rng.random() < BACKGROUND_NOISE_SHARE:
        return None
    return ndi.binary_dilation(head, iterations=int(rng.integers(1, 5)))


def _rician(
    rng: np.random.Generator,
    img: np.ndarray,
    sigma: float,
    mask: np.ndarray | None = None,
    kspace_fraction=(1.0, 1.0, 1.0),
) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of std ``sigma`` per voxel (Rician, Gaussian at
    high SNR), the noise band-limited to ``kspace_fraction`` of each axis's band (see _correlated_noise).

    With ``mask`` the result is 0 outside it (noise is drawn only over the mask's bounding box).
    """
    box = (slice(None),) * img.ndim if mask is None else mask_bounding_box(mask)
    out = np.zeros(img.shape, np.float32)
    if box is None:
        return out
    shape = img[box].shape
    real = img[box] + sigma * _correlated_noise(rng, shape, kspace_fraction)
    imag = sigma * _correlated_noise(rng, shape, kspace_fraction)
    out[box] = np.sqrt(real * real + imag * imag)
    if mask is not None:
        out[~mask] = 0.0
    return out


def _correlated_noise(rng: np.random.Generator, shape, kspace_fraction) -> np.ndarray:
    """float32 noise of ``shape`` with unit std per voxel, band-limited along each axis to
    ``kspace_fraction`` of the Nyquist frequency (1 = white).

    A scanner that acquires fewer k-space lines than it reconstructs (zero-filled interpolation) leaves
    its noise without power above the acquired band: neighbours correlate positively and the next ones
    negatively (sinc-shaped), as measured on the real clinical FLAIRs (lag 1 0.44-0.56, lag 2 -0.14 to
    -0.24). A Hann-windowed sinc kernel per axis does that at the cost of a short convolution.
    """
    noise = white_noise(rng, shape)
    for axis, fraction in enumerate(kspace_fraction):
        if fraction >= 0.98:
            continue
        radius = int(np.ceil(4.0 / fraction))
        n = np.arange(-radius, radius + 1)
        weights = np.sinc(fraction * n) * (0.5 + 0.5 * np.cos(np.pi * n / (radius + 1)))
        weights /= np.sqrt(np.sum(weights**2))  # unit variance out for unit variance in
        noise = ndi.correlate1d(noise, weights.astype(np.float32), axis=axis, mode="wrap")
    return noise


def _simulate_resolution(rng, flair, t1, spacing_mm, record: dict):
    """Training grid: mimic a thick-slice or lower-resolution acquisition by blurring in place."""
    sigma = rng.uniform(0.0, 0.6, 3) / spacing_mm
    axis = None
    thickness = 0.0
    if rng.random() < 0.6:
        axis = int(rng.choice(3, p=[0.15, 0.15, 0.7]))
        thickness = float(rng.uniform(2.0, 7.0))
        sigma[axis] = 0.0
    record.update({"blur_sigma_mm": np.round(sigma * spacing_mm, 3).tolist(), "thick_axis": axis,
                   "thickness_mm": round(thickness, 3)})
    out = []
    for img in (flair, t1):
        if axis is not None:
            img = slice_profile_blur(img, axis, thickness / spacing_mm)
        out.append(gaussian_blur(img, sigma))
    return _edge_enhancement(rng, out, np.full(3, spacing_mm), record, EDGE_ENHANCE_SHARE["train"])


def _edge_enhancement(rng, images, spacing_mm, record: dict, share: float):
    """Unsharp-mask the images with probability ``share`` (FLAIR and T1 alike): the overshoot that
    reconstruction filters and resampling to a template leave along edges. The labeled open_ms FLAIRs
    (MNI, 1 mm) rise to 1.11 x the brain median 1.5-2 mm from the ventricles and fall back to 1.04 by
    3 mm, a bright lining that their raters did not call lesion; a native 3D FLAIR here and the
    generator without this have no such peak (docs/synth.md, session 24)."""
    # Drawn whether or not the case is enhanced, so the share can change without moving later draws.
    amount = float(rng.uniform(*EDGE_ENHANCE_AMOUNT))
    sigma_mm = float(rng.uniform(*EDGE_ENHANCE_SIGMA_MM))
    if rng.random() >= share:
        record["edge_enhance"] = 0.0
        return list(images)
    record.update({"edge_enhance": round(amount, 3), "edge_enhance_sigma_mm": round(sigma_mm, 3)})
    sigma_vox = sigma_mm / np.asarray(spacing_mm, dtype=float)
    return [edge_enhance(img, sigma_vox, amount) for img in images]

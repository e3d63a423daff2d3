"""Build the compact anatomy atlas and lesion-shape library that `wmhkit.synth` ships with.

Development script, run once (re-runnable, deterministic); the installed package never reads the
sources below at run time.

Sources (see src/wmhkit/data/synth/ATTRIBUTION.md):
  * MNI ICBM152 2009a (nonlinear symmetric) T1, shipped in the nilearn wheel: only its 1 mm grid.
  * Colin27 (ch2.nii.gz whole head, ch2bet.nii.gz brain), Debian mricron-data: every tissue class
    (brain from an intensity segmentation of ch2bet, non-brain from ch2).
  * 30 consensus lesion masks and brain masks of Lesjak et al. 2018 (CC-BY).

Outputs (src/wmhkit/data/synth/):
  * atlas_labels.nii.gz : uint8 label map, MNI space, 1 mm, cropped to the head. Names in LABELS below
    (also written to atlas_labels.json).
  * lesion_library.npz  : connected components (26-conn) of the real lesion masks, bit-packed crops in
    RAS orientation, with normalised centroid (in the brain-mask bounding box), voxel count, patient.

Usage:  python scripts/build_synth_assets.py [--sources /work/shared/data]   (needs nilearn installed)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

OUT = Path(__file__).resolve().parents[1] / "src" / "wmhkit" / "data" / "synth"

# Label ids and names; the generator reads the json, so ids here are the single source of truth.
LABELS = {
    0: "background",
    1: "wm_periventricular",
    2: "wm_deep",
    3: "wm_juxtacortical",
    4: "gm_cortex_frontal",
    5: "gm_cortex_parietooccipital",
    6: "gm_cortex_temporal",
    7: "gm_deep_striatum",
    8: "gm_deep_thalamus",
    9: "csf_lateral_ventricle",
    10: "csf_third_fourth_ventricle",
    11: "csf_sulcal_extracerebral",
    12: "cerebellum_gm",
    13: "cerebellum_wm",
    14: "brainstem",
    15: "septum_pellucidum",
    16: "choroid_plexus",
    17: "skull_bone",
    18: "skull_marrow",
    19: "scalp_fat",
    20: "muscle_soft_tissue",
    21: "eye",
    22: "orbital_fat",
    23: "dura_meninges",
}
ID = {v: k for k, v in LABELS.items()}


def mm_grid(shape, affine):
    """World (RAS mm) coordinates of every voxel, each of shape `shape`."""
    ijk = np.indices(shape, dtype=np.float32)
    return [affine[a, 0] * ijk[0] + affine[a, 1] * ijk[1] + affine[a, 2] * ijk[2] + affine[a, 3] for a in range(3)]


def largest_components(mask, n=1, min_size=1):
    lab, k = ndi.label(mask, structure=np.ones((3, 3, 3)))
    if k == 0:
        return mask
    sizes = ndi.sum(mask, lab, range(1, k + 1))
    keep = [i + 1 for i in np.argsort(sizes)[::-1][:n] if sizes[i] >= min_size]
    return np.isin(lab, keep)


def segment_colin(t1, bet):
    """CSF / GM / WM of the Colin27 brain (T1, 27 averaged scans: bias-free, high SNR).

    Intensity thresholds between the class peaks (CSF ~30, GM ~85, WM ~112) on a lightly smoothed T1,
    plus sulcal fundi: voxels much darker than their 3 mm neighbourhood maximum (the thin CSF line
    between two GM banks, blurred by partial volume). The intracranial space is the brain mask closed
    and grown by 2 mm (the outer 1 mm becomes dura), so that a thin CSF layer covers the whole
    surface. Returns (wm, gm, csf, intracranial) masks.
    """
    ts = ndi.gaussian_filter(t1, 0.5)
    valley = bet & (ts < ndi.grey_closing(ts, size=(3, 3, 3)) - 12) & (ts < 80)
    wm = bet & (ts > 99) & ~valley
    gm = bet & (ts >= 62) & ~wm & ~valley
    # Drop specks: WM islands of fewer than 20 voxels become GM.
    lab, k = ndi.label(wm, structure=np.ones((3, 3, 3)))
    small = np.flatnonzero(ndi.sum(wm, lab, range(1, k + 1)) < 20) + 1
    speck = np.isin(lab, small)
    wm &= ~speck
    gm |= speck
    intracranial = ndi.binary_fill_holes(ndi.binary_dilation(ndi.binary_closing(bet, iterations=3), iterations=2))
    gm &= intracranial
    csf = intracranial & ~wm & ~gm
    return wm, gm, csf, intracranial


def build_atlas(src: Path):
    from nilearn import datasets

    # The MNI152 template only defines the grid (1 mm, MNI space); all tissue comes from Colin27, a single
    # subject with real cortical folding (thin sulci), copied onto that grid (both 1 mm, axis-aligned).
    t1_img = datasets.load_mni152_template(resolution=1)
    affine = t1_img.affine.copy()
    shape = t1_img.shape
    x, y, z = mm_grid(shape, affine)
    ch = nib.load(str(src / "templates" / "ch2.nii.gz"))
    off = np.rint(np.linalg.solve(affine, ch.affine @ [0, 0, 0, 1])[:3]).astype(int)
    sl = tuple(slice(o, o + n) for o, n in zip(off, ch.shape))
    head_t1 = np.zeros(shape, np.float32)
    bet_t1 = np.zeros(shape, np.float32)
    head_t1[sl] = ch.get_fdata()
    bet_t1[sl] = nib.load(str(src / "templates" / "ch2bet.nii.gz")).get_fdata()
    bet = largest_components(bet_t1 > 0)
    is_wm, is_gm, csf, brain = segment_colin(bet_t1, bet)
    depth = ndi.distance_transform_edt(brain)  # mm from the brain surface

    labels = np.zeros(shape, np.uint8)

    # Ventricles: CSF deep inside the brain near the centre, the largest connected pieces.
    central = (np.abs(x) < 38) & (y > -60) & (y < 40) & (z > -25) & (z < 40)
    # The opening (2 mm) keeps the wide ventricles and drops the thin sulci and fissures that touch
    # them; a 3 mm geodesic regrowth inside the CSF restores the ventricles' thin horns and edges.
    vent = csf & central & (depth > 12)
    core = largest_components(ndi.binary_opening(vent, iterations=2), n=2, min_size=200)
    vent = ndi.binary_dilation(core, iterations=3, mask=vent)
    third = vent & (np.abs(x) < 4) & (z < 12) & (y < 5)
    # Fourth ventricle: midline CSF in front of the cerebellum.
    fourth = csf & (np.abs(x) < 8) & (y > -55) & (y < -35) & (z > -45) & (z < -20) & (depth > 10)
    labels[csf] = ID["csf_sulcal_extracerebral"]
    labels[vent] = ID["csf_lateral_ventricle"]
    labels[third | fourth] = ID["csf_third_fourth_ventricle"]

    # Deep grey matter: GM-intensity voxels deep in the central region.
    deep_region = (np.abs(x) < 34) & (y > -42) & (y < 30) & (z > -14) & (z < 24) & (depth > 18)
    deep_gm = is_gm & deep_region & ~vent
    thal = deep_gm & (y < -4) & (np.abs(x) < 24)
    labels[is_wm] = ID["wm_deep"]
    cortex = is_gm & ~deep_gm
    labels[cortex & (y > 0) & (z > -5)] = ID["gm_cortex_frontal"]
    labels[cortex & (y <= 0)] = ID["gm_cortex_parietooccipital"]
    labels[cortex & (z <= -5) & (y > 0)] = ID["gm_cortex_frontal"]
    temporal = cortex & (np.abs(x) > 30) & (z < 5) & (y > -65) & (y < 25)
    labels[temporal] = ID["gm_cortex_temporal"]
    labels[deep_gm] = ID["gm_deep_striatum"]
    labels[thal] = ID["gm_deep_thalamus"]

    # Cerebellum below the tentorium (slopes down posteriorly), brainstem in the midline.
    tent = np.where(y < -50, -6 + 0.3 * (y + 50), -6)
    infratent = brain & (y < -38) & (z < tent) & (np.abs(x) < 58)
    stem = brain & (np.abs(x) < 15) & (y > -45) & (y < -8) & (z < -12) & ~csf
    stem |= brain & (z < -45) & (np.abs(x) < 15) & (y > -50) & ~csf
    cereb = infratent & ~stem & ~(labels == ID["csf_third_fourth_ventricle"]) & ~csf
    labels[cereb & is_gm] = ID["cerebellum_gm"]
    labels[cereb & is_wm] = ID["cerebellum_wm"]
    labels[stem] = ID["brainstem"]

    # Cerebral WM bands: periventricular (<= 8 mm from a lateral/third ventricle), juxtacortical
    # (<= 3 mm from cortical GM or sulcal CSF), deep otherwise.
    cerebral_wm = labels == ID["wm_deep"]
    d_vent = ndi.distance_transform_edt(~vent)
    d_cortex = ndi.distance_transform_edt(~(cortex | (csf & ~vent)))
    labels[cerebral_wm & (d_cortex <= 3)] = ID["wm_juxtacortical"]
    labels[cerebral_wm & (d_vent <= 8)] = ID["wm_periventricular"]

    # Septum pellucidum: the thin midline wall between the left and right lateral ventricle.
    left, right = ndi.binary_dilation(vent & (x < 0), iterations=3), ndi.binary_dilation(vent & (x > 0), iterations=3)
    septum = left & right & ~vent & (np.abs(x) < 3) & (y > -25) & (y < 30) & (z > -2) & (z < 30) & brain
    labels[septum] = ID["septum_pellucidum"]
    # Colin27's septum is thinner than a voxel in places, and the intensity segmentation joined the two
    # lateral ventricles across the midline there (372 rows of voxels): fused horns, which no real brain
    # has and which readers of the synthetic montage named as a tell. A midline sheet closes them: septum
    # in front, the fornix and splenium (periventricular white matter) behind it. Two voxels wide (x = 0
    # and 1 mm): three rendered as a 4 mm bright gap between the horns (real: 2-3 mm), and one would break
    # up under the warp's nearest-neighbour sampling at scales below 1.
    sheet = (labels == ID["csf_lateral_ventricle"]) & (x >= -0.5) & (x <= 1.0)
    labels[sheet & (y >= -25)] = ID["septum_pellucidum"]
    labels[sheet & (y < -25)] = ID["wm_periventricular"]
    # Choroid plexus: a blob of tissue inside the atria (trigones) of the lateral ventricles.
    atria = vent & (np.abs(x) > 12) & (y < -20) & (y > -50) & (z > 0) & (z < 28)
    chor = atria & (ndi.distance_transform_edt(vent) >= 1.5)
    labels[chor] = ID["choroid_plexus"]

    # Non-brain tissue from the same Colin27 head.
    head = ndi.binary_fill_holes(ndi.binary_closing(head_t1 > 25, iterations=3))
    head = largest_components(head)
    brain_or_bet = brain
    nonbrain = head & ~brain_or_bet
    # Meninges/dura: a thin shell at the outer edge of the intracranial space (over CSF only).
    shell = brain & ~ndi.binary_erosion(brain, iterations=1) & (labels == ID["csf_sulcal_extracerebral"])
    labels[shell] = ID["dura_meninges"]
    d_brain = ndi.distance_transform_edt(~brain_or_bet)
    d_skin = ndi.distance_transform_edt(head)
    v = head_t1
    dark, bright = v < 45, v > 120
    cls = np.full(shape, ID["muscle_soft_tissue"], np.uint8)
    cls[dark & (d_brain < 14)] = ID["skull_bone"]
    cls[dark & (d_brain >= 14)] = ID["skull_bone"]  # sinuses, air cells, dense bone: all dark on T1/FLAIR
    cls[bright & (d_brain < 9) & (d_skin > 4)] = ID["skull_marrow"]
    cls[bright & ~((d_brain < 9) & (d_skin > 4))] = ID["scalp_fat"]
    # Orbits: eyes are the dark round parts, orbital fat the bright surroundings.
    orbit = (np.abs(x) > 12) & (np.abs(x) < 50) & (y > 35) & (z > -50) & (z < -5)
    eye = orbit & (v < 75) & nonbrain
    eye = ndi.binary_opening(eye, iterations=2)
    eye = largest_components(eye, n=2, min_size=500)
    cls[orbit & bright] = ID["orbital_fat"]
    cls[eye] = ID["eye"]
    labels[nonbrain] = cls[nonbrain]
    fill_skull_gaps(labels)

    # Crop to the head with a small margin.
    fg = labels > 0
    lo = np.maximum(np.argwhere(fg).min(0) - 4, 0)
    hi = np.minimum(np.argwhere(fg).max(0) + 5, shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    new_aff = affine.copy()
    new_aff[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return labels[crop], new_aff


def fill_skull_gaps(labels, closing_mm: int = 4):
    """Make background pockets between the meninges and the skull bone, in place; returns their count.

    Colin27's head image is dark (below the head threshold) in a band between the dura and the inner
    table behind the right parietal lobe; left as background it rendered as a black notch with a bright
    rim in every skull-on case. Pockets are the background voxels a closing of the head fills that touch
    the meninges (the face's open cavities do not touch them and stay as they are).
    """
    head = labels > 0
    gap = ndi.binary_closing(head, structure=np.ones((3, 3, 3)), iterations=closing_mm) & ~head
    lab, _ = ndi.label(gap, structure=np.ones((3, 3, 3)))
    near_dura = ndi.binary_dilation(labels == ID["dura_meninges"], structure=np.ones((3, 3, 3)))
    touching = np.unique(lab[near_dura & gap])
    touching = touching[touching > 0]
    labels[np.isin(lab, touching)] = ID["skull_bone"]
    return len(touching)


# Diploe: skull voxels at least this deep inside the bone (mm) and this near the brain (mm, the vault and
# not the sinuses or air cells, which are dark).
DIPLOE_DEPTH_MM = 1.9
DIPLOE_NEAR_BRAIN_MM = 12.0
# The inner table is kept at least this thick (mm from the intracranial space). At 1.9 mm, as the outer
# table, the dark line between the diploe and the brain was 0.14-0.18 x the brain's median at its
# darkest (scripts/scalp_rim_profile.py, "inner dark"), where real clinical FLAIRs reach 0.09: their
# inner table and the CSF under it make a 2-4 mm black line.
INNER_TABLE_MM = 2.9


def carve_diploe(labels):
    """Make the inside of the cranial bone marrow (diploe), in place; returns the voxel count.

    The Colin27 segmentation marks marrow only where its T1 is bright (9 % of the vault's bone), so the
    skull renders as one dark band, where real FLAIRs show two thin dark tables around a brighter diploe:
    with the scalp line, two or three thin bright lines over 8-10 mm (docs/synth.md, fourteenth session).
    """
    skull = np.isin(labels, [ID["skull_bone"], ID["skull_marrow"]])
    brain = (labels > 0) & ~np.isin(labels, [ID[n] for n in (
        "skull_bone", "skull_marrow", "scalp_fat", "muscle_soft_tissue", "eye", "orbital_fat")])
    d_brain = ndi.distance_transform_edt(~brain)
    diploe = (skull & (ndi.distance_transform_edt(skull) >= DIPLOE_DEPTH_MM) & (d_brain >= INNER_TABLE_MM)
              & (d_brain < DIPLOE_NEAR_BRAIN_MM) & (labels == ID["skull_bone"]))
    labels[diploe] = ID["skull_marrow"]
    # Colin27's own marrow label lies on the bone's surface in places, some of it against the brain.
    labels[skull & (d_brain < INNER_TABLE_MM) & (labels == ID["skull_marrow"])] = ID["skull_bone"]
    return int(diploe.sum())


def distance_fields(labels):
    """Distance maps the generator needs, quantised to uint8 (decoding in wmhkit.synth.anatomy).

    d_vent: signed distance (mm) to the ventricles + choroid plexus, negative inside, stored as
    (d + 30) * 2 clipped to 0..255; d_csf: distance (mm) from sulcal CSF or non-brain, stored as d * 4;
    d_skin: depth (mm) below the head's surface (0 outside), stored as d * 8 (the scalp's 0-31 mm).
    """
    vent = np.isin(labels, [ID["csf_lateral_ventricle"], ID["csf_third_fourth_ventricle"], ID["choroid_plexus"]])
    d_vent = ndi.distance_transform_edt(~vent) - ndi.distance_transform_edt(vent)
    nonbrain = [ID[n] for n in ("skull_bone", "skull_marrow", "scalp_fat", "muscle_soft_tissue", "eye",
                                "orbital_fat", "dura_meninges", "csf_sulcal_extracerebral", "background")]
    d_csf = ndi.distance_transform_edt(~np.isin(labels, nonbrain))
    return {
        "d_vent": np.clip(np.rint((d_vent + 30.0) * 2.0), 0, 255).astype(np.uint8),
        "d_csf": np.clip(np.rint(d_csf * 4.0), 0, 255).astype(np.uint8),
        "d_skin": np.clip(np.rint(ndi.distance_transform_edt(labels > 0) * 8.0), 0, 255).astype(np.uint8),
    }


# Fused sulcal banks (see medial_sulci): neighbouring cortex voxels whose nearest white matter lies
# more than this far apart (mm), or more than this factor times their depth below the white matter.
MEDIAL_JUMP_MM = 3.0
MEDIAL_JUMP_PER_DEPTH = 1.2


def medial_sulci(labels):
    """Cortex voxels on the surface midway between two cortical banks: the sulci Colin27's average shows
    as solid grey matter.

    Colin27 is the mean of 27 scans of one head, so the CSF of a closed sulcus is averaged away: its T1
    shows a 5-7 mm tongue of grey matter between two white-matter fingers, which renders on FLAIR as a
    thick bright blob where real scans show two cortical ribbons with a dark line between them (the
    reason the synthetic cortex did not read as a ribbon). That line is where the nearest white matter
    jumps from one bank to the other: for a pair of neighbouring cortex voxels, the nearest white-matter
    points (Euclidean feature transform) lie a tongue's width apart instead of about a voxel; the deeper
    voxel of the pair is marked if it is also a ridge of the depth along that axis (one voxel thick).
    Ordinary cortex is left alone: its voxels lie a median 2 mm from white matter, 90 % within 3.7 mm.
    """
    cortex = np.isin(labels, [ID[n] for n in LABELS.values() if n.startswith("gm_cortex")])
    wm = np.isin(labels, [ID["wm_periventricular"], ID["wm_deep"], ID["wm_juxtacortical"]])
    depth, nearest = ndi.distance_transform_edt(~wm, return_indices=True)
    medial = np.zeros(labels.shape, bool)
    for axis in range(3):
        lo = tuple(slice(0, -1) if a == axis else slice(None) for a in range(3))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        jump = np.sqrt(sum((n[hi] - n[lo]).astype(np.float32) ** 2 for n in nearest))
        shallower = np.minimum(depth[lo], depth[hi])
        pair = cortex[lo] & cortex[hi] & (jump > np.maximum(MEDIAL_JUMP_MM, MEDIAL_JUMP_PER_DEPTH * shallower))
        marked = np.zeros(labels.shape, bool)
        marked[lo] |= pair & (depth[lo] >= depth[hi])
        marked[hi] |= pair & (depth[lo] < depth[hi])
        ridge = (depth >= np.roll(depth, 1, axis)) & (depth >= np.roll(depth, -1, axis))
        medial |= marked & ridge
    return medial


# Cortex labels lining the ventricles (see ventricle_lining): within this distance (mm) of a lateral
# ventricle, farther than this from sulcal CSF, above this MNI height.
LINING_MAX_VENTRICLE_MM = 2.0
LINING_MIN_SULCAL_MM = 4.0
LINING_MIN_Z_MM = -5.0


def ventricle_lining(labels, fields, affine):
    """Cortex-labelled voxels lining the lateral ventricles' bodies: a segmentation artefact to undo.

    Colin27's intensity segmentation calls the partial-volume voxels between ventricle and white matter
    grey matter (their T1 lies between CSF and WM), about 4 ml in a one-voxel shell. Rendered as cortex
    they are a bright ring around every ventricle, and grown ventricles leave them as a grey line inside
    a dark rim. Real cortex that far from sulcal CSF (> 4 mm) yet within 2 mm of a ventricle exists only
    at the temporal horns (hippocampus), below the 5 mm-under-the-origin cut. ``fields`` are the
    quantised maps of :func:`distance_fields`, decoded as the generator decodes them.
    """
    d_vent = fields["d_vent"].astype(np.float32) / 2.0 - 30.0
    d_csf = fields["d_csf"].astype(np.float32) / 4.0
    cortex = np.isin(labels, [ID[n] for n in LABELS.values() if n.startswith("gm_cortex")])
    z_mm = affine[2, 2] * np.arange(labels.shape[2]) + affine[2, 3]
    above_temporal_horns = (z_mm > LINING_MIN_Z_MM)[None, None, :]
    return cortex & (d_vent <= LINING_MAX_VENTRICLE_MM) & (d_csf > LINING_MIN_SULCAL_MM) & above_temporal_horns


# Colin27 T1 class peaks (lightly smoothed ch2bet histogram): cortex ~85, white matter ~112.
COLIN_GM_PEAK, COLIN_WM_PEAK = 85.0, 112.0
# Half-width (mm) of the band around the cortex/white-matter boundary where the GM share is kept.
GM_SHARE_BAND_MM = 2


def gm_share_field(ts, labels):
    """Grey-matter share of each voxel near the cortex/white-matter boundary, from Colin27's T1.

    Labels give every voxel one class, so the cortex/WM boundary renders as a one-voxel staircase that
    the point spread turns into blobs; the T1 intensity between the two class peaks is the partial
    volume a real scan shows there. Kept only within GM_SHARE_BAND_MM of the boundary, in cortex and
    cerebral WM (0 elsewhere: pure classes render from their labels), stored as share * 250 in uint8.
    ``ts``: Colin27's T1 on the atlas grid, lightly smoothed (see main).
    """
    cortex = np.isin(labels, [ID[n] for n in LABELS.values() if n.startswith("gm_cortex")])
    wm = np.isin(labels, [ID["wm_periventricular"], ID["wm_deep"], ID["wm_juxtacortical"]])
    near_cortex = ndi.binary_dilation(cortex, iterations=GM_SHARE_BAND_MM)
    band = near_cortex & ndi.binary_dilation(wm, iterations=GM_SHARE_BAND_MM) & (cortex | wm)
    share = np.clip((COLIN_WM_PEAK - ts) / (COLIN_WM_PEAK - COLIN_GM_PEAK), 0.0, 1.0)
    return np.where(band, np.rint(share * 250.0), 0).astype(np.uint8)


# Colin27 cortex darker than this is part CSF: the darkest 5-10 % of the cortex's interior (voxels 2 mm or
# more from any other class) lie at 75-77, its median at 83; sulcal CSF itself at ~30 and below.
COLIN_SULCAL_ONSET, COLIN_CSF_LEVEL = 76.0, 30.0


def csf_share_field(ts, labels):
    """CSF share of cortex voxels, from Colin27's T1, stored as share * 250 in uint8.

    The segmentation labels a sulcus CSF only where its fundus is clearly dark, so most of Colin27's
    sulci, visible on its T1 as continuous darker lines between the cortical banks, are cortex in the
    labels: warped and averaged over a thick slice they vanish, and the cortex renders as bright
    blobs. The T1 intensity below the cortex's own range is the CSF partial volume there. ``ts`` as
    for :func:`gm_share_field`.
    """
    cortex = np.isin(labels, [ID[n] for n in LABELS.values() if n.startswith("gm_cortex")])
    share = np.clip((COLIN_SULCAL_ONSET - ts) / (COLIN_SULCAL_ONSET - COLIN_CSF_LEVEL), 0.0, 1.0)
    return np.where(cortex, np.rint(share * 250.0), 0).astype(np.uint8)


def colin_t1_on_atlas_grid(src: Path, shape, affine):
    """Colin27's brain T1 copied onto the atlas grid (both 1 mm and axis-aligned)."""
    ch = nib.load(str(src / "templates" / "ch2bet.nii.gz"))
    off = np.rint(np.linalg.solve(affine, ch.affine @ [0, 0, 0, 1])[:3]).astype(int)
    out = np.zeros(shape, np.float32)
    # The atlas is cropped to the head: paste only the overlap.
    lo, hi = np.maximum(off, 0), np.minimum(off + np.array(ch.shape), shape)
    src_box = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, off))
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = np.asarray(ch.dataobj, np.float32)[src_box]
    return out


def lesion_library(src: Path):
    crops, shapes, centroid, count, patient = [], [], [], [], []
    folder = src / "open_ms" / "lesion_masks"
    for n in range(1, 31):
        les_img = nib.as_closest_canonical(nib.load(str(folder / f"patient{n:02d}_consensus_1mm.nii.gz")))
        bm_img = nib.as_closest_canonical(nib.load(str(folder / f"patient{n:02d}_brainmask_1mm.nii.gz")))
        les = les_img.get_fdata() > 0.5
        bm = bm_img.get_fdata() > 0.5
        idx = np.argwhere(bm)
        blo, bhi = idx.min(0), idx.max(0)
        lab, k = ndi.label(les, structure=np.ones((3, 3, 3)))
        for i, s in enumerate(ndi.find_objects(lab)):
            comp = lab[s] == i + 1
            com = np.array(ndi.center_of_mass(comp)) + [sl.start for sl in s]
            crops.append(np.packbits(comp.ravel()))
            shapes.append(comp.shape)
            centroid.append((com - blo) / np.maximum(bhi - blo, 1))
            count.append(int(comp.sum()))
            patient.append(n)
    offsets = np.cumsum([0] + [len(c) for c in crops])
    return dict(
        bits=np.concatenate(crops).astype(np.uint8),
        offsets=offsets.astype(np.int64),
        shapes=np.array(shapes, np.int16),
        centroid=np.array(centroid, np.float32),
        voxels=np.array(count, np.int32),
        patient=np.array(patient, np.int8),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=Path, default=Path("/work/shared/data"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    labels, affine = build_atlas(args.sources)
    # The lining is found on the segmentation as it came (the opened sulci would bring sulcal CSF
    # within its 4 mm of the posterior cingulate and keep ~1 ml of lining as cortex).
    lining = ventricle_lining(labels, distance_fields(labels), affine)
    medial = medial_sulci(labels) & ~lining
    labels[medial] = ID["csf_sulcal_extracerebral"]
    print(f"closed sulci opened as sulcal CSF: {medial.sum() / 1000:.1f} ml")
    fields = distance_fields(labels)
    # Smoothed lightly (0.5 mm) so that the partial-volume shares follow tissue, not voxel noise.
    colin_t1 = ndi.gaussian_filter(colin_t1_on_atlas_grid(args.sources, labels.shape, affine), 0.5)
    gm_share = gm_share_field(colin_t1, labels)
    csf_share = csf_share_field(colin_t1, labels)
    # The lining is undone after the fields and the GM share are taken (relabelling cortex as white
    # matter moves neither the ventricles nor the sulcal CSF).
    labels[lining] = ID["wm_periventricular"]
    gm_share[lining] = 0
    csf_share[lining] = 0
    print(f"ventricle lining relabelled as periventricular WM: {lining.sum() / 1000:.1f} ml")
    # Last, after the distance fields: bone and marrow count alike in them.
    print(f"diploe carved as marrow: {carve_diploe(labels) / 1000:.1f} ml")
    img = nib.Nifti1Image(labels, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(OUT / "atlas_labels.nii.gz"))
    (OUT / "atlas_labels.json").write_text(json.dumps({str(k): v for k, v in LABELS.items()}, indent=1) + "\n")
    counts = np.bincount(labels.ravel(), minlength=len(LABELS))
    for k, name in LABELS.items():
        print(f"{k:3d} {name:30s} {counts[k] / 1000:9.1f} ml")
    np.savez_compressed(OUT / "atlas_fields.npz", **fields, gm_share=gm_share, csf_share=csf_share)
    lib = lesion_library(args.sources)
    np.savez_compressed(OUT / "lesion_library.npz", **lib)
    print(f"lesion library: {len(lib['voxels'])} components, {lib['voxels'].sum() / 1000:.1f} ml")


if __name__ == "__main__":
    main()

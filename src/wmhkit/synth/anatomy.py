"""Anatomy for synthesis: the shipped label atlas, random spatial warps and atrophy.

The atlas (``data/synth/atlas_labels.nii.gz``, 1 mm MNI space, names in ``atlas_labels.json``) is
warped onto a *working grid*: an axis-aligned grid in the sample's world space (RAS mm). A sample's
world space is the atlas moved by a random affine (rotation, scaling, shear, translation) and a smooth
random displacement field; world point ``w`` shows atlas point ``A^-1 (w) + u(w)``. The warp gathers
labels and distance maps at the nearest atlas voxel and interpolates the partial-volume maps with
``torch.nn.functional.grid_sample`` where they are non-zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from wmhkit.preprocess import mask_bounding_box
from wmhkit.synth.fields import smooth_noise_at, upsample

ASSETS = Path(__file__).resolve().parents[1] / "data" / "synth"

# Label groups by name (ids come from atlas_labels.json).
WM_CLASSES = ("wm_periventricular", "wm_deep", "wm_juxtacortical")
CORTEX_CLASSES = ("gm_cortex_frontal", "gm_cortex_parietooccipital", "gm_cortex_temporal")
VENTRICLE_CLASSES = ("csf_lateral_ventricle", "csf_third_fourth_ventricle")
NONBRAIN_CLASSES = (
    "skull_bone", "skull_marrow", "scalp_fat", "muscle_soft_tissue", "eye", "orbital_fat", "dura_meninges",
)
# The head's left-right width / front-back length (cephalic index) on the atlas's axial sections through
# the lateral ventricles (median; Colin27), and the index a sample's head is drawn with: lowest, median,
# highest. The median is near the raw clinical FLAIRs' (0.79, 0.73-0.85; scripts/scalp_rim_profile.py,
# "head W/L"; docs/synth.md, twenty-fifth session). The upper half reaches the proportions of scans
# registered to a template: the labeled real cases' brains are 0.96-1.05 x Colin27's width / length
# (principal axes), and cut at the raw scans' 0.73-0.88 (0.87-1.04 x) the 3D U-Net lost 0.12 Dice on
# the real cases, most of it on the widest, patient19 (docs/training.md, session 27).
ATLAS_CEPHALIC_INDEX = 0.843
CEPHALIC_INDEX_QUANTILES = (0.72, 0.81, 0.93)
# Mean pitch (deg, about left-right) of the slice plane against the atlas's (MNI) axial plane. Registered
# rigidly with per-axis scale to Colin27, the 11 clinical 2D FLAIRs beside the checkout are pitched
# 5.5-16.4 deg (median 9.8, SD 2.9; the 1 mm 3D FLAIR 17.9), with roll and yaw within +-5.5 deg, and
# the same measurement reads 1.1 +- 2.7 deg on the MNI-registered cases and recovers the drawn pitch of
# synthetic cases within 1.5 deg (docs/synth.md, thirty-second session). Centred at 0, the synthetic
# slices cut the brain's back at a different level from the real ones (the cisterns behind the thalami
# where the real slices show the atria and the splenium). 8, not 10: registered and AC-PC-planned scans
# sit at 0. It is kept for realism: tilting the real large-ventricle case by +-8 deg moved no model's
# Dice apart from another's (docs/training.md, session 32).
PITCH_CENTRE_DEG = 8.0
# The atlas point shown at the centre of the world grid: roughly the middle of the cerebrum.
ATLAS_CENTRE_MM = np.array([0.0, -18.0, 12.0])
# Partial volume of sulcal CSF (Gaussian sigma, mm, on the 1 mm atlas): Colin27's sulci are mostly one
# voxel wide, and a real voxel there holds CSF and cortex (a grey line on FLAIR, not a black one). 0.65
# left the synthetic brains blurrier than the real scans: the 90th percentile of the in-brain gradient
# (scripts/compare_flair_intensities.py, "edge") was 0.16-0.18 / mm against 0.15-0.20 real, its 99th
# 0.33-0.37 against 0.40-0.49; at 0.4 they are 0.18-0.20 and 0.35-0.39.
SULCAL_PV_SIGMA_MM = 0.4
# How far the lateral ventricles' walls move (mm) at atrophy 0 and 1 (x0.8-1.2, as atrophy **
# VENTRICLE_CHANGE_POWER in between). Growing from Colin27's ventricles only (0 to 4 mm, as atrophy**1.5)
# left the synthetic ventricles twice the real scans' size: the dark central area of the montage's
# slice was 5.5 % of the head's section (median of 24 cases, 2.2-11.8 %) against 2.4 % on the 15 real
# FLAIRs beside the checkout (0.5-9.1 %; docs/synth.md, thirty-second session), and the strongly grown
# ones were the "ventricles no anatomy makes" of the blind readers. Cubic (cache 29: a median move of
# -0.4 mm, 11 % of cases over 2.5 mm; the montage's dark area 0.029) both 3D networks lost the real case
# with large ventricles (patient19: U-Net 0.36, FCN-2 0.35, against 0.37-0.57 and 0.67-0.74), and the
# elderly patients WMH tools serve have larger ventricles than the MS cohort measured here; squared, the
# median move is +0.25 mm and 16 % of cases grow over 2.5 mm (cache 30: the 3D U-Net's Dice on the
# three real labeled cases 0.608, patient19 0.63; docs/training.md, sessions 32-33).
VENTRICLE_CHANGE_MM = (-1.0, 4.0)
VENTRICLE_CHANGE_POWER = 2.0
# Ventricles grown by at least this much (mm) absorb the thin tissue sheets left inside them; the
# closing that finds those sheets bridges gaps up to about twice its radius (mm).
BRIDGE_MIN_GROWTH_MM = 1.5
BRIDGE_CLOSING_MM = 1.5
# Half-width (mm) of the midline wall the ventricles never grow into: the septum pellucidum in front, the
# corpus callosum above, the fornix and splenium behind. Without it the two lateral ventricles of an old
# case met over and behind the septum (one connected ventricle in every fully atrophied case).
MIDLINE_WALL_MM = 1.5
# The gyral-scale displacement fades out towards the ventricles (mm from them: none within the first,
# all of it beyond the second). It is there to bend the gyri; at full strength it also made the
# ventricles' walls wavy (23 % of the wall voxels changed label at 1.1 mm), bumps a millimetre high every
# few millimetres that no anatomy explains (docs/synth.md, twenty-fifth session).
GYRAL_WARP_CLEAR_MM = (4.0, 12.0)


def off_midline(anat: "WarpedAnatomy") -> np.ndarray:
    """(X, Y, Z) bool: voxels outside the midline wall (MIDLINE_WALL_MM), where ventricles may grow."""
    return np.abs(anat.atlas_x) >= MIDLINE_WALL_MM
# Where the ventricles' surface distance is interpolated (nearest-voxel signed distance, mm): from inside
# the wall out to beyond the largest ventricle growth of apply_atrophy (4 * 1.2 mm).
VENT_SURFACE_BAND_MM = (-2.5, 6.5)
# Age thinning of the cortex (mm at atrophy 1, x0.8-1.2) and the pial surface's irregularity (SD, mm,
# at a 2.5 mm scale). The real ribbon thins by about half a millimetre over adult life. At 1.2 mm the
# thinning took the whole outer voxel layer of Colin27's 2-4 voxel ribbon on both banks of every
# sulcus, and what was left of it, blended with CSF on one side and white matter on the other, rendered
# as bright fragments between grey gaps on old cases, a cortex no real FLAIR shows (docs/synth.md,
# fifteenth session); below 1 mm it stays a partial volume of the outer layer.
CORTEX_THINNING_MM = 0.6
PIAL_IRREGULARITY_MM = 0.5


@dataclass(frozen=True)
class Atlas:
    """The shipped anatomy atlas and the distance maps atrophy and lesions need.

    labels : uint8 (X, Y, Z), 1 mm
    affine : (4, 4) voxel -> MNI mm
    names : {id: name}
    fields : float32 (3, X, Y, Z): signed distance (mm) to the lateral/third ventricles (negative
        inside; voxel centre to the nearest voxel centre of the other side), distance (mm) from sulcal
        CSF or the brain's outside (0 there), and depth (mm) below the head's surface.
    csf_frac : float32 (X, Y, Z) in [0, 1]: sulcal CSF partial-volume fraction (smoothed CSF mask, or
        in cortex the CSF share Colin27's T1 shows, whichever is larger)
    gm_share : float32 (X, Y, Z) in [0, 1]: grey-matter share near the cortex/white-matter boundary
        (from Colin27's T1 intensity between its GM and WM peaks; 0 away from the boundary)
    """

    labels: np.ndarray
    affine: np.ndarray
    names: dict[int, str]
    fields: np.ndarray
    csf_frac: np.ndarray
    gm_share: np.ndarray

    def ids(self, names) -> list[int]:
        inverse = {v: k for k, v in self.names.items()}
        return [inverse[n] for n in names]

    def id(self, name: str) -> int:
        return self.ids([name])[0]

    def brain_ids(self) -> list[int]:
        """Ids of every brain class (not background, not NONBRAIN_CLASSES)."""
        return [k for k, v in self.names.items() if k != 0 and v not in NONBRAIN_CLASSES]


@lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Load the atlas once per process (about 1 s)."""
    img = nib.load(str(ASSETS / "atlas_labels.nii.gz"))
    labels = np.asarray(img.dataobj, dtype=np.uint8)
    names = {int(k): v for k, v in json.loads((ASSETS / "atlas_labels.json").read_text()).items()}
    # Precomputed by scripts/build_synth_assets.py (distance transforms cost ~5 s per process).
    with np.load(ASSETS / "atlas_fields.npz") as npz:
        d_vent = npz["d_vent"].astype(np.float32) / 2.0 - 30.0
        d_csf = npz["d_csf"].astype(np.float32) / 4.0
        d_skin = npz["d_skin"].astype(np.float32) / 8.0
        gm_share = npz["gm_share"].astype(np.float32) / 250.0
        cortex_csf_share = npz["csf_share"].astype(np.float32) / 250.0
    fields = np.stack([d_vent, d_csf, d_skin])
    sulcal = [k for k, v in names.items() if v == "csf_sulcal_extracerebral"][0]
    csf_frac = ndi.gaussian_filter((labels == sulcal).astype(np.float32), SULCAL_PV_SIGMA_MM, truncate=3.0)
    # Sulci the segmentation left as cortex: their CSF share read from Colin27's T1 (build script).
    np.maximum(csf_frac, cortex_csf_share, out=csf_frac)
    return Atlas(labels=labels, affine=img.affine.astype(float), names=names, fields=fields, csf_frac=csf_frac,
                 gm_share=gm_share)


@lru_cache(maxsize=1)
def _atlas_lookup():
    """The atlas as flat, contiguous per-channel arrays for nearest-neighbour gathers, plus tensors of the
    two partial-volume maps for trilinear sampling.

    A nearest-neighbour gather per channel reads each channel once in order: for the 6-channel atlas that
    is about twice as fast as one ``grid_sample`` call on a (1, 6, ...) tensor, whose per-point reads of
    channels 30 MB apart miss the cache (and two generator processes on two cores then fight over memory).
    """
    atlas = load_atlas()
    flat = {
        "labels": atlas.labels.ravel(),
        "fields": [np.ascontiguousarray(f).ravel() for f in atlas.fields],
        # The CSF fraction and GM share are interpolated only where they are non-zero (nearest sampling of
        # one-voxel sulci on a rotated grid breaks them into dashes; interpolating everywhere costs as
        # much as the whole warp).
        "has_csf_frac": (atlas.csf_frac > 0).ravel(),
        "has_gm_share": (atlas.gm_share > 0).ravel(),
    }
    vent_surface = _surface_distance(atlas.fields[0])
    tensors = [torch.from_numpy(v)[None, None] for v in (atlas.csf_frac, atlas.gm_share, vent_surface)]
    return flat, *tensors


def _surface_distance(d_vent: np.ndarray) -> np.ndarray:
    """Signed distance to the ventricles' surface from the voxel-centre distance map.

    The voxel-centre distances are +-1 mm on both sides of the wall; shifted by half a voxel towards 0
    they put the surface between the two (0 there), which trilinear sampling then places sub-voxel.
    """
    return (d_vent - np.float32(0.5) * np.sign(d_vent)).astype(np.float32)


def _nearest_atlas_index(grid_xyz: np.ndarray, atlas_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat atlas index of the nearest voxel to each point, and whether the point lies inside the atlas.

    ``grid_xyz`` (3, ...) holds normalised coordinates (align_corners=True) with x along the atlas's last
    axis, as ``grid_sample`` takes them; rounding is half-to-even like its nearest mode.
    """
    flat = np.zeros(grid_xyz.shape[1:], np.int32)  # the 1 mm atlas has ~7.5 M voxels
    inside = np.ones(grid_xyz.shape[1:], bool)
    stride = 1
    for channel, axis in enumerate((2, 1, 0)):
        n = atlas_shape[axis]
        index = np.rint((grid_xyz[channel] + np.float32(1.0)) * np.float32(0.5 * (n - 1)))
        inside &= (index >= 0) & (index <= n - 1)
        index = index.astype(np.int32)
        index *= stride
        flat += index
        stride *= n
    flat[~inside] = 0
    return flat.ravel(), inside


def random_spatial_params(rng: np.random.Generator, strength: float = 1.0) -> dict:
    """Draw the random affine and deformation settings of one sample.

    Returns a dict: ``matrix`` (3, 3) world <- atlas linear part (rotation x scale x shear), ``shift``
    (3,) mm, ``deform_mm`` (std of the displacement field), ``deform_spacing_mm`` (its smoothness), and
    the same for a fine, gyral-scale component (``fine_deform_mm``, ``fine_spacing_mm``).
    """
    # Rotation: clinical scans are mostly aligned within a few degrees (SD 5 deg pitch about left-right,
    # 3 deg roll and in-plane yaw) of a plane pitched PITCH_CENTRE_DEG from the atlas's; a quarter of
    # samples get wide rotations (+-15 deg pitch/roll, +-25 deg yaw) as augmentation.
    if rng.random() < 0.25:
        angles_deg = rng.uniform([-15, -15, -25], [15, 15, 25])
    else:
        angles_deg = np.clip(rng.normal(0.0, [5.0, 3.0, 3.0]), -12, 12)
    angles_deg[0] += PITCH_CENTRE_DEG
    angles = np.deg2rad(angles_deg * strength)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    # Per-axis scale, except that the head's width/length ratio (cephalic index) is drawn around the real
    # median (CEPHALIC_INDEX_QUANTILES): with independent 0.88-1.12 scales left-right and front-back the
    # index of the atlas head (ATLAS_CEPHALIC_INDEX) spread over 0.71-1.0 and many heads were round.
    lo, hi = 0.88, 1.12
    axis_scale = rng.uniform(lo, hi, 3)
    cephalic_index = np.interp(axis_scale[0], (lo, (lo + hi) / 2, hi), CEPHALIC_INDEX_QUANTILES)
    axis_scale[0] = axis_scale[1] * cephalic_index / ATLAS_CEPHALIC_INDEX
    scale = np.diag(axis_scale * rng.uniform(0.93, 1.07))
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = rng.uniform(-0.06, 0.06, 3) * strength
    return {
        "matrix": rz @ ry @ rx @ scale @ shear,
        "cephalic_index": float(cephalic_index),
        "shift": rng.uniform(-6, 6, 3) * strength,
        "deform_mm": float(rng.uniform(0.5, 3.0) * strength),
        "deform_spacing_mm": float(rng.uniform(25, 45)),
        # Gyral scale (wavelength ~2x the lattice spacing, 9-15 mm; at most ~2 mm): every case comes from
        # one subject, and this bends its gyri differently each time. The std stays below ~1/4 of the
        # spacing, so the map practically never folds.
        "fine_deform_mm": float(rng.uniform(0.4, 1.1) * strength),
        "fine_spacing_mm": float(rng.uniform(4.5, 7.5)),
    }


@dataclass
class WarpedAnatomy:
    """Atlas content on the working grid.

    labels : uint8 (X, Y, Z) atlas label per working voxel (nearest neighbour)
    d_vent : float32 (X, Y, Z) signed distance (mm) to the ventricles, negative inside
    d_csf : float32 (X, Y, Z) distance (mm) from sulcal CSF / outside of the brain
    atlas_y : float32 (X, Y, Z) atlas (MNI) anterior-posterior coordinate shown at each voxel (mm)
    atlas_x : float32 (X, Y, Z) atlas (MNI) left-right coordinate shown at each voxel (mm; 0 = midline)
    csf_frac : float32 (X, Y, Z) sulcal CSF partial-volume fraction in [0, 1] (trilinear)
    d_skin : float32 (X, Y, Z) depth (mm, atlas) below the head's surface
    gm_share : float32 (X, Y, Z) grey-matter share near the cortex/white-matter boundary (trilinear)
    vent_surface : float32 (X, Y, Z) signed distance (mm) to the ventricles' surface, negative inside,
        trilinear near the wall (sub-voxel: the ventricles' partial volume, see contrast.render)
    """

    labels: np.ndarray
    d_vent: np.ndarray
    d_csf: np.ndarray
    atlas_y: np.ndarray
    atlas_x: np.ndarray
    csf_frac: np.ndarray
    d_skin: np.ndarray
    gm_share: np.ndarray
    vent_surface: np.ndarray


def warp_atlas(
    rng: np.random.Generator, grid_affine: np.ndarray, grid_shape: tuple[int, int, int], params: dict
) -> WarpedAnatomy:
    """Warp the atlas onto a working grid (``grid_affine``: voxel -> world mm, axis-aligned or not)."""
    atlas = load_atlas()
    # Working voxel -> atlas voxel, linear part: inv(atlas) @ inv(world<-atlas) @ grid.
    world_from_atlas = np.eye(4)
    world_from_atlas[:3, :3] = params["matrix"]
    world_from_atlas[:3, 3] = params["shift"] - params["matrix"] @ ATLAS_CENTRE_MM
    to_atlas_vox = np.linalg.inv(atlas.affine) @ np.linalg.inv(world_from_atlas) @ grid_affine
    n_atlas = np.array(atlas.labels.shape, dtype=float)
    # Normalised coordinates (align_corners=True): 2 * index / (n - 1) - 1.
    norm = np.diag(np.r_[2.0 / (n_atlas - 1), 1.0])
    norm[:3, 3] = -1.0
    m = norm @ to_atlas_vox
    # The sampling grid = affine map + smooth displacement. Both are built on a lattice spanning the
    # working grid corner to corner and upsampled trilinearly in one call: exact for the affine part
    # (trilinear interpolation reproduces linear functions), smooth for the displacement.
    spacing = np.linalg.norm(grid_affine[:3, :3], axis=0)
    extent = np.array(grid_shape) * spacing
    lattice = _lattice(extent, params.get("fine_spacing_mm", params["deform_spacing_mm"]))
    disp, fine = _displacement(rng, extent, lattice, params)  # atlas mm (= atlas voxels)
    pts = np.stack(np.meshgrid(*[np.linspace(0, n - 1, k) for n, k in zip(grid_shape, lattice)], indexing="ij"))
    coarse = np.einsum("ab,b...->a...", m[:3, :3], pts) + m[:3, 3, None, None, None]
    to_normalised = (2.0 / (n_atlas - 1))[:, None, None, None]
    coarse += disp * to_normalised
    if fine is not None:
        coarse += fine * _gyral_warp_weight(coarse, atlas.labels.shape) * to_normalised
    # grid_sample wants channels (x, y, z) = (last, middle, first) atlas axis.
    full = upsample(coarse[::-1].astype(np.float32), grid_shape)
    flat, csf_frac_t, gm_share_t, vent_surface_t = _atlas_lookup()
    index, inside = _nearest_atlas_index(full, atlas.labels.shape)
    # Nearest sampling at 1 mm is precise enough for the mm-scale thresholds applied to the distances.
    outside = None if inside.all() else ~inside.ravel()
    labels, *fields = [_gather(values, index, outside).reshape(grid_shape) for values in [flat["labels"]] + flat["fields"]]
    csf_frac = _interpolate_where(csf_frac_t, full, _gather(flat["has_csf_frac"], index, outside))
    gm_share = _interpolate_where(gm_share_t, full, _gather(flat["has_gm_share"], index, outside))
    near_wall = (fields[0] > VENT_SURFACE_BAND_MM[0]) & (fields[0] < VENT_SURFACE_BAND_MM[1]) & (labels > 0)
    vent_surface = _interpolate_where(vent_surface_t, full, near_wall.ravel())
    far = ~near_wall
    vent_surface[far] = _surface_distance(fields[0][far])
    atlas_y = (full[1] + 1.0) * (n_atlas[1] - 1) / 2.0 * atlas.affine[1, 1] + atlas.affine[1, 3]
    atlas_x = (full[2] + 1.0) * (n_atlas[0] - 1) / 2.0 * atlas.affine[0, 0] + atlas.affine[0, 3]
    return WarpedAnatomy(
        labels=labels,
        d_vent=fields[0],
        d_csf=fields[1],
        atlas_y=atlas_y.astype(np.float32),
        atlas_x=atlas_x.astype(np.float32),
        csf_frac=csf_frac,
        d_skin=fields[2],
        gm_share=gm_share,
        vent_surface=vent_surface,
    )


def _gather(values: np.ndarray, index: np.ndarray, outside: np.ndarray | None) -> np.ndarray:
    """``values[index]``, 0 where ``outside`` (background; distances there are never used)."""
    out = values[index]
    if outside is not None:
        out[outside] = 0
    return out


def _interpolate_where(volume: torch.Tensor, grid_xyz: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``volume`` (1, 1, ...) at the points of ``grid_xyz`` (3, ...) flagged in the
    flat bool ``where``, 0 elsewhere; float32 of ``grid_xyz.shape[1:]``."""
    out = np.zeros(where.size, np.float32)
    idx = np.flatnonzero(where)
    if idx.size:
        pts = np.stack([g.ravel()[idx] for g in grid_xyz], axis=-1)
        pts = torch.from_numpy(pts).reshape(1, 1, 1, -1, 3)
        out[idx] = F.grid_sample(volume, pts, mode="bilinear", padding_mode="zeros", align_corners=True).reshape(-1).numpy()
    return out.reshape(grid_xyz.shape[1:])


def _lattice(extent_mm: np.ndarray, spacing_mm: float) -> tuple[int, ...]:
    """Points per axis of a lattice at ``spacing_mm`` spanning ``extent_mm`` (at least 2)."""
    return tuple(int(max(2, np.ceil(e / spacing_mm) + 1)) for e in extent_mm)


def _displacement(
    rng: np.random.Generator, extent_mm: np.ndarray, lattice: tuple[int, ...], params: dict
) -> tuple[np.ndarray, np.ndarray | None]:
    """The smooth brain-scale displacement and the gyral-scale one (None when off), (3, *lattice) mm."""
    coarse = _lattice(extent_mm, params["deform_spacing_mm"])
    disp = upsample((rng.standard_normal((3,) + coarse) * params["deform_mm"]).astype(np.float32), lattice)
    fine = None
    if params.get("fine_deform_mm", 0.0) > 0:
        fine = (rng.standard_normal((3,) + lattice) * params["fine_deform_mm"]).astype(np.float64)
    return disp.astype(np.float64), fine


def _gyral_warp_weight(points: np.ndarray, atlas_shape: tuple[int, int, int]) -> np.ndarray:
    """How much of the gyral-scale displacement each lattice point gets: 0 within GYRAL_WARP_CLEAR_MM[0]
    of the ventricles, rising to 1 at GYRAL_WARP_CLEAR_MM[1]. ``points`` (3, *lattice) are normalised
    atlas coordinates in atlas axis order."""
    index, inside = _nearest_atlas_index(points[::-1], atlas_shape)
    d_vent = _atlas_lookup()[0]["fields"][0][index].reshape(inside.shape)
    lo, hi = GYRAL_WARP_CLEAR_MM
    weight = np.clip((d_vent - lo) / (hi - lo), 0.0, 1.0)
    weight[~inside] = 1.0
    return weight[None]


def apply_atrophy(anat: WarpedAnatomy, atrophy: float, rng: np.random.Generator, spacing_mm: float = 1.0) -> dict:
    """Enlarge ventricles and sulci, reshape the cortical ribbon, in place; ``atrophy`` in [0, 1].

    * The lateral ventricles' walls move by ``VENTRICLE_CHANGE_MM`` as ``atrophy **
      VENTRICLE_CHANGE_POWER`` (x0.8-1.2): young samples' ventricles shrink by up to ~1 mm into the
      tissue next to them (slit-like, as young adults' are), old ones' grow by up to ~4 mm into the
      surrounding white matter and caudate (not the thalamus, which keeps the third ventricle narrow,
      nor the midline wall between the two lateral ventricles, MIDLINE_WALL_MM).
    * Cortex within ``CORTEX_THINNING_MM * atrophy`` mm of the outer CSF, that depth varied by fine
      noise (an irregular pial surface), becomes CSF (wider sulci, thinner ribbon); the sulcal CSF fraction
      follows as a partial volume.
    The cortex itself needs no synthetic folding: the atlas brain is a single real subject (Colin27)
    with thin sulci, so atrophy only widens them.

    Returns the amounts used (mm).
    """
    atlas = load_atlas()
    lo, hi = VENTRICLE_CHANGE_MM
    grow_v = float((lo + (hi - lo) * atrophy**VENTRICLE_CHANGE_POWER) * rng.uniform(0.8, 1.2))
    thin_c = float(atrophy * CORTEX_THINNING_MM * rng.uniform(0.8, 1.2))
    lateral = atlas.id("csf_lateral_ventricle")
    sulcal = atlas.id("csf_sulcal_extracerebral")
    growable = off_midline(anat)
    around_vent = np.isin(
        anat.labels, atlas.ids(WM_CLASSES + ("gm_deep_striatum", "choroid_plexus"))
    ) & growable
    if grow_v > 0:
        anat.labels[around_vent & (anat.d_vent < grow_v)] = lateral
    elif grow_v < 0:
        _shrink_ventricles(anat, -grow_v)
    if grow_v >= BRIDGE_MIN_GROWTH_MM:
        _absorb_ventricle_remnants(anat.labels, spacing_mm, growable)
    anat.d_vent -= grow_v
    anat.vent_surface -= grow_v
    shape = anat.labels.shape
    flat = anat.labels.reshape(-1)
    gm_ids = atlas.ids(CORTEX_CLASSES + ("cerebellum_gm",))
    cortex_idx = np.flatnonzero(np.isin(flat, gm_ids))
    d = anat.d_csf.ravel()[cortex_idx]
    # d_csf is 1 mm on the outermost cortical layer.
    depth = thin_c + PIAL_IRREGULARITY_MM * smooth_noise_at(rng, shape, 2.5 / spacing_mm, cortex_idx)
    flat[cortex_idx[d <= depth]] = sulcal
    # The same thinning as a partial volume: a voxel half inside the new CSF is half CSF.
    frac = anat.csf_frac.reshape(-1)
    frac[cortex_idx] = np.maximum(frac[cortex_idx], np.clip(depth - d + 0.5, 0.0, 1.0))
    anat.d_csf -= thin_c
    return {"ventricle_growth_mm": grow_v, "cortex_thinning_mm": thin_c}


def _shrink_ventricles(anat: WarpedAnatomy, shrink_mm: float) -> None:
    """Give the lateral ventricles' outer ``shrink_mm`` (by the surface distance) to the tissue next to them.

    Each shrunk voxel takes the label of its nearest non-ventricle voxel when that is white matter,
    striatum or thalamus; next to the septum, the choroid plexus or the third ventricle it stays CSF, so
    the two ventricles keep their thin septum and stay joined to the third ventricle.
    """
    atlas = load_atlas()
    lateral = atlas.id("csf_lateral_ventricle")
    box = mask_bounding_box(anat.labels == lateral, 2)
    if box is None:
        return
    sub = anat.labels[box]
    ventricle = sub == lateral
    nearest = ndi.distance_transform_edt(ventricle, return_distances=False, return_indices=True)
    donor = sub[tuple(nearest)]
    shrunk = ventricle & (anat.vent_surface[box] > -shrink_mm)
    shrunk &= np.isin(donor, atlas.ids(WM_CLASSES + ("gm_deep_striatum", "gm_deep_thalamus")))
    sub[shrunk] = donor[shrunk]


def _absorb_ventricle_remnants(labels: np.ndarray, spacing_mm: float, growable: np.ndarray) -> None:
    """Turn thin tissue left between grown ventricle parts into ventricle, in place.

    Growing the ventricles into white matter but not into the thalamus leaves thin thalamus and fornix
    sheets standing inside the enlarged ventricle: a grey line within a dark rim that real old brains
    never show. A closing of the ventricles (~1.5 mm) finds such sheets; the septum pellucidum, a real
    membrane between the lateral ventricles, is kept, and so is all of the midline wall (``growable``
    False there).
    """
    atlas = load_atlas()
    ventricle = labels == atlas.id("csf_lateral_ventricle")
    steps = max(1, int(round(BRIDGE_CLOSING_MM / spacing_mm)))
    box = mask_bounding_box(ventricle, 2 * steps)
    if box is None:
        return
    sub = labels[box]
    closed = ndi.binary_closing(ventricle[box], structure=ndi.generate_binary_structure(3, 1), iterations=steps)
    absorbable = np.isin(sub, atlas.ids(WM_CLASSES + ("gm_deep_thalamus", "gm_deep_striatum", "choroid_plexus")))
    absorbable &= growable[box]
    sub[closed & absorbable] = atlas.id("csf_lateral_ventricle")


# Depth (mm below the head's surface) within which soft tissue counts as scalp, not face or neck muscle.
SCALP_DEPTH_MM = 14.0
# How much the subcutaneous fat line's thickness varies around the head (+- share). At 0.6 it thinned
# out to nothing in places, and the head's outline read as a ragged grey smear on the montage.
FAT_LINE_VARIATION = 0.3
# Lattice spacing (mm) of that variation and of the scalp's cut. At 20 mm the cut's +-30 % put bumps
# of 1-2 mm every few centimetres into the head's outline, which readers called "lumpy" and "wavy":
# outline roughness 1.02 mm and solidity 0.977 against the real clinical FLAIRs' 0.92 and 0.990
# (scripts/scalp_rim_profile.py); 40 mm gave 0.87 and 0.987, 60 mm 0.78 and 0.992 (docs/synth.md).
SCALP_VARIATION_MM = 40.0


def add_scalp_fat(anat: WarpedAnatomy, rng: np.random.Generator, spacing_mm: float = 1.0) -> dict:
    """Thin the scalp and give it a subcutaneous fat layer, in place; returns the thicknesses (mm).

    The Colin27 scalp is thick (muscle, fat and muscle again over 8-10 mm) and the same in every case;
    clinical scans show a thinner scalp whose thickness varies around the head, with a thin bright fat
    layer outside the muscle/galea and the dark bone. So: the outer 4-8 mm of soft tissue becomes
    background (+-30 %, varying over SCALP_VARIATION_MM), then the outermost 2.5-4 mm of what is left of
    it becomes fat (+-30 %), and so does the soft tissue touching the bone (see _soft_tissue_on_bone).
    Thinning 2-6 mm put the brain 14.75 mm below the head's outline (median over rays;
    scripts/scalp_rim_profile.py), 3-7 mm 13.25, where the real clinical FLAIRs have 12.75; with a 1-2.5
    mm fat line the median depth profile's bright band looked 1 mm narrower than the real one over all
    slab slices (docs/synth.md, twenty-second session; the script's own slice rule shows less of a gap).
    Calibrated on the real clinical FLAIRs' median intensity at each depth below the head's surface
    (scripts/compare_flair_intensities.py): a bright line in the outer 1-4 mm, bone-dark from ~5 mm.
    Depths come from the atlas's distance map (smooth surfaces, unlike peeling voxel layers, which leaves
    a staircase that the bright fat shows).
    """
    atlas = load_atlas()
    thinning = float(rng.uniform(4.0, 8.0))
    fat_mm = float(rng.uniform(2.5, 4.0))
    flat = anat.labels.reshape(-1)
    idx = np.flatnonzero((anat.d_skin.reshape(-1) < 1.4 * (thinning + fat_mm) + 1.0) & (flat > 0))
    depth = anat.d_skin.reshape(-1)[idx]
    vary = np.clip(smooth_noise_at(rng, anat.labels.shape, SCALP_VARIATION_MM / spacing_mm, idx), -1.0, 1.0)
    cut = thinning * (1.0 + 0.3 * vary)
    labels = flat[idx]
    # Only soft tissue: where the scalp is thin (forehead) the fat layer is thin too, the bone stays.
    scalp = np.isin(labels, atlas.ids(("muscle_soft_tissue", "scalp_fat")))
    fat_line = cut + fat_mm * (1.0 + FAT_LINE_VARIATION * vary)
    labels[scalp & (depth < fat_line)] = atlas.id("scalp_fat")
    labels[scalp & (depth < cut)] = 0
    flat[idx] = labels
    flat[_soft_tissue_on_bone(anat.labels, anat.d_skin)] = atlas.id("scalp_fat")
    return {"scalp_thinning_mm": thinning, "scalp_fat_mm": fat_mm}


def _soft_tissue_on_bone(labels: np.ndarray, d_skin: np.ndarray) -> np.ndarray:
    """Flat indices of the scalp's soft-tissue voxels that touch the skull (6-neighbourhood): the loose
    areolar layer and pericranium between the galea and the outer table, which FLAIR shows as a thin
    bright line under the dark galea (real clinical scans: bright skin-and-fat line, dark galea, this
    line, dark outer table, brighter diploe, dark inner table)."""
    atlas = load_atlas()
    flat = labels.reshape(-1)
    soft = np.flatnonzero((flat == atlas.id("muscle_soft_tissue")) & (d_skin.reshape(-1) < SCALP_DEPTH_MM))
    bone = np.isin(flat, atlas.ids(("skull_bone", "skull_marrow")))
    touching = np.zeros(soft.size, bool)
    strides = np.cumprod((1,) + labels.shape[:0:-1])[::-1]
    coords = np.unravel_index(soft, labels.shape)
    for axis, stride in enumerate(strides):
        for step in (-1, 1):
            inside = (coords[axis] + step >= 0) & (coords[axis] + step < labels.shape[axis])
            touching[inside] |= bone[soft[inside] + step * stride]
    return soft[touching]

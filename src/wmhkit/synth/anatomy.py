"""Anatomy for synthesis: the shipped label atlas, random spatial warps and atrophy.

The atlas (``data/synth/atlas_labels.nii.gz``, 1 mm MNI space, names in ``atlas_labels.json``) is
warped onto a *working grid*: an axis-aligned grid in the sample's world space (RAS mm). A sample's
world space is the atlas moved by a random affine (rotation, scaling, shear, translation) and a smooth
random displacement field; world point ``w`` shows atlas point ``A^-1 (w) + u(w)``. The warp is one
``torch.nn.functional.grid_sample`` call per interpolation mode, the fastest way to do it on a CPU.
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

from wmhkit.synth.fields import smooth_noise_at, upsample

ASSETS = Path(__file__).resolve().parents[1] / "data" / "synth"

# Label groups by name (ids come from atlas_labels.json).
WM_CLASSES = ("wm_periventricular", "wm_deep", "wm_juxtacortical")
CORTEX_CLASSES = ("gm_cortex_frontal", "gm_cortex_parietooccipital", "gm_cortex_temporal")
VENTRICLE_CLASSES = ("csf_lateral_ventricle", "csf_third_fourth_ventricle")
NONBRAIN_CLASSES = (
    "skull_bone", "skull_marrow", "scalp_fat", "muscle_soft_tissue", "eye", "orbital_fat", "dura_meninges",
)
# The atlas point shown at the centre of the world grid: roughly the middle of the cerebrum.
ATLAS_CENTRE_MM = np.array([0.0, -18.0, 12.0])


@dataclass(frozen=True)
class Atlas:
    """The shipped anatomy atlas and the distance maps atrophy and lesions need.

    labels : uint8 (X, Y, Z), 1 mm
    affine : (4, 4) voxel -> MNI mm
    names : {id: name}
    fields : float32 (2, X, Y, Z): signed distance (mm) to the lateral/third ventricles (negative
        inside), and distance (mm) from sulcal CSF or the brain's outside (0 there).
    """

    labels: np.ndarray
    affine: np.ndarray
    names: dict[int, str]
    fields: np.ndarray

    def ids(self, names) -> list[int]:
        inverse = {v: k for k, v in self.names.items()}
        return [inverse[n] for n in names]

    def id(self, name: str) -> int:
        return self.ids([name])[0]


@lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Load the atlas once per process (about 1 s: two distance transforms)."""
    img = nib.load(str(ASSETS / "atlas_labels.nii.gz"))
    labels = np.asarray(img.dataobj, dtype=np.uint8)
    names = {int(k): v for k, v in json.loads((ASSETS / "atlas_labels.json").read_text()).items()}
    # Precomputed by scripts/build_synth_assets.py (distance transforms cost ~5 s per process).
    with np.load(ASSETS / "atlas_fields.npz") as npz:
        d_vent = npz["d_vent"].astype(np.float32) / 2.0 - 30.0
        d_csf = npz["d_csf"].astype(np.float32) / 4.0
    fields = np.stack([d_vent, d_csf])
    return Atlas(labels=labels, affine=img.affine.astype(float), names=names, fields=fields)


@lru_cache(maxsize=1)
def _atlas_tensors():
    atlas = load_atlas()
    # Labels and distance maps in one tensor: one nearest-neighbour grid_sample call fetches all three
    # (1 mm nearest is precise enough for the mm-scale thresholds applied to the distances).
    stacked = np.concatenate([atlas.labels[None].astype(np.float32), atlas.fields])
    return torch.from_numpy(stacked)[None]


def random_spatial_params(rng: np.random.Generator, strength: float = 1.0) -> dict:
    """Draw the random affine and deformation settings of one sample.

    Returns a dict: ``matrix`` (3, 3) world <- atlas linear part (rotation x scale x shear), ``shift``
    (3,) mm, ``deform_mm`` (std of the displacement field), ``deform_spacing_mm`` (its smoothness).
    """
    # Rotation: clinical scans are mostly aligned within a few degrees (SD 5 deg pitch about left-right,
    # 3 deg roll and in-plane yaw); a quarter of samples get wide rotations (+-15 deg pitch/roll, +-25 deg
    # yaw) as augmentation.
    if rng.random() < 0.25:
        angles_deg = rng.uniform([-15, -15, -25], [15, 15, 25])
    else:
        angles_deg = np.clip(rng.normal(0.0, [5.0, 3.0, 3.0]), -12, 12)
    angles = np.deg2rad(angles_deg * strength)
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    scale = np.diag(rng.uniform(0.88, 1.12, 3) * rng.uniform(0.93, 1.07))
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = rng.uniform(-0.06, 0.06, 3) * strength
    return {
        "matrix": rz @ ry @ rx @ scale @ shear,
        "shift": rng.uniform(-6, 6, 3) * strength,
        "deform_mm": float(rng.uniform(0.5, 3.0) * strength),
        "deform_spacing_mm": float(rng.uniform(25, 45)),
    }


@dataclass
class WarpedAnatomy:
    """Atlas content on the working grid.

    labels : uint8 (X, Y, Z) atlas label per working voxel (nearest neighbour)
    d_vent : float32 (X, Y, Z) signed distance (mm) to the ventricles, negative inside
    d_csf : float32 (X, Y, Z) distance (mm) from sulcal CSF / outside of the brain
    atlas_y : float32 (X, Y, Z) atlas (MNI) anterior-posterior coordinate shown at each voxel (mm)
    """

    labels: np.ndarray
    d_vent: np.ndarray
    d_csf: np.ndarray
    atlas_y: np.ndarray


def warp_atlas(
    rng: np.random.Generator, grid_affine: np.ndarray, grid_shape: tuple[int, int, int], params: dict
) -> WarpedAnatomy:
    """Warp the atlas onto a working grid (``grid_affine``: voxel -> world mm, axis-aligned or not)."""
    atlas = load_atlas()
    atlas_t = _atlas_tensors()
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
    # The sampling grid = affine map + smooth displacement. Both are built on a coarse lattice spanning
    # the working grid corner to corner and upsampled trilinearly in one call: exact for the affine part
    # (trilinear interpolation reproduces linear functions), smooth for the displacement.
    spacing = np.linalg.norm(grid_affine[:3, :3], axis=0)
    extent = np.array(grid_shape) * spacing
    lattice = tuple(int(max(2, np.ceil(e / params["deform_spacing_mm"]) + 1)) for e in extent)
    disp = rng.standard_normal((3,) + lattice) * params["deform_mm"]  # atlas mm (= atlas voxels)
    pts = np.stack(np.meshgrid(*[np.linspace(0, n - 1, k) for n, k in zip(grid_shape, lattice)], indexing="ij"))
    coarse = np.einsum("ab,b...->a...", m[:3, :3], pts) + m[:3, 3, None, None, None]
    coarse += disp * (2.0 / (n_atlas - 1))[:, None, None, None]
    # grid_sample wants channels (x, y, z) = (last, middle, first) atlas axis.
    full = upsample(coarse[::-1].astype(np.float32), grid_shape)
    grid = torch.from_numpy(full).permute(1, 2, 3, 0)[None]
    # Outside the atlas everything reads 0 (background; distances there are never used).
    sampled = F.grid_sample(atlas_t, grid, mode="nearest", padding_mode="zeros", align_corners=True)[0]
    labels, fields = sampled[0], sampled[1:]
    atlas_y = (full[1] + 1.0) * (n_atlas[1] - 1) / 2.0 * atlas.affine[1, 1] + atlas.affine[1, 3]
    return WarpedAnatomy(
        labels=labels.numpy().astype(np.uint8),
        d_vent=fields[0].numpy(),
        d_csf=fields[1].numpy(),
        atlas_y=atlas_y.astype(np.float32),
    )


def apply_atrophy(anat: WarpedAnatomy, atrophy: float, rng: np.random.Generator, spacing_mm: float = 1.0) -> dict:
    """Enlarge ventricles and sulci, reshape the cortical ribbon, in place; ``atrophy`` in [0, 1].

    * Ventricles grow by up to ~4 mm (``4 * atrophy ** 1.5``: mostly in 'old' samples) into the
      surrounding white matter and caudate (not the thalamus, which keeps the third ventricle narrow).
    * Cortex within ``1.2 * atrophy`` mm of the outer CSF, that depth varied by fine noise (an
      irregular pial surface), becomes CSF (wider sulci, thinner ribbon).
    The cortex itself needs no synthetic folding: the atlas brain is a single real subject (Colin27)
    with thin sulci, so atrophy only widens them.

    Returns the amounts used (mm).
    """
    atlas = load_atlas()
    grow_v = float(4.0 * atrophy**1.5 * rng.uniform(0.8, 1.2))
    thin_c = float(atrophy * 1.2 * rng.uniform(0.8, 1.2))
    lateral = atlas.id("csf_lateral_ventricle")
    sulcal = atlas.id("csf_sulcal_extracerebral")
    around_vent = np.isin(
        anat.labels, atlas.ids(WM_CLASSES + ("gm_deep_striatum", "choroid_plexus"))
    )
    anat.labels[around_vent & (anat.d_vent < grow_v)] = lateral
    anat.d_vent -= grow_v
    shape = anat.labels.shape
    flat = anat.labels.reshape(-1)
    gm_ids = atlas.ids(CORTEX_CLASSES + ("cerebellum_gm",))
    cortex_idx = np.flatnonzero(np.isin(flat, gm_ids))
    d = anat.d_csf.ravel()[cortex_idx]
    # d_csf is 1 mm on the outermost cortical layer.
    depth = thin_c + 0.5 * smooth_noise_at(rng, shape, 2.5 / spacing_mm, cortex_idx)
    flat[cortex_idx[d <= depth]] = sulcal
    anat.d_csf -= thin_c
    return {"ventricle_growth_mm": grow_v, "cortex_thinning_mm": thin_c}


def add_scalp_fat(anat: WarpedAnatomy, rng: np.random.Generator, spacing_mm: float = 1.0) -> float:
    """Make the outermost 1.5-4 mm of the head's soft tissue subcutaneous fat, in place.

    The atlas scalp is mostly one thick soft-tissue class; on a real FLAIR the scalp shows a thin
    bright fat layer outside the muscle/galea and the dark bone. Peels layers of soft tissue touching
    the background (6-neighbour steps). Returns the thickness used (mm).
    """
    atlas = load_atlas()
    thickness = float(rng.uniform(1.5, 4.0))
    steps = max(1, int(round(thickness / spacing_mm)))
    flat = anat.labels.reshape(-1)
    shape = anat.labels.shape
    soft = atlas.ids(("muscle_soft_tissue", "skull_marrow", "skull_bone"))
    idx = np.flatnonzero(np.isin(flat, soft))
    if idx.size == 0:
        return thickness
    fat = atlas.id("scalp_fat")
    # New fat is marked 255 while peeling, so that layers grow from the background inwards only.
    outside = np.zeros(256, bool)
    outside[[0, 255]] = True
    strides = np.cumprod((1,) + shape[:0:-1])[::-1]
    for _ in range(steps):
        touch = np.zeros(idx.size, bool)
        for stride in strides:
            for sign in (-1, 1):
                touch |= outside[flat[np.clip(idx + sign * int(stride), 0, flat.size - 1)]]
        flat[idx[touch]] = 255
        idx = idx[~touch]
    flat[flat == 255] = fat
    return thickness

"""Acquisition geometry: output grids of each profile and resampling from the working grid.

World space is RAS mm with the origin at the middle of the cerebrum (see ``anatomy.ATLAS_CENTRE_MM``).
Output grids are axis-aligned with world axes in any storage order and sign (RAS, LPS, LAS, ...);
anatomy is tilted relative to them by the random affine of the anatomy instead.

Profiles
--------
clinical2d : axial 2D, in-plane 0.4-1.0 mm, slice spacing 3-8 mm, mostly 3-5 mm (thickness 80-100% of it, i.e. gaps
    up to 20%), matrices like 512x512, 256x256, 240x240 and 16-60 slices, with slice-profile blur.
research3d : ~1 mm isotropic 3D (0.9-1.2 mm), matrices 182x218x182, 176x240x256, 160x256x256,
    192x256x256, axial or sagittal storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from wmhkit.synth.fields import gaussian_blur, slice_profile_blur, upsample

PROFILES = ("clinical2d", "research3d", "mixed")
CLINICAL_INPLANE_MM = (0.4, 1.0)
CLINICAL_SLICE_MM = (3.0, 8.0)
# Slice spacing = low + range * u ** skew (u uniform): median 4.25 mm, 23 % above 6 mm.
CLINICAL_SLICE_SKEW = 2.0
CLINICAL_MATRICES = (512, 448, 432, 384, 320, 288, 256, 240, 232)
RESEARCH_SPACING_MM = (0.9, 1.2)
# Matrices as (left-right, anterior-posterior, inferior-superior) extents.
RESEARCH_MATRICES = ((182, 218, 182), (176, 240, 256), (160, 256, 256), (192, 256, 256))
# Box (mm, world) that holds the whole head in any sample: the working grid never extends beyond it.
HEAD_BOX_MM = np.array([[-105.0, 105.0], [-130.0, 130.0], [-110.0, 110.0]])
AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass
class Geometry:
    """An output image grid.

    shape : (3,) matrix; affine : (4, 4) voxel -> world mm; spacing : (3,) mm per array axis;
    world_axes : (3,) world axis (0=x, 1=y, 2=z) of each array axis; slice_axis : array axis of the
    2D slices (None for 3D); slice_thickness_mm : None for 3D.
    """

    profile: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: np.ndarray
    world_axes: tuple[int, int, int]
    slice_axis: int | None = None
    slice_thickness_mm: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def orientation(self) -> str:
        """Axis code in nibabel's convention, e.g. 'RAS', 'LPS', 'PIR'."""
        letters = []
        for a in range(3):
            w = self.world_axes[a]
            letters.append(AXIS_LETTERS[w][int(self.affine[w, a] > 0)])
        return "".join(letters)


def _grid_affine(rng, shape, spacing, world_axes, centre) -> np.ndarray:
    signs = np.where(rng.random(3) < 0.5, -1.0, 1.0)
    aff = np.zeros((4, 4))
    aff[3, 3] = 1.0
    for a in range(3):
        aff[world_axes[a], a] = signs[a] * spacing[a]
    aff[:3, 3] = centre - aff[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return aff


def sample_geometry(rng: np.random.Generator, profile: str) -> Geometry:
    """Draw an output grid of ``profile`` ('clinical2d', 'research3d' or 'mixed')."""
    if profile == "mixed":
        profile = "clinical2d" if rng.random() < 0.5 else "research3d"
    if profile == "clinical2d":
        m = int(rng.choice(CLINICAL_MATRICES))
        inplane = float(np.clip(rng.uniform(200.0, 250.0) / m, *CLINICAL_INPLANE_MM))
        m2 = m if rng.random() < 0.75 else int(round(m * rng.uniform(0.8, 0.95) / 8) * 8)
        # Most clinical 2D FLAIRs are 3-5 mm; 6-8 mm (older protocols) are the tail, not a third of cases.
        lo, hi = CLINICAL_SLICE_MM
        spacing_z = float(lo + (hi - lo) * rng.random() ** CLINICAL_SLICE_SKEW)
        thickness = spacing_z * float(rng.uniform(0.8, 1.0))
        nz = int(np.clip(round(rng.uniform(110.0, 175.0) / spacing_z), 14, 60))
        inplane_axes = (0, 1) if rng.random() < 0.8 else (1, 0)
        world_axes = (inplane_axes[0], inplane_axes[1], 2)
        # 2D matrices are often rectangular with the short side left-right.
        extent = {0: m2, 1: m, 2: nz}
        shape = tuple(extent[w] for w in world_axes)
        spacing = np.array([inplane, inplane, spacing_z])
        centre = np.array([rng.uniform(-6, 6), rng.uniform(-10, 10), rng.uniform(-12, 12)])
        aff = _grid_affine(rng, shape, spacing, world_axes, centre)
        return Geometry("clinical2d", shape, aff, spacing, world_axes, slice_axis=2, slice_thickness_mm=thickness)
    if profile == "research3d":
        lr_ap_is = RESEARCH_MATRICES[int(rng.integers(len(RESEARCH_MATRICES)))]
        s = float(rng.uniform(*RESEARCH_SPACING_MM)) if rng.random() < 0.5 else 1.0
        # Storage: axial (x, y, z) or sagittal acquisitions (slices left-right, stored last or first).
        world_axes = [(0, 1, 2), (1, 2, 0), (0, 1, 2), (2, 1, 0)][int(rng.integers(4))]
        shape = tuple(int(lr_ap_is[w]) for w in world_axes)
        spacing = np.full(3, s)
        centre = np.array([rng.uniform(-4, 4), rng.uniform(-8, 8), rng.uniform(-8, 14)])
        aff = _grid_affine(rng, shape, spacing, world_axes, centre)
        return Geometry("research3d", shape, aff, spacing, world_axes)
    raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")


def working_grid(geom: Geometry, spacing_mm: float, margin_mm: float = 6.0) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Axis-aligned RAS grid covering the output field of view (clipped to the head box).

    Returns (affine (4, 4), shape (3,)).
    """
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in geom.shape], indexing="ij")).reshape(3, -1)
    world = geom.affine[:3, :3] @ corners + geom.affine[:3, 3:4]
    lo = np.maximum(world.min(1) - margin_mm, HEAD_BOX_MM[:, 0])
    hi = np.minimum(world.max(1) + margin_mm, HEAD_BOX_MM[:, 1])
    shape = tuple(int(max(2, np.ceil((h - l) / spacing_mm) + 1)) for l, h in zip(lo, hi))
    aff = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    aff[:3, 3] = lo
    return aff, shape


def blur_for_output(volume: np.ndarray, geom: Geometry, work_spacing_mm: float, psf_mm: float = 0.0) -> np.ndarray:
    """Slice-profile and anti-aliasing blur on the working grid before sampling the output grid.

    ``psf_mm``: extra isotropic Gaussian (sigma, mm) for the scanner's point spread; images only, label
    fractions keep the purely geometric blur so that '>= 50% lesion' means what it says.
    """
    sigma = np.zeros(3)
    for a in range(3):
        w = geom.world_axes[a]
        ratio = geom.spacing[a] / work_spacing_mm
        sigma[w] = np.hypot(0.4 * np.sqrt(max(ratio**2 - 1.0, 0.0)), psf_mm / work_spacing_mm)
    if geom.slice_axis is not None:
        w = geom.world_axes[geom.slice_axis]
        sigma[w] = 0.0
        volume = slice_profile_blur(volume, w, geom.slice_thickness_mm / work_spacing_mm)
    return gaussian_blur(volume, sigma)


def sample_to_output(
    volumes: np.ndarray, work_affine: np.ndarray, geom: Geometry, mode: str = "bilinear"
) -> np.ndarray:
    """Sample (C, X, Y, Z) working-grid volumes at the output voxel centres; returns (C, *geom.shape).

    Outside the working grid the value is 0.
    """
    vols = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None]
    n_work = np.array(volumes.shape[1:], dtype=float)
    norm = np.diag(np.r_[2.0 / (n_work - 1), 1.0])
    norm[:3, 3] = -1.0
    m = norm @ np.linalg.inv(work_affine) @ geom.affine
    # The map is affine, so its values at the 8 grid corners upsampled trilinearly give it exactly.
    corners = np.stack(np.meshgrid(*[[0.0, n - 1.0] for n in geom.shape], indexing="ij"))
    coarse = np.einsum("ab,b...->a...", m[:3, :3], corners) + m[:3, 3, None, None, None]
    full = upsample(coarse[::-1].astype(np.float32), geom.shape)  # (x, y, z) = last, middle, first axis
    grid = torch.from_numpy(full).permute(1, 2, 3, 0)[None]
    out = F.grid_sample(vols, grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
    return out.numpy()

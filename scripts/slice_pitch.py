"""Slice-plane angles of real FLAIRs (and synthetic cases) against the atlas's axial plane.

Development script (reads the real data beside the checkout; the package never does). The Colin27 head
(../shared/data/templates/ch2.nii.gz, MNI space, the head the synthetic atlas was built from) is
registered onto each FLAIR with a rotation and per-axis scale (SimpleITK scale-versor, Mattes mutual
information); a rigid registration without the scales recovered only ~0.4 x the drawn pitch of
synthetic cases, because the head's proportions pull the fit. The rotation part of the result gives the
slice plane's pitch (about left-right), roll (about front-back) and yaw (in-plane), in degrees.

Measured (session 32): clinical 2D FLAIRs pitched 5.5-16.4 deg (median 9.8), the 3D FLAIR 17.9, the
MNI-registered cases 1.1 +- 2.7 (the method's error); on synthetic cases the registered pitch is within
1.5 deg of the drawn one. This set ``anatomy.PITCH_CENTRE_DEG``.

Usage:  python scripts/slice_pitch.py [--n-synth 0] [--seed 2026] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deep_grey_contrast import DEFAULT_DATA, register_colin  # noqa: E402
from make_synth_montage import real_flairs  # noqa: E402

from wmhkit import synth  # noqa: E402


def rotation_angles(matrix) -> tuple[float, float, float]:
    """(pitch, roll, yaw) in degrees of the rotation nearest to a 3x3 matrix (its scale and shear removed)."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, float).reshape(3, 3))
    r = u @ vt
    return (float(np.degrees(np.arctan2(r[2, 1], r[2, 2]))), float(np.degrees(np.arcsin(-r[2, 0]))),
            float(np.degrees(np.arctan2(r[1, 0], r[0, 0]))))


def registered_angles(path: Path, colin: sitk.Image) -> tuple[float, float, float]:
    fixed = sitk.ReadImage(str(path), sitk.sitkFloat32)
    found = register_colin(fixed, colin, sitk.ScaleVersor3DTransform(), shrink=(4, 2), smoothing=(3, 1),
                           smoothing_in_mm=True, max_step=2.0, min_step=1e-3)
    return rotation_angles(sitk.ScaleVersor3DTransform(found).GetMatrix())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n-synth", type=int, default=0, help="also register this many synthetic cases")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--synthetic-only", action="store_true")
    args = ap.parse_args()
    colin = sitk.ReadImage(str(args.data / "templates" / "ch2.nii.gz"), sitk.sitkFloat32)
    pitches: dict[str, list[float]] = {}
    for group, name, path in ([] if args.synthetic_only else real_flairs(args.data)):
        pitch, roll, yaw = registered_angles(path, colin)
        pitches.setdefault(group, []).append(pitch)
        print(f"{group:4s} {name:24s} pitch {pitch:6.1f} roll {roll:6.1f} yaw {yaw:6.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n_synth):
            s = synth.generate_sample(args.seed, "mixed", skull=True, index=i)
            drawn = rotation_angles(s.meta["spatial"]["matrix"])
            path = Path(tmp) / f"synthetic_{i}.nii.gz"
            nib.save(nib.Nifti1Image(s.flair.astype(np.float32), s.affine), str(path))
            found = registered_angles(path, colin)
            pitches.setdefault("synthetic", []).append(found[0])
            print(f"syn  index {i:<18d} pitch {found[0]:6.1f} roll {found[1]:6.1f} yaw {found[2]:6.1f}"
                  f"   drawn {drawn[0]:6.1f} {drawn[1]:6.1f} {drawn[2]:6.1f}", flush=True)
    for group, values in pitches.items():
        v = np.array(values)
        print(f"{group}: n {v.size}, pitch median {np.median(v):.1f}, mean {v.mean():.1f}, SD {v.std():.1f}, "
              f"range {v.min():.1f} to {v.max():.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

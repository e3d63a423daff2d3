"""NIfTI input and output.

Every image wmhkit reads becomes a :class:`Volume`: a 3D numpy array plus the affine and header it came
with, so that every output can be written back on the input's native grid with the input's geometry.
Problems with a file raise :class:`wmhkit.errors.InputError` whose message names the file and the
problem in one line. Writes are atomic: a temporary file in the destination folder, then a rename, so an
interrupted run never leaves a half-written output behind.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from wmhkit.errors import InputError, OutputExistsError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Voxel edges outside this range (mm) are header corruption, not real acquisitions.
MIN_VOXEL_MM = 1e-3
MAX_VOXEL_MM = 50.0


@dataclass
class Volume:
    """A 3D image and the geometry it lives on.

    Attributes
    ----------
    data : ndarray, shape (X, Y, Z)
        Voxel values in the file's own dtype (float when the header scales intensities).
    affine : ndarray, shape (4, 4)
        Voxel index -> world (RAS+, mm).
    header : nibabel header
        The original header, reused when writing outputs on this grid.
    path : Path or None
        Where the volume was read from.
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel edge lengths in mm, shape (3,), taken from the affine (what world distances use)."""
        return voxel_spacing(self.affine)

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return voxel_volume_ml(self.affine)

    def with_data(self, data: np.ndarray) -> Volume:
        """A volume on the same grid holding other values."""
        if data.shape != self.data.shape:
            raise ValueError(f"shape {data.shape} does not match the grid {self.data.shape}")
        return Volume(data=data, affine=self.affine, header=self.header, path=None)


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) of a 4x4 affine: the norms of its first three columns, shape (3,)."""
    return np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel (ml) of a 4x4 affine; shear and obliquity are honoured."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0


def is_nifti_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without .nii or .nii.gz: 'sub-01_FLAIR.nii.gz' -> 'sub-01_FLAIR'."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# BIDS suffixes that derivatives replace by their own: sub-01_FLAIR -> sub-01_desc-wmh_mask.
MODALITY_SUFFIXES = ("_FLAIR", "_T2FLAIR", "_flair", "_T1w", "_T1W", "_T1")


def derivative_stem(path: str | os.PathLike) -> str:
    """Stem for BIDS-derivative outputs: the file's stem without its modality suffix.

    'sub-01_ses-1_FLAIR.nii.gz' -> 'sub-01_ses-1'; a stem that is only a suffix ('FLAIR.nii.gz') is kept.
    """
    stem = nifti_stem(path)
    for suffix in MODALITY_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def load_volume(
    path: str | os.PathLike,
    *,
    labels: Iterable[float] | None = None,
    allow_constant: bool = False,
) -> Volume:
    """Read a 3D NIfTI image, checking everything wmhkit relies on.

    Parameters
    ----------
    path : .nii or .nii.gz file, any orientation and dtype. A 4D file holding one volume is squeezed.
    labels : if given, the file is a label map and every voxel must hold one of these values (within
        1e-3; the result is then rounded to them); an empty (all-zero) label map is valid. If None, the
        file is an intensity image: NaN/inf voxels become 0, and an all-NaN or constant image is an
        error unless ``allow_constant`` (a prediction or probability map may legitimately be empty).

    Returns
    -------
    Volume with ``data`` of shape (X, Y, Z).

    Raises
    ------
    InputError naming the file and the problem.
    """
    path = Path(path)
    img = _open_nifti(path)
    data = _read_voxels(img, path)
    data = _as_3d(data, path)
    affine = np.asarray(img.affine, dtype=float)
    _check_geometry(affine, path)
    if labels is None:
        data = _clean_intensities(data, path, allow_constant)
    else:
        data = _check_labels(data, tuple(labels), path)
    return Volume(data=data, affine=affine, header=img.header, path=path)


def load_image(path: str | os.PathLike) -> Volume:
    """An intensity image (FLAIR, T1, probability map): see :func:`load_volume`."""
    return load_volume(path)


def load_labels(path: str | os.PathLike, labels: Iterable[float] = (0, 1)) -> Volume:
    """A label map whose values must lie in ``labels``: see :func:`load_volume`."""
    return load_volume(path, labels=labels)


def _open_nifti(path: Path):
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a .nii or .nii.gz file")
    if not is_nifti_path(path):
        raise InputError(path, "not a NIfTI file (expected .nii or .nii.gz)")
    try:
        return nib.load(str(path))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt gzip ({_reason(exc)})") from None
    except Exception as exc:  # nibabel raises many types for a file that is not NIfTI
        raise InputError(path, f"not a readable NIfTI file ({_reason(exc)})") from None


def _read_voxels(img, path: Path) -> np.ndarray:
    # Reading the voxels now, not lazily, so that truncation is reported here with the file's name.
    try:
        return np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt gzip ({_reason(exc)})") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"voxel data unreadable, file truncated? ({_reason(exc)})") from None


def _as_3d(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        n = int(np.prod(data.shape[3:]))
        raise InputError(path, f"{data.ndim}D image with {n} volumes; wmhkit needs one 3D volume")
    if data.ndim < 3:
        raise InputError(path, f"{data.ndim}D image of shape {data.shape}; wmhkit needs a 3D volume")
    if min(data.shape) < 1:
        raise InputError(path, f"empty image of shape {data.shape}")
    return data


def _check_geometry(affine: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(affine)):
        raise InputError(path, "affine (qform/sform) has non-finite values")
    spacing = voxel_spacing(affine)
    if np.any(spacing < MIN_VOXEL_MM) or np.any(spacing > MAX_VOXEL_MM):
        shown = "x".join(f"{s:.4g}" for s in spacing)
        raise InputError(path, f"implausible voxel size {shown} mm (header corrupt?)")
    if voxel_volume_ml(affine) == 0.0:
        raise InputError(path, "affine is singular (voxel axes are not independent)")


def _clean_intensities(data: np.ndarray, path: Path, allow_constant: bool) -> np.ndarray:
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.any():
            raise InputError(path, "image has no finite values (all NaN/inf)")
        if not finite.all():
            data = np.where(finite, data, 0).astype(data.dtype, copy=False)
    elif data.dtype.kind not in "iu":
        raise InputError(path, f"unsupported voxel type {data.dtype}")
    if not allow_constant and data.max() == data.min():
        raise InputError(path, f"image is constant (every voxel is {data.flat[0]})")
    return data


def _check_labels(data: np.ndarray, labels: tuple[float, ...], path: Path) -> np.ndarray:
    allowed = np.asarray(labels, dtype=float)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise InputError(path, "label map has NaN/inf voxels")
        values = np.unique(data)
        nearest = allowed[np.abs(values[:, None] - allowed[None, :]).argmin(axis=1)]
        bad = values[np.abs(values - nearest) > 1e-3]
        if bad.size == 0 and np.any(values != nearest):
            data = np.rint(data)
    elif data.dtype.kind in "iub":
        values = np.unique(data)
        bad = values[~np.isin(values, allowed)]
    else:
        raise InputError(path, f"unsupported voxel type {data.dtype}")
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (" ..." if bad.size > 5 else "")
        expected = ", ".join(f"{v:g}" for v in allowed)
        raise InputError(path, f"label map has values outside {{{expected}}}: {shown}")
    return data


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------- writing


def check_can_write(paths: Iterable[str | os.PathLike], force: bool = False) -> None:
    """Refuse before any work starts if an output exists and ``force`` is False."""
    for path in paths:
        if Path(path).exists() and not force:
            raise OutputExistsError(path)


def save_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    like: Volume,
    *,
    dtype: np.dtype | type | None = None,
    force: bool = False,
) -> Path:
    """Write ``data`` on the grid of ``like`` (same affine, same header apart from dtype and scaling).

    Parameters
    ----------
    path : destination .nii or .nii.gz
    data : ndarray, shape == like.shape
    like : the volume whose grid and header the output takes
    dtype : on-disk type (default: data's own)
    force : overwrite an existing file

    The file appears complete or not at all (temporary file + rename).
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise InputError(path, "output name must end in .nii or .nii.gz")
    if data.shape != like.shape:
        raise ValueError(f"data shape {data.shape} differs from the grid {like.shape}")
    check_can_write([path], force)
    dtype = np.dtype(dtype or data.dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    header = like.header.copy()
    header.set_data_dtype(dtype)
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    if not isinstance(header, (nib.Nifti1Header, nib.Nifti2Header)):
        header = None
    img = image_class(np.asarray(data).astype(dtype, copy=False), like.affine, header=header)
    # Values are written as they are: a scaling inherited from the input header would change them.
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"] = 0
    img.header["cal_max"] = 0
    suffix = ".nii.gz" if str(path).lower().endswith(".nii.gz") else ".nii"
    _atomic(path, suffix, lambda tmp: nib.save(img, tmp))
    return path


def write_text(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    """Atomically write a text file (CSV, JSON, Markdown)."""
    path = Path(path)
    check_can_write([path], force)

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    _atomic(path, path.suffix, _write)
    return path


def write_json(path: str | os.PathLike, obj: Any, *, force: bool = False) -> Path:
    """Atomically write ``obj`` as indented JSON; NaN becomes null so that any JSON reader accepts it."""
    return write_text(path, json.dumps(json_ready(obj), indent=2) + "\n", force=force)


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically ``torch.save`` ``obj`` (checkpoints, model files): a stopped run never leaves half a file."""
    import torch

    path = Path(path)
    _atomic(path, ".pt", lambda tmp: torch.save(obj, tmp))
    return path


def json_ready(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (np.floating,)):
        return json_ready(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def _atomic(path: Path, suffix: str, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; outputs get the permissions any new file would get.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

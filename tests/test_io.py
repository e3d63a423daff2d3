"""NIfTI loading checks and atomic, geometry-preserving writes."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from wmhkit.errors import InputError, OutputExistsError
from wmhkit.io import derivative_stem, load_image, load_labels, load_volume, save_volume, write_json

LPS_OBLIQUE = np.array(
    [[-0.9, 0.05, 0.0, 90.0], [-0.05, -0.9, 0.1, 120.0], [0.0, 0.02, 3.0, -60.0], [0, 0, 0, 1]]
)


def image(shape=(6, 7, 5), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_loads_any_dtype_and_keeps_geometry(nifti):
    path = nifti("a.nii.gz", (image() * 1000).astype(np.int16), LPS_OBLIQUE)
    vol = load_image(path)
    assert vol.data.dtype == np.int16 and vol.shape == (6, 7, 5)
    assert np.allclose(vol.affine, LPS_OBLIQUE)
    assert vol.spacing == pytest.approx(np.linalg.norm(LPS_OBLIQUE[:3, :3], axis=0))


def test_single_volume_4d_is_squeezed(nifti):
    vol = load_image(nifti("a.nii", image((6, 7, 5, 1))))
    assert vol.shape == (6, 7, 5)


@pytest.mark.parametrize(
    "data, affine, message",
    [
        (image((6, 7, 5, 3)), None, "3 volumes"),
        (image((6, 7)), None, "2D image"),
        (np.full((4, 4, 4), np.nan, np.float32), None, "no finite values"),
        (np.full((4, 4, 4), 7, np.int16), None, "constant"),
        (image(), np.diag([1.0, 0.0, 1.0, 1.0]), "voxel size"),
        (image(), np.diag([1.0, 1.0, 500.0, 1.0]), "voxel size"),
    ],
)
def test_bad_images_are_refused_with_the_file_name(nifti, data, affine, message):
    path = nifti("bad.nii.gz", data, affine)
    with pytest.raises(InputError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_non_finite_affine(nifti):
    path = nifti("bad.nii.gz", image())
    img = nib.load(path)
    header = img.header.copy()
    header["srow_x"] = [np.nan, 0, 0, 0]
    header.set_qform(None, code=0)
    nib.save(nib.Nifti1Image(img.get_fdata(), None, header), path)
    with pytest.raises(InputError, match="non-finite"):
        load_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.nii.gz")


def test_not_a_nifti(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"this is not an image" * 40))
    with pytest.raises(InputError, match="not a readable NIfTI"):
        load_image(path)
    other = tmp_path / "scan.mgz"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match="expected .nii"):
        load_image(other)


def test_truncated_gzip(nifti):
    path = nifti("cut.nii.gz", image((40, 40, 20)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_nan_voxels_become_zero(nifti):
    data = image()
    data[0, 0, 0] = np.nan
    vol = load_image(nifti("a.nii.gz", data))
    assert vol.data[0, 0, 0] == 0 and np.isfinite(vol.data).all()


def test_label_values_outside_the_set(nifti):
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, 0] = 3
    with pytest.raises(InputError, match=r"outside \{0, 1, 2\}: 3"):
        load_labels(nifti("lab.nii.gz", labels), labels=(0, 1, 2))
    soft = np.full((4, 4, 4), 0.4, np.float32)
    with pytest.raises(InputError, match="0.4"):
        load_labels(nifti("soft.nii.gz", soft))


def test_empty_and_float_label_maps_are_valid(nifti):
    assert load_labels(nifti("empty.nii.gz", np.zeros((4, 4, 4), np.uint8))).data.max() == 0
    almost = np.zeros((4, 4, 4), np.float32)
    almost[1, 1, 1] = 0.9999999
    assert load_labels(nifti("f.nii.gz", almost)).data[1, 1, 1] == 1.0


def test_constant_prediction_allowed_when_asked(nifti):
    path = nifti("p.nii.gz", np.zeros((4, 4, 4), np.uint8))
    assert load_volume(path, allow_constant=True).data.max() == 0


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_save_keeps_grid_and_header(nifti, tmp_path, suffix):
    source = nifti("src" + suffix, (image() * 100).astype(np.int16), LPS_OBLIQUE)
    like = load_image(source)
    out = save_volume(tmp_path / ("mask" + suffix), like.data > 50, like, dtype=np.uint8)
    written = nib.load(out)
    assert np.allclose(written.affine, like.affine)
    assert written.get_data_dtype() == np.uint8
    assert written.header.get_qform(coded=True)[1] == like.header.get_qform(coded=True)[1]
    assert written.header.get_sform(coded=True)[1] == like.header.get_sform(coded=True)[1]
    assert np.array_equal(np.asarray(written.dataobj), (like.data > 50).astype(np.uint8))
    assert oct(os.stat(out).st_mode & 0o777) != "0o600"


def test_save_refuses_to_overwrite_without_force(nifti, tmp_path):
    like = load_image(nifti("src.nii.gz", image()))
    out = tmp_path / "o.nii.gz"
    save_volume(out, like.data, like)
    with pytest.raises(OutputExistsError, match="--force"):
        save_volume(out, like.data * 2, like)
    save_volume(out, like.data * 2, like, force=True)
    assert np.allclose(load_image(out).data, like.data * 2)


def test_interrupted_write_leaves_nothing(nifti, tmp_path, monkeypatch):
    like = load_image(nifti("src.nii.gz", image()))

    def explode(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(nib, "save", explode)
    with pytest.raises(RuntimeError):
        save_volume(tmp_path / "out" / "o.nii.gz", like.data, like)
    assert list((tmp_path / "out").iterdir()) == []


def test_json_nan_becomes_null(tmp_path):
    path = write_json(tmp_path / "s.json", {"h95": float("nan"), "n": np.int64(3)})
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"h95":null,"n":3}'


def test_derivative_stem_drops_the_modality_suffix_only():
    assert derivative_stem("data/sub-01_ses-1_FLAIR.nii.gz") == "sub-01_ses-1"
    assert derivative_stem("sub-01_T1w.nii") == "sub-01"
    assert derivative_stem("patient20_study2_FLAIR.nii.gz") == "patient20_study2"
    assert derivative_stem("FLAIR.nii.gz") == "FLAIR"  # nothing would be left
    assert derivative_stem("scan.nii.gz") == "scan"

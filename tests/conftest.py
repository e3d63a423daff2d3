from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def write_nifti(path, data, affine=None, dtype=None):
    """Write a NIfTI for a test and return its path."""
    data = np.asarray(data)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    img = nib.Nifti1Image(data.astype(dtype or data.dtype), None)
    # Through the sform alone, so that corrupt affines (which no qform can hold) can be written too.
    img.header.set_sform(affine, code=2)
    img.header.set_qform(None, code=0)
    img.header.set_zooms(tuple(np.linalg.norm(affine[:3, :3], axis=0))[: min(data.ndim, 3)]
                         + img.header.get_zooms()[3:])
    nib.save(img, str(path))
    return Path(path)


@pytest.fixture
def nifti(tmp_path):
    """nifti(name, data, affine=None, dtype=None) -> path under tmp_path."""

    def make(name, data, affine=None, dtype=None):
        return write_nifti(tmp_path / name, data, affine, dtype)

    return make


def requires_shared_data(*parts):
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present beside the checkout")

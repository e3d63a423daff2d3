"""wmhkit.metrics against a transcription of the challenge's official SimpleITK evaluation.

The official script is run on float references (it breaks on integer ones) and random lesion
volumes on an anisotropic grid; wmhkit must agree on every metric.
"""

import numpy as np
import pytest
from scipy import ndimage

from wmhkit.metrics import score

sitk = pytest.importorskip("SimpleITK")
SPACING = (0.9, 0.9, 3.0)


def official(ref_zyx: np.ndarray, pred_zyx: np.ndarray):
    """The official evaluation.py logic (getImages, getDSC, getHausdorff, getLesionDetection, getAVD)."""
    test = sitk.GetImageFromArray(ref_zyx.astype(np.float32))
    result = sitk.GetImageFromArray(pred_zyx.astype(np.uint8))
    test.SetSpacing(SPACING)
    result.CopyInformation(test)
    masked_test = sitk.BinaryThreshold(test, 0.5, 1.5, 1, 0)
    non_wmh = sitk.BinaryThreshold(test, 1.5, 2.5, 0, 1)
    masked_result = sitk.Mask(result, non_wmh)
    b_result = sitk.BinaryThreshold(masked_result, 1, 1000, 1, 0)

    t = sitk.GetArrayFromImage(masked_test).ravel().astype(bool)
    r = sitk.GetArrayFromImage(b_result).ravel().astype(bool)
    dsc = 2 * (t & r).sum() / (t.sum() + r.sum())

    e_test = sitk.BinaryErode(masked_test, (1, 1, 0))
    e_result = sitk.BinaryErode(b_result, (1, 1, 0))
    h_test = sitk.GetArrayFromImage(sitk.Subtract(masked_test, e_test))
    h_result = sitk.GetArrayFromImage(sitk.Subtract(b_result, e_result))
    test_pts = [masked_test.TransformIndexToPhysicalPoint(x.tolist())
                for x in np.transpose(np.flipud(np.nonzero(h_test)))]
    result_pts = [masked_test.TransformIndexToPhysicalPoint(x.tolist())
                  for x in np.transpose(np.flipud(np.nonzero(h_result)))]
    from scipy.spatial import KDTree

    d1 = KDTree(test_pts, leafsize=100).query(result_pts, k=1, eps=0, p=2)[0]
    d2 = KDTree(result_pts, leafsize=100).query(test_pts, k=1, eps=0, p=2)[0]
    h95 = max(np.percentile(d1, 95), np.percentile(d2, 95))

    cc = sitk.ConnectedComponentImageFilter()
    cc.SetFullyConnected(True)
    cc_test = cc.Execute(masked_test)
    l_result = sitk.Multiply(cc_test, sitk.Cast(b_result, sitk.sitkUInt32))
    n_wmh = len(np.unique(sitk.GetArrayFromImage(cc_test))) - 1
    recall = (len(np.unique(sitk.GetArrayFromImage(l_result))) - 1) / n_wmh
    cc_result = cc.Execute(b_result)
    l_test = sitk.Multiply(cc_result, sitk.Cast(masked_test, sitk.sitkUInt32))
    n_det = len(np.unique(sitk.GetArrayFromImage(cc_result))) - 1
    precision = (len(np.unique(sitk.GetArrayFromImage(l_test))) - 1) / n_det
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)

    avd = abs(t.sum() - r.sum()) / t.sum() * 100
    return dsc, h95, avd, recall, f1


def random_lesions(rng, shape, density):
    noise = ndimage.gaussian_filter(rng.random(shape), sigma=(0.6, 1.5, 1.5))
    return noise > np.quantile(noise, 1 - density)


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_official_evaluation(seed):
    rng = np.random.default_rng(seed)
    shape_zyx = (8, 40, 36)
    ref = random_lesions(rng, shape_zyx, 0.04).astype(np.uint8)
    ref[random_lesions(rng, shape_zyx, 0.01) & (ref == 0)] = 2
    pred = random_lesions(rng, shape_zyx, 0.05) | (ref == 1) & (rng.random(shape_zyx) > 0.3)
    expected = official(ref, pred)
    # wmhkit arrays are (x, y, z) with the affine mapping them to mm.
    got = score(ref.transpose(2, 1, 0), pred.transpose(2, 1, 0), np.diag([*SPACING, 1.0]))
    assert (got.dsc, got.h95, got.avd, got.recall, got.f1) == pytest.approx(expected, rel=1e-9)

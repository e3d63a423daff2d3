"""Challenge metrics on hand-built volumes whose true values are worked out by hand."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from wmhkit.metrics import (
    binarize_prediction,
    boundary,
    dice,
    hausdorff95,
    label_lesions,
    lesion_detection,
    score,
)

ANISO = np.diag([0.5, 1.0, 3.0, 1.0])  # x 0.5 mm, y 1 mm, slices 3 mm


def empty(shape=(10, 10, 10)):
    return np.zeros(shape, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------- DSC


def test_dice_by_hand():
    ref, pred = empty(), empty()
    ref[2:4, 2:4, 2] = 1  # 4 voxels
    pred[3:5, 2:4, 2] = 1  # 4 voxels, 2 shared
    assert dice(ref, pred) == pytest.approx(2 * 2 / 8)


# ---------------------------------------------------------------------------------------------- H95


def test_boundary_erodes_in_plane_only():
    cube = empty()
    cube[2:5, 2:5, 2:5] = 1
    # Each 3x3 slice keeps its centre after a 3x3 in-plane erosion: 8 boundary voxels per slice.
    # A 3D erosion would have kept only the cube's centre (26 boundary voxels).
    assert boundary(cube).sum() == 24
    assert not boundary(cube)[3, 3, 2]


def test_boundary_treats_outside_as_foreground():
    mask = empty((5, 5, 1))
    mask[:3, :, 0] = 1  # touches the image edge on three sides
    edge = boundary(mask)
    # Only the row facing the inside of the image is boundary; the rows at the image border are not.
    assert edge[2, :, 0].all()
    assert not edge[:2, :, 0].any()


def test_h95_anisotropic_spacing_and_interpolation():
    ref, pred = empty(), empty()
    ref[2:5, 5, 5] = 1  # a one-voxel-thick line: every voxel is boundary
    pred[2, 5, 6] = 1  # next slice, above the line's first voxel
    # ref -> pred distances: 3, sqrt(0.5^2 + 3^2), sqrt(1^2 + 3^2); pred -> ref: 3.
    d = sorted([3.0, math.sqrt(9.25), math.sqrt(10.0)])
    p95 = d[1] + 0.9 * (d[2] - d[1])  # linear interpolation at rank 0.95 * 2 = 1.9
    assert hausdorff95(ref, pred, ANISO) == pytest.approx(p95)
    assert hausdorff95(pred, ref, ANISO) == pytest.approx(p95)


def test_h95_uses_the_affine_not_voxel_counts():
    ref, pred = empty(), empty()
    ref[5, 5, 2] = 1
    pred[5, 5, 4] = 1  # two slices apart
    assert hausdorff95(ref, pred, ANISO) == pytest.approx(6.0)
    oblique = np.array([[0, 0, 2.0, 10], [1.0, 0, 0, -5], [0, 1.0, 0, 3], [0, 0, 0, 1]])
    assert hausdorff95(ref, pred, oblique) == pytest.approx(4.0)


def test_h95_one_voxel_thick_structure():
    ref, pred = empty(), empty()
    ref[1:9, 4, 3] = 1
    pred[1:9, 6, 3] = 1  # the same line shifted two voxels in y
    assert hausdorff95(ref, pred, ANISO) == pytest.approx(2.0)


def test_h95_a_hole_turns_the_interior_into_boundary():
    ref = empty()
    ref[2:7, 2:7, 4] = 1  # 5x5 square: its boundary is the 16-voxel ring
    pred = ref.copy()
    pred[4, 4, 4] = 0  # a central hole erodes the whole inner 3x3: all 24 voxels become boundary
    # pred -> ref: 16 ring voxels at 0 mm, 8 inner voxels at 1 mm; the 95th percentile (rank 21.85
    # of 0..23) falls among the 1s. ref -> pred: all 0.
    assert hausdorff95(ref, pred, np.eye(4)) == pytest.approx(1.0)
    assert dice(ref, pred) == pytest.approx(48 / 49)
    assert hausdorff95(ref, ref, np.eye(4)) == 0.0


def test_h95_whole_slice_mask_has_no_boundary():
    full = np.ones((4, 4, 2), dtype=np.uint8)
    assert math.isnan(hausdorff95(full, full, np.eye(4)))


# --------------------------------------------------------------------------------- lesion detection


def test_diagonal_neighbours_are_one_lesion():
    ref = empty()
    ref[2, 2, 2] = ref[3, 3, 3] = 1  # touch only at a corner
    assert label_lesions(ref)[1] == 1
    pred = empty()
    pred[3, 3, 3] = 1
    recall, f1 = lesion_detection(ref, pred)
    assert recall == 1.0 and f1 == 1.0


def test_lesion_recall_and_f1_by_hand():
    ref, pred = empty(), empty()
    ref[1, 1, 1] = ref[8, 8, 8] = 1  # two reference lesions
    pred[1, 1, 1] = 1  # hits one
    pred[5, 5, 1] = 1  # a false positive
    pred[5, 8, 5] = 1  # another false positive
    recall, f1 = lesion_detection(ref, pred)
    precision = 1 / 3
    assert recall == 0.5
    assert f1 == pytest.approx(2 * precision * 0.5 / (precision + 0.5))


# ------------------------------------------------------------------------------ labels and binarising


def test_label_two_is_removed_from_the_prediction():
    ref = empty()
    ref[1:3, 1:3, 1] = 1
    ref[6:8, 6:8, 6] = 2  # other pathology
    pred = (ref > 0).astype(np.uint8)  # predicts both
    s = score(ref, pred, np.eye(4))
    assert s.dsc == 1.0
    assert s.f1 == 1.0  # the other-pathology blob is no false-positive lesion
    assert s.pred_lesions == 1
    assert s.pred_ml == pytest.approx(4 / 1000)
    assert s.avd == 0.0


def test_integer_and_float_references_score_alike():
    rng = np.random.default_rng(0)
    ref = (rng.random((12, 12, 6)) > 0.8).astype(np.uint8)
    ref[0:3, 0:3, 0] = 2
    pred = (rng.random((12, 12, 6)) > 0.7).astype(np.uint8)
    as_int = score(ref, pred, ANISO)
    as_float = score(ref.astype(np.float32), pred, ANISO)
    as_int16 = score(ref.astype(np.int16), pred, ANISO)
    assert as_int == as_float == as_int16
    assert as_int.ref_lesions > 0


@pytest.mark.parametrize(
    "dtype, value, foreground",
    [
        (np.uint8, 1, True),
        (np.uint8, 2, True),
        (np.int16, 1000, True),
        (np.int16, 1001, False),
        (np.int16, -1, False),
        (np.float32, 0.49, False),
        (np.float32, 0.5, True),
        (np.float64, 0.99, True),
        (np.float32, 1000.5, False),
        (np.float32, np.nan, False),
    ],
)
def test_prediction_binarisation(dtype, value, foreground):
    pred = np.full((2, 2, 2), value, dtype=dtype)
    assert binarize_prediction(pred).all() == foreground


# -------------------------------------------------------------------------------------- empty masks


def test_empty_prediction():
    ref = empty()
    ref[2:4, 2:4, 2:4] = 1
    s = score(ref, empty(), np.eye(4))
    assert s.dsc == 0.0 and math.isnan(s.h95) and s.avd == 100.0
    assert s.recall == 0.0 and s.f1 == 0.0 and s.pred_lesions == 0


def test_empty_reference():
    pred = empty()
    pred[2:4, 2:4, 2:4] = 1
    s = score(empty(), pred, np.eye(4))
    assert s.dsc == 0.0 and math.isnan(s.h95) and math.isnan(s.avd)
    assert s.recall == 1.0 and s.f1 == 0.0 and s.ref_lesions == 0


def test_both_empty():
    s = score(empty(), empty(), np.eye(4))
    assert math.isnan(s.dsc) and math.isnan(s.h95) and math.isnan(s.avd)
    assert s.recall == 1.0 and s.f1 == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        score(empty((4, 4, 4)), empty((4, 4, 5)), np.eye(4))


def test_volumes_in_ml_follow_the_affine():
    ref = empty()
    ref[0:4, 0:2, 0] = 1  # 8 voxels of 0.5 * 1 * 3 = 1.5 mm^3
    s = score(ref, ref, ANISO)
    assert s.ref_ml == pytest.approx(8 * 1.5 / 1000)


# --------------------------------------------------------------------------------- property tests

masks = arrays(np.uint8, (6, 5, 4), elements=st.integers(0, 1))
spacings = st.tuples(*[st.floats(0.3, 5.0)] * 3)


@settings(max_examples=60, deadline=None)
@given(a=masks, b=masks)
def test_dice_is_symmetric(a, b):
    x, y = dice(a, b), dice(b, a)
    assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y)


@settings(max_examples=60, deadline=None)
@given(a=masks, spacing=spacings)
def test_identical_masks_score_perfectly(a, spacing):
    if not a.any():
        return
    affine = np.diag([*spacing, 1.0])
    s = score(a, a, affine)
    assert s.dsc == 1.0 and s.avd == 0.0 and s.recall == 1.0 and s.f1 == 1.0
    assert s.h95 == 0.0 or (math.isnan(s.h95) and not boundary(a).any())


@settings(max_examples=40, deadline=None)
@given(a=masks, b=masks, spacing=spacings)
def test_h95_is_symmetric_and_non_negative(a, b, spacing):
    affine = np.diag([*spacing, 1.0])
    x, y = hausdorff95(a, b, affine), hausdorff95(b, a, affine)
    assert (math.isnan(x) and math.isnan(y)) or (x == pytest.approx(y) and x >= 0)

"""Preprocessing stages: exact round trips, registration accuracy, top-hat, bias correction."""

import nibabel.orientations as nio
import numpy as np
import pytest
from scipy import ndimage

from wmhkit.preprocess import (
    RegistrationFailed,
    apply_rigid,
    area_tophat,
    from_canonical,
    from_sitk,
    n4_bias_correct,
    percentile_scale,
    register_rigid,
    resample,
    to_canonical,
    to_sitk,
    working_grid,
    zscore,
)


def rotation(rx, ry, rz):
    rx, ry, rz = np.radians([rx, ry, rz])
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (
        np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    )


def affine_of(linear, origin):
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = origin
    return a


RAS = affine_of(np.diag([1.0, 1.0, 3.0]), [-30, -40, -20])
LPS = affine_of(np.diag([-0.9, -0.9, 3.0]), [100, 120, -20])
OBLIQUE = affine_of(rotation(12, -7, 20) @ np.diag([0.9, 0.9, 3.0]), [-90, 60, -30])
SAGITTAL = affine_of(np.array([[0, 0, -1.0], [-1.2, 0, 0], [0, 1.2, 0]]), [80, 100, -90])
AFFINES = {"RAS": RAS, "LPS": LPS, "oblique": OBLIQUE, "sagittal": SAGITTAL}


def labels(shape=(24, 20, 10), seed=0):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), 2)
    return np.digitize(smooth, np.quantile(smooth, [0.5, 0.8, 0.95])).astype(np.uint8)


@pytest.mark.parametrize("name", AFFINES)
def test_sitk_conversion_round_trip(name):
    data = labels()
    data_back, affine_back = from_sitk(to_sitk(data, AFFINES[name]))
    assert np.array_equal(data_back, data)
    assert np.allclose(affine_back, AFFINES[name])


@pytest.mark.parametrize("name", AFFINES)
def test_orientation_round_trip_is_exact(name):
    data = labels()
    canonical, affine, how = to_canonical(data, AFFINES[name])
    assert nio.aff2axcodes(affine) == ("R", "A", "S")
    assert np.array_equal(from_canonical(canonical, how), data)
    # The same voxel sits at the same world position on both grids.
    index = np.array([3, 5, 7])
    world = AFFINES[name] @ [*index, 1]
    canonical_index = np.rint(np.linalg.solve(affine, world)[:3]).astype(int)
    assert canonical[tuple(canonical_index)] == data[tuple(index)]


@pytest.mark.parametrize("name", AFFINES)
def test_label_round_trip_through_a_finer_grid_is_exact(name):
    data = labels()
    affine = AFFINES[name]
    spacing = np.linalg.norm(affine[:3, :3], axis=0) * [0.5, 0.7, 0.4]
    shape, fine = working_grid(data.shape, affine, spacing)
    up = resample(data, affine, shape, fine, kind="label")
    assert up.dtype == np.uint8
    back = resample(up, fine, data.shape, affine, kind="label")
    assert np.array_equal(back, data)


def test_identity_resample_is_exact_and_linear_round_trip_is_close():
    image = ndimage.gaussian_filter(np.random.default_rng(1).random((30, 30, 12)), 2).astype(np.float32)
    assert np.array_equal(resample(image, OBLIQUE, image.shape, OBLIQUE), image)
    shape, fine = working_grid(image.shape, OBLIQUE, (0.45, 0.45, 1.0))
    back = resample(resample(image, OBLIQUE, shape, fine), fine, image.shape, OBLIQUE)
    inner = (slice(2, -2),) * 3
    assert np.abs(back - image)[inner].max() < 0.05 * np.ptp(image)


def test_working_grid_keeps_the_field_of_view():
    shape, affine = working_grid((512, 512, 16), LPS, 1.0)
    assert shape == (461, 461, 48)
    corner = lambda a, s: a @ [s[0] - 0.5, s[1] - 0.5, s[2] - 0.5, 1]  # noqa: E731
    assert np.allclose(corner(affine, shape), corner(LPS, (512, 512, 16)))
    assert np.allclose(affine @ [-0.5, -0.5, -0.5, 1], LPS @ [-0.5, -0.5, -0.5, 1])


def head(shape=(64, 64, 40), spacing=2.0, contrast=(1.0, 0.6, 0.3, 0.9)):
    """A head-like phantom: ellipsoid shells with smooth texture, asymmetric so rotations show."""
    grid = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
    r = np.sqrt((grid[0] / 26) ** 2 + (grid[1] / 22) ** 2 + ((grid[2] + 3) / 15) ** 2)
    image = np.zeros(shape, np.float32)
    for radius, value in zip((1.0, 0.85, 0.5, 0.25), contrast):
        image[r < radius] = value
    image[(grid[0] > 8) & (grid[1] > 5) & (r < 0.7)] += 0.4  # an off-centre feature
    texture = ndimage.gaussian_filter(np.random.default_rng(3).standard_normal(shape), 3)
    texture /= texture.std()
    # Same texture in every contrast (it is anatomy), mapped through the contrast's own weights.
    image = image * (1 + 0.25 * contrast[0] * texture) + 0.15 * contrast[1] * np.abs(texture) * (image > 0)
    return image.astype(np.float32), np.diag([spacing] * 3 + [1.0])


def test_rigid_registration_recovers_a_known_transform():
    fixed, fixed_affine = head()
    t1_like, _ = head(contrast=(0.3, 0.9, 0.5, 0.2))  # another contrast of the same anatomy
    truth = affine_of(rotation(6, -5, 8), [4.0, -3.0, 5.0])  # fixed world -> moving world
    # The moving scan sees the anatomy displaced by `truth`: its affine is truth @ fixed_affine.
    moving_affine = truth @ fixed_affine
    result = register_rigid(t1_like, moving_affine, fixed, fixed_affine)
    grid = np.stack(np.meshgrid(*[np.linspace(10, n - 10, 5) for n in fixed.shape], indexing="ij"))
    points = fixed_affine @ np.vstack([grid.reshape(3, -1), np.ones(grid[0].size)])
    error = np.linalg.norm((result.fixed_to_moving - truth) @ points, axis=0)
    assert error.max() < 1.0, f"max error {error.max():.2f} mm"
    assert result.metric < result.initial_metric
    moved = apply_rigid(t1_like, moving_affine, result, fixed.shape, fixed_affine)
    assert np.corrcoef(moved.ravel(), t1_like.ravel())[0, 1] > 0.95


def test_implausible_registration_is_refused():
    fixed, fixed_affine = head()
    far = affine_of(np.eye(3), [70.0, 0.0, 0.0])  # a 7 cm shift is no same-session T1
    with pytest.raises(RegistrationFailed, match="shift"):
        register_rigid(fixed, far @ fixed_affine, fixed, fixed_affine, initialize="moments",
                       iterations=30)
    noise = np.random.default_rng(0).random(fixed.shape).astype(np.float32)
    with pytest.raises(RegistrationFailed, match="almost no information"):
        register_rigid(noise, fixed_affine, fixed, fixed_affine, iterations=30)


def test_area_tophat_is_image_minus_area_opening():
    image = np.full((20, 20, 2), 10.0, np.float32)
    image[2:5, 2:5, 0] = 50.0  # 9 px: below 25, removed by the opening
    image[10:16, 10:16, 0] = 40.0  # 36 px: kept
    image[2:5, 2:5, 1] = 30.0  # same spot on another slice: per-slice areas do not add up
    hat = area_tophat(image, 25)
    expected = np.zeros_like(image)
    expected[2:5, 2:5, 0] = 40.0
    expected[2:5, 2:5, 1] = 20.0
    assert np.array_equal(hat, expected)
    # In 3D the spot's two slices are one 18-voxel structure at level 30 with a 9-voxel peak above.
    assert area_tophat(image, 25, per_slice=False)[3, 3, :].tolist() == [40.0, 20.0]
    assert area_tophat(image, 10, per_slice=False)[3, 3, :].tolist() == [20.0, 0.0]


def test_n4_removes_a_smooth_bias():
    tissue, affine = head(shape=(48, 48, 32), contrast=(1.0, 1.0, 1.0, 1.0))
    mask = tissue > 0.5
    x = np.linspace(-1, 1, 48)[:, None, None]
    bias = (1 + 0.35 * x + 0.2 * np.linspace(-1, 1, 32)[None, None, :]).astype(np.float32)
    flat = np.where(mask, 100.0, 0).astype(np.float32)
    corrected, field = n4_bias_correct(flat * bias, affine, mask, fit_spacing_mm=4.0)
    cv = lambda v: v[mask].std() / v[mask].mean()  # noqa: E731
    assert cv(corrected) < 0.3 * cv(flat * bias)
    assert np.allclose(corrected * field, flat * bias, rtol=1e-4)


def test_normalisations():
    rng = np.random.default_rng(0)
    image = rng.normal(50, 10, (10, 10, 10)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[2:8, 2:8, 2:8] = True
    z = zscore(image, mask)
    assert z[mask].mean() == pytest.approx(0, abs=1e-5) and z[mask].std() == pytest.approx(1, abs=1e-4)
    assert not z[~mask].any()
    p = percentile_scale(image, mask)
    assert p.min() == 0 and p.max() == 1
    assert np.mean(p[mask] == 1) == pytest.approx(0.01, abs=0.01)

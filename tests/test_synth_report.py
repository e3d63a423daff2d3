"""Realism statistics on hand-built volumes whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wmhkit import synth_report as sr


def cubes_scene(shape=(40, 30, 30)):
    """A ventricle slab x <= 4, a 3-voxel cube at x 10..12 and a 2-voxel cube at x 20..21.

    The slab spans all of y and z, so a voxel's distance to it is its x index minus 4 (times the x
    spacing): cube A voxels lie 6, 7, 8 voxels away, cube B voxels 16, 17.
    """
    ventricles = np.zeros(shape, bool)
    ventricles[:5] = True
    lesions = np.zeros(shape, np.uint8)
    lesions[10:13, 5:8, 5:8] = 1  # 27 voxels
    lesions[20:22, 15:17, 15:17] = 1  # 8 voxels
    return lesions, ventricles


def test_volume_count_sizes_isotropic():
    lesions, _ = cubes_scene()
    assert sr.lesion_count(lesions) == 2
    assert sr.lesion_volume_ml(lesions, (1, 1, 1)) == pytest.approx(0.035)
    assert sorted(sr.lesion_sizes_ml(lesions, (1, 1, 1))) == pytest.approx([0.008, 0.027])


def test_volume_honours_anisotropic_voxels():
    lesions, _ = cubes_scene()
    assert sr.lesion_volume_ml(lesions, (2.0, 0.5, 3.0)) == pytest.approx(0.035 * 3.0)


def test_diagonal_neighbours_are_one_lesion_26_connectivity():
    mask = np.zeros((6, 6, 6), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner contact only
    mask[4, 4, 4] = True
    assert sr.lesion_count(mask) == 2
    labels, n = sr.lesion_labels(mask)
    assert n == 2 and labels[1, 1, 1] == labels[2, 2, 2] != labels[4, 4, 4]


def test_distances_per_voxel_and_per_lesion():
    lesions, ventricles = cubes_scene()
    per_lesion = sr.lesion_ventricle_distances(lesions, ventricles, (1, 1, 1), per="lesion")
    assert sorted(per_lesion) == pytest.approx([6.0, 16.0])
    per_voxel = sr.lesion_ventricle_distances(lesions, ventricles, (1, 1, 1), per="voxel")
    assert per_voxel.shape == (35,)
    expected = [6.0] * 9 + [7.0] * 9 + [8.0] * 9 + [16.0] * 4 + [17.0] * 4
    assert sorted(per_voxel) == pytest.approx(expected)


def test_distances_scale_with_spacing_along_the_gap():
    lesions, ventricles = cubes_scene()
    per_lesion = sr.lesion_ventricle_distances(lesions, ventricles, (2.5, 1, 1), per="lesion")
    assert sorted(per_lesion) == pytest.approx([15.0, 40.0])


def test_distance_is_euclidean_not_city_block():
    ventricles = np.zeros((20, 20, 20), bool)
    ventricles[2, 2, 2] = True
    lesion = np.zeros_like(ventricles)
    lesion[5, 6, 2] = True  # 3-4-5 triangle
    assert sr.lesion_ventricle_distances(lesion, ventricles, (1, 1, 1)) == pytest.approx([5.0])


def test_lesion_inside_ventricle_has_distance_zero():
    lesions, ventricles = cubes_scene()
    lesions[3, 3, 3] = 1
    assert min(sr.lesion_ventricle_distances(lesions, ventricles, (1, 1, 1), per="lesion")) == 0.0


def test_empty_ventricles_rejected():
    lesions, ventricles = cubes_scene()
    with pytest.raises(ValueError, match="empty"):
        sr.lesion_ventricle_distances(lesions, np.zeros_like(ventricles), (1, 1, 1))
    with pytest.raises(ValueError, match="per"):
        sr.lesion_ventricle_distances(lesions, ventricles, (1, 1, 1), per="centroid")


def test_contrast_from_constant_intensities():
    lesions, _ = cubes_scene()
    wm = np.zeros(lesions.shape, bool)
    wm[8:30] = True  # includes both cubes: lesion voxels must not count as NAWM
    flair = np.full(lesions.shape, 40.0)
    flair[wm] = 100.0
    flair[lesions > 0] = 250.0
    assert sr.lesion_contrast(flair, lesions, wm) == pytest.approx(2.5)
    # A scale change of the image does not change the ratio.
    assert sr.lesion_contrast(flair * 7.3, lesions, wm) == pytest.approx(2.5)
    assert math.isnan(sr.lesion_contrast(flair, np.zeros_like(lesions), wm))
    assert math.isnan(sr.lesion_contrast(flair, lesions, lesions))  # no NAWM left


def test_case_statistics_bundle():
    lesions, ventricles = cubes_scene()
    wm = np.ones(lesions.shape, bool)
    flair = np.where(lesions > 0, 3.0, 1.0)
    t1 = np.where(lesions > 0, 0.6, 1.2)
    stats = sr.case_statistics(lesions, (1, 1, 1), ventricles=ventricles, flair=flair, white_matter=wm, t1=t1)
    assert stats["count"] == 2
    assert stats["count_10ul"] == 1  # the 8-voxel cube (8 ul) is below 10 ul
    assert stats["volume_ml"] == pytest.approx(0.035)
    assert stats["ventricle_distance_mm"] == pytest.approx(7.0)  # median of 9x6, 9x7, 9x8, 4x16, 4x17
    assert stats["periventricular_fraction"] == pytest.approx(27 / 35)
    assert stats["contrast"] == pytest.approx(3.0)
    assert stats["t1_contrast"] == pytest.approx(0.5)
    assert sorted(stats["lesion_distance_mm"]) == pytest.approx([6.0, 16.0])
    assert sorted(stats["lesion_size_ml"]) == pytest.approx([0.008, 0.027])


def test_case_statistics_lesion_free_and_missing_inputs():
    _, ventricles = cubes_scene()
    empty = sr.case_statistics(np.zeros(ventricles.shape), (1, 1, 1), ventricles=ventricles)
    assert empty["count"] == 0 and empty["volume_ml"] == 0.0
    assert math.isnan(empty["ventricle_distance_mm"]) and empty["lesion_distance_mm"] == []
    lesions, _ = cubes_scene()
    no_vent = sr.case_statistics(lesions, (1, 1, 1))
    assert math.isnan(no_vent["ventricle_distance_mm"]) and math.isnan(no_vent["contrast"])


def test_summarise_known_percentiles_and_zero_share():
    summary = sr.summarise(list(range(101)) + [float("nan")])
    assert summary["n"] == 101
    assert (summary["p05"], summary["q25"], summary["median"], summary["q75"], summary["p95"]) == (
        pytest.approx(5), pytest.approx(25), pytest.approx(50), pytest.approx(75), pytest.approx(95))
    assert summary["share_zero"] == pytest.approx(1 / 101)
    assert sr.summarise([None, float("nan")])["n"] == 0


def test_summarise_cases_and_table():
    lesions, ventricles = cubes_scene()
    cases = [sr.case_statistics(lesions, (1, 1, 1), ventricles=ventricles),
             sr.case_statistics(np.zeros_like(lesions), (1, 1, 1), ventricles=ventricles)]
    summary = sr.summarise_cases(cases)
    assert summary["lesion_free"] == 0.5 and summary["cases"] == 2
    assert summary["count"]["median"] == pytest.approx(1.0)
    assert summary["lesion_distance_mm"]["n"] == 2  # pooled over lesions, not cases
    assert summary["contrast"]["n"] == 0
    # Derived from per-lesion sizes when a stored case predates the statistic.
    legacy = {k: v for k, v in cases[0].items() if k != "count_10ul"}
    assert sr.summarise_cases([legacy])["count_10ul"]["median"] == 1
    table = sr.format_table({"synthetic": summary, "real": summary})
    lines = table.splitlines()
    assert "synthetic" in lines[0] and "real" in lines[0]
    assert any(line.startswith("share of lesion-free cases") and "0.50" in line for line in lines)
    contrast_line = next(line for line in lines if line.startswith("FLAIR contrast"))
    assert contrast_line.split("|")[1].strip() == "-"


def test_resample_labels_world_alignment():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[4, 5, 6] = 3
    affine = np.eye(4)
    # Target grid: flipped x axis, 2 mm voxels, shifted origin; world point (4, 5, 6) is its voxel (3, 2, 3).
    target = np.array([[-1.0, 0, 0, 7], [0, 2, 0, 1], [0, 0, 1, 3], [0, 0, 0, 1]])
    out = sr.resample_labels(labels, affine, (8, 5, 8), target)
    assert out.dtype == np.uint8
    assert list(zip(*np.nonzero(out))) == [(3, 2, 3)]


def test_warp_template_recovers_ventricles_across_orientations():
    """A mask-only registration places template ventricles in a shifted, scaled, LPS-stored subject."""
    def ellipsoid_scene(shape, centre, radii):
        ijk = np.indices(shape).astype(float)
        r = sum(((ijk[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
        labels = np.zeros(shape, np.uint8)
        labels[r <= 1] = sr.TEMPLATE_BRAIN
        # Off-centre ventricle so that a flip of any axis would misplace it.
        v = sum(((ijk[a] - centre[a] - off) / (radii[a] * 0.25)) ** 2 for a, off in
                enumerate((radii[0] * 0.3, radii[1] * 0.2, radii[2] * 0.15)))
        labels[v <= 1] = sr.TEMPLATE_VENTRICLE
        return labels

    template = ellipsoid_scene((40, 48, 36), (20, 24, 18), (14, 18, 12))
    t_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    t_affine[:3, 3] = (-40, -48, -36)
    # Subject: 10 % larger, shifted, stored with flipped x and y axes (LPS on disk, like open_ms).
    subject_ras = ellipsoid_scene((48, 56, 44), (26, 27, 22), (15.4, 19.8, 13.2))
    subject = subject_ras[::-1, ::-1, :]
    s_affine = np.array([[-2.0, 0, 0, 60], [0, -2.0, 0, 70], [0, 0, 2.0, -30], [0, 0, 0, 1]])
    warped = sr.warp_template_to_brainmask(subject > 0, s_affine, (template, t_affine))
    truth = subject == sr.TEMPLATE_VENTRICLE
    got = warped == sr.TEMPLATE_VENTRICLE
    dice = 2 * np.sum(truth & got) / (truth.sum() + got.sum())
    assert dice > 0.7


def test_shipped_template_and_real_stats():
    labels, affine = sr.load_template()
    assert labels.shape == (197, 233, 189)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert 15_000 < np.sum(labels == sr.TEMPLATE_VENTRICLE) < 40_000  # ml x 1000 at 1 mm
    real = sr.shipped_real_stats()
    assert len(real.mask_cases) == 30 and len(real.labeled_cases) == 3
    assert "10.1007/s12021-017-9348-7" in real.meta["attribution"]
    summary = sr.summarise_cases(real.mask_cases)
    assert 0.3 <= summary["volume_ml"]["p05"] and summary["volume_ml"]["p95"] <= 60
    labeled = sr.summarise_cases(real.labeled_cases)
    assert labeled["contrast"]["n"] == 3 and labeled["contrast"]["median"] > 1.1


def write_synth_case(folder, flair, wmh, tissue, affine, meta, t1=None):
    """A case folder as `wmhkit synth` writes it."""
    import json

    import nibabel as nib

    (folder / "pre").mkdir(parents=True)
    nib.save(nib.Nifti1Image(flair.astype(np.float32), affine), folder / "pre" / "FLAIR.nii.gz")
    if t1 is not None:
        nib.save(nib.Nifti1Image(t1.astype(np.float32), affine), folder / "pre" / "T1.nii.gz")
    nib.save(nib.Nifti1Image(wmh.astype(np.uint8), affine), folder / "wmh.nii.gz")
    nib.save(nib.Nifti1Image(tissue.astype(np.uint8), affine), folder / "tissue.nii.gz")
    (folder / "meta.json").write_text(json.dumps(meta))


def synth_like_case():
    lesions, ventricles = cubes_scene()
    tissue = np.full(lesions.shape, 4, np.uint8)  # 4: grey matter
    tissue[8:30] = 2  # white matter (lesions lie in it)
    tissue[ventricles] = 9
    flair = np.where(tissue == 2, 100.0, 60.0)
    flair[lesions > 0] = 180.0
    return flair, lesions, tissue


def test_synthetic_case_statistics_uses_tissue_ids():
    flair, lesions, tissue = synth_like_case()
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    stats = sr.synthetic_case_statistics(flair, lesions, tissue, affine, wm_labels=[1, 2, 3],
                                         ventricle_labels=[9, 10])
    assert stats["count"] == 2
    assert stats["volume_ml"] == pytest.approx(0.070)
    assert sorted(stats["lesion_distance_mm"]) == pytest.approx([12.0, 32.0])
    assert stats["contrast"] == pytest.approx(1.8)


def test_folder_stats_reads_synth_output(tmp_path):
    flair, lesions, tissue = synth_like_case()
    names = {"0": "background", "2": "wm_deep", "4": "gm_cortex_frontal", "9": "csf_lateral_ventricle"}
    t1 = np.where(lesions > 0, 70.0, 140.0)
    write_synth_case(tmp_path / "case_0000", flair, lesions, tissue, np.eye(4),
                     {"wm_labels": [1, 2, 3], "ventricle_labels": [9, 10]}, t1=t1)
    # Without explicit id lists the ids are found by name.
    write_synth_case(tmp_path / "case_0001", flair, np.zeros_like(lesions), tissue, np.eye(4),
                     {"tissue_labels": names})
    stats = sr.folder_stats(tmp_path)
    assert [s["case_id"] for s in stats] == ["case_0000", "case_0001"]
    assert stats[0]["count"] == 2 and stats[0]["contrast"] == pytest.approx(1.8)
    assert stats[0]["t1_contrast"] == pytest.approx(0.5)
    assert stats[1]["count"] == 0 and math.isnan(stats[1]["t1_contrast"])  # no T1 written
    report = sr.realism_report(synth_root=tmp_path)
    assert "synthetic (2)" in report.table and "real: open_ms masks (30)" in report.table
    assert report.to_json()["summaries"]["synthetic (2)"]["lesion_free"] == 0.5


def test_folder_stats_without_tissue_is_an_input_error(tmp_path):
    from wmhkit.errors import InputError

    flair, lesions, tissue = synth_like_case()
    write_synth_case(tmp_path / "c", flair, lesions, tissue, np.eye(4), {})
    (tmp_path / "c" / "tissue.nii.gz").unlink()
    with pytest.raises(InputError, match="tissue"):
        sr.folder_stats(tmp_path)


def test_cli_synth_report_from_folder(tmp_path, capsys):
    from wmhkit.cli import main

    flair, lesions, tissue = synth_like_case()
    write_synth_case(tmp_path / "cases" / "a", flair, lesions, tissue, np.eye(4),
                     {"wm_labels": [2], "ventricle_labels": [9]})
    out_json = tmp_path / "report.json"
    code = main(["synth", "--report", "--report-from", str(tmp_path / "cases"), "--report-json", str(out_json)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "synthetic (1)" in printed and "lesion volume / case (ml)" in printed
    import json

    saved = json.loads(out_json.read_text())
    assert saved["summaries"]["synthetic (1)"]["count"]["median"] == 2
    # Without --report the output folder stays mandatory.
    assert main(["synth", "-n", "1"]) == 2

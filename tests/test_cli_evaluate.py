"""`wmhkit evaluate` from the command line: pairs, datasets, groups, ranking and errors."""

import csv
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conftest import REPO, write_nifti
from wmhkit import __version__
from wmhkit.cli import main
from wmhkit.evaluation import rank_methods, read_groups
from wmhkit.metrics import METRICS

AFFINE = np.diag([0.9, 0.9, 3.0, 1.0])


def lesion_pair(seed, shape=(20, 20, 6)):
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, np.uint8)
    for _ in range(3):
        x, y, z = rng.integers(2, 17), rng.integers(2, 17), rng.integers(0, 6)
        ref[x : x + 3, y : y + 3, z] = 1
    pred = ref.copy()
    pred[rng.integers(0, 20), rng.integers(0, 20), rng.integers(0, 6)] = 1
    return ref, pred


def make_dataset(root, n=3, layouts=("flat", "result")):
    refs, preds = root / "ref", root / "pred"
    for i in range(n):
        ref, pred = lesion_pair(i)
        case = f"site{i % 2}/{i}"
        (refs / case).mkdir(parents=True)
        write_nifti(refs / case / "wmh.nii.gz", ref, AFFINE)
        if layouts[i % len(layouts)] == "flat":
            (preds / case).parent.mkdir(parents=True, exist_ok=True)
            write_nifti(preds / f"{case}.nii.gz", pred, AFFINE)
        else:
            (preds / case).mkdir(parents=True)
            write_nifti(preds / case / "result.nii.gz", pred.astype(np.float32), AFFINE)
    return refs, preds


def run_cli(*args):
    """Run the installed entry point in a real process: (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "wmhkit", *map(str, args)], capture_output=True, text=True, cwd=REPO
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "evaluate" in text and "examples:" in text


def test_pair_prints_the_columns_and_json(tmp_path, capsys):
    ref, pred = lesion_pair(0)
    r = write_nifti(tmp_path / "ref.nii.gz", ref, AFFINE)
    p = write_nifti(tmp_path / "pred.nii.gz", pred, AFFINE)
    assert main(["evaluate", str(r), str(p)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["case", *METRICS, "ref_ml", "pred_ml", "ref_lesions", "pred_lesions"]
    assert main(["evaluate", str(r), str(p), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["recall"] == 1.0 and result["ref_lesions"] >= 1
    assert result["dsc"] == pytest.approx(2 * ref.sum() / (ref.sum() + pred.sum()))


def test_dataset_writes_csv_and_summary(tmp_path, capsys):
    refs, preds = make_dataset(tmp_path, n=4)
    out = tmp_path / "eval"
    assert main(["evaluate", "--ref-dir", str(refs), "--pred-dir", str(preds), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "median" in printed
    with open(out / "cases.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["case"] for row in rows] == ["site0/0", "site0/2", "site1/1", "site1/3"]
    assert list(rows[0]) == ["case", *METRICS, "ref_ml", "pred_ml", "ref_lesions", "pred_lesions"]
    summary = json.loads((out / "summary.json").read_text())
    dsc = [float(row["dsc"]) for row in rows]
    assert summary["metrics"]["dsc"]["mean"] == pytest.approx(np.mean(dsc))
    assert summary["metrics"]["dsc"]["std"] == pytest.approx(np.std(dsc, ddof=1))
    assert summary["metrics"]["h95"]["nan"] == 0
    # A second run refuses to overwrite.
    assert main(["evaluate", "--ref-dir", str(refs), "--pred-dir", str(preds), "-o", str(out)]) == 2


def test_dataset_groups(tmp_path, capsys):
    refs, preds = make_dataset(tmp_path, n=4)
    groups = tmp_path / "groups.csv"
    groups.write_text("case,group\nsite0/0,A\nsite1/1,B\nsite0/2,A\nsite1/3,B\n")
    out = tmp_path / "eval"
    args = ["evaluate", "--ref-dir", refs, "--pred-dir", preds, "--groups", groups, "-o", out]
    assert main(list(map(str, args))) == 0
    assert "per-group means" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "cases.csv") as fh:
        rows = list(csv.DictReader(fh))
    a = [float(r["dsc"]) for r in rows if r["group"] == "A"]
    assert summary["groups"]["A"]["metrics"]["dsc"]["mean"] == pytest.approx(np.mean(a))
    assert summary["groups"]["A"]["cases"] == 2


def test_missing_prediction_is_reported(tmp_path, capsys):
    refs, preds = make_dataset(tmp_path, n=3)
    (preds / "site0" / "2.nii.gz").unlink()
    assert main(["evaluate", "--ref-dir", str(refs), "--pred-dir", str(preds)]) == 2
    assert "site0/2" in capsys.readouterr().err
    args = ["evaluate", "--ref-dir", str(refs), "--pred-dir", str(preds), "--skip-missing", "--json"]
    assert main(args) == 0
    assert len(json.loads(capsys.readouterr().out)["cases"]) == 2


def test_compare_ranks_methods(tmp_path, capsys):
    refs, good = make_dataset(tmp_path, n=3)
    bad = tmp_path / "bad"
    for case_ref in refs.rglob("wmh.nii.gz"):
        case = case_ref.parent.relative_to(refs)
        (bad / case).mkdir(parents=True)
        ref = np.asarray(nib.load(case_ref).dataobj)
        labels, n = ndimage.label(ref, structure=np.ones((3, 3, 3)))
        worse = ndimage.binary_dilation(labels == 1, iterations=2)  # misses lesions, oversized
        worse[0:2, 0:2, :] = True  # a far false positive
        write_nifti(bad / case / "result.nii.gz", worse.astype(np.uint8), AFFINE)
    out = tmp_path / "cmp"
    args = ["evaluate", "--ref-dir", refs, "--compare", f"good={good}", f"bad={bad}", "-o", out]
    assert main(list(map(str, args))) == 0
    with open(out / "ranking.csv") as fh:
        ranking = list(csv.DictReader(fh))
    assert [r["method"] for r in ranking] == ["good", "bad"]
    assert float(ranking[0]["score"]) == 0.0 and float(ranking[1]["score"]) == 1.0
    assert (out / "good" / "cases.csv").exists() and (out / "bad" / "summary.json").exists()


def test_rank_methods_by_hand():
    means = {
        "a": dict(dsc=0.8, h95=2.0, avd=10.0, recall=0.9, f1=0.8),
        "b": dict(dsc=0.6, h95=6.0, avd=30.0, recall=0.5, f1=0.6),
        "c": dict(dsc=0.7, h95=3.0, avd=30.0, recall=0.5, f1=float("nan")),
    }
    rows = {row["method"]: row for row in rank_methods(means)}
    assert rows["c"]["dsc_rank"] == pytest.approx(0.5)
    assert rows["c"]["h95_rank"] == pytest.approx(0.25)
    assert rows["c"]["avd_rank"] == 1.0 and rows["c"]["f1_rank"] == 1.0
    assert rows["c"]["score"] == pytest.approx((0.5 + 0.25 + 1 + 1 + 1) / 5)
    assert rows["a"]["score"] == 0.0 and rows["a"]["rank"] == 1
    assert rows["b"]["rank"] == 3


def test_read_groups_rejects_malformed_rows(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("case,group\nonly-one-column\n")
    with pytest.raises(Exception, match="line 2"):
        read_groups(path)


def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    ref, pred = lesion_pair(0)
    r = write_nifti(tmp_path / "ref.nii.gz", ref, AFFINE)
    small = write_nifti(tmp_path / "small.nii.gz", pred[:10], AFFINE)
    code, out, err = run_cli("evaluate", r, small)
    assert code == 2
    assert err.strip().count("\n") == 0 and "small.nii.gz" in err and "shape" in err
    assert "Traceback" not in err
    code, _, err = run_cli("evaluate", r, tmp_path / "missing.nii.gz")
    assert code == 2 and "missing.nii.gz: file not found" in err
    bad_ref = np.zeros((20, 20, 6), np.uint8)
    bad_ref[0, 0, 0] = 5
    b = write_nifti(tmp_path / "badref.nii.gz", bad_ref, AFFINE)
    code, _, err = run_cli("evaluate", b, r)
    assert code == 2 and "badref.nii.gz" in err and "outside" in err


def test_affine_mismatch_warns_but_scores(tmp_path):
    ref, pred = lesion_pair(1)
    r = write_nifti(tmp_path / "ref.nii.gz", ref, AFFINE)
    p = write_nifti(tmp_path / "pred.nii.gz", pred, np.diag([1.0, 1.0, 1.0, 1.0]))
    code, out, err = run_cli("evaluate", r, p, "--json")
    assert code == 0 and "warning" in err and "affine" in err
    # Scored on the reference geometry: volumes use the reference's 0.9 x 0.9 x 3 mm voxels.
    assert json.loads(out)["ref_ml"] == pytest.approx(ref.sum() * 0.9 * 0.9 * 3 / 1000)


def test_empty_prediction_reports_nan(tmp_path, capsys):
    ref, _ = lesion_pair(2)
    r = write_nifti(tmp_path / "ref.nii.gz", ref, AFFINE)
    p = write_nifti(tmp_path / "pred.nii.gz", np.zeros_like(ref), AFFINE)
    assert main(["evaluate", str(r), str(p), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["h95"] is None and result["dsc"] == 0.0 and result["avd"] == 100.0
    assert main(["evaluate", str(r), str(p)]) == 0
    assert "nan" in capsys.readouterr().out

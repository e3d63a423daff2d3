"""Data-set loaders: layouts built in tmp folders, and the real open_ms data beside the checkout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wmhkit import datasets
from wmhkit.errors import InputError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OPEN_MS = SHARED_DATA / "open_ms"
needs_open_ms = pytest.mark.skipif(
    not OPEN_MS.is_dir(), reason=f"real data not present at {OPEN_MS} (shared/ beside the checkout)"
)


def touch(path: Path, text: str = "") -> Path:
    # Loaders only list paths, so empty placeholder files are enough.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ challenge


def test_challenge_flat_and_nested_sites(tmp_path):
    touch(tmp_path / "Utrecht" / "0" / "pre" / "FLAIR.nii.gz")
    touch(tmp_path / "Utrecht" / "0" / "pre" / "T1.nii.gz")
    touch(tmp_path / "Utrecht" / "0" / "wmh.nii.gz")
    touch(tmp_path / "Utrecht" / "10" / "pre" / "FLAIR.nii")
    touch(tmp_path / "Utrecht" / "2" / "pre" / "FLAIR.nii.gz")
    touch(tmp_path / "Singapore" / "50" / "pre" / "FLAIR.nii.gz")
    touch(tmp_path / "Singapore" / "50" / "brainmask.nii.gz")
    touch(tmp_path / "Singapore" / "50" / "meta.json", json.dumps({"seed": 7, "layout": "x"}))
    cases = datasets.challenge_layout(tmp_path)
    assert [c.case_id for c in cases] == ["Singapore_50", "Utrecht_0", "Utrecht_2", "Utrecht_10"]
    by_id = {c.case_id: c for c in cases}
    u0 = by_id["Utrecht_0"]
    assert u0.t1 == tmp_path / "Utrecht/0/pre/T1.nii.gz"
    assert u0.wmh == tmp_path / "Utrecht/0/wmh.nii.gz"
    assert u0.brainmask is None
    assert u0.meta["relpath"] == "Utrecht/0"
    assert by_id["Utrecht_10"].flair.name == "FLAIR.nii"
    assert by_id["Utrecht_10"].t1 is None and by_id["Utrecht_10"].wmh is None
    s50 = by_id["Singapore_50"]
    assert s50.brainmask == tmp_path / "Singapore/50/brainmask.nii.gz"
    assert s50.meta["seed"] == 7
    assert datasets.detect_layout(tmp_path) == "challenge"
    assert [c.case_id for c in datasets.discover(tmp_path)] == [c.case_id for c in cases]


def test_challenge_root_is_a_single_case(tmp_path):
    touch(tmp_path / "pre" / "FLAIR.nii.gz")
    (case,) = datasets.challenge_layout(tmp_path)
    assert case.flair == tmp_path / "pre" / "FLAIR.nii.gz"


def test_challenge_bad_meta_json_is_an_input_error(tmp_path):
    touch(tmp_path / "a" / "pre" / "FLAIR.nii.gz")
    touch(tmp_path / "a" / "meta.json", "{not json")
    with pytest.raises(InputError, match="meta.json"):
        datasets.challenge_layout(tmp_path)


# ---------------------------------------------------------------------------------------------- BIDS


def make_bids(root: Path) -> None:
    touch(root / "dataset_description.json", "{}")
    touch(root / "participants.tsv", "participant_id\tage\tsex\nsub-01\t63\tF\nsub-02\t70\tM\n")
    touch(root / "sub-01" / "anat" / "sub-01_FLAIR.nii.gz")
    touch(root / "sub-01" / "anat" / "sub-01_FLAIR.json", json.dumps({"EchoTime": 0.12}))
    touch(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    for ses in ("1", "2"):
        touch(root / "sub-02" / f"ses-{ses}" / "anat" / f"sub-02_ses-{ses}_FLAIR.nii.gz")
    touch(root / "sub-02" / "ses-2" / "anat" / "sub-02_ses-2_acq-mprage_T1w.nii.gz")
    d = root / "derivatives" / "manual"
    touch(d / "sub-01" / "anat" / "sub-01_space-orig_desc-wmh_mask.nii.gz")
    touch(d / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz")
    touch(d / "sub-02" / "ses-2" / "anat" / "sub-02_ses-2_label-WMH_dseg.nii.gz")
    # A label of another session must not be matched to ses-1.
    touch(d / "sub-02" / "ses-3" / "anat" / "sub-02_ses-3_desc-wmh_mask.nii.gz")


def test_bids_pairs_t1_labels_and_participants(tmp_path):
    make_bids(tmp_path)
    cases = datasets.bids(tmp_path)
    by_id = {c.case_id: c for c in cases}
    assert sorted(by_id) == ["sub-01", "sub-02_ses-1", "sub-02_ses-2"]
    s1 = by_id["sub-01"]
    assert s1.t1.name == "sub-01_T1w.nii.gz"
    assert s1.wmh.name == "sub-01_space-orig_desc-wmh_mask.nii.gz"
    assert s1.brainmask.name == "sub-01_desc-brain_mask.nii.gz"
    assert s1.meta["age"] == 63 and s1.meta["sex"] == "F"
    assert s1.meta["sidecar"] == {"EchoTime": 0.12}
    s21, s22 = by_id["sub-02_ses-1"], by_id["sub-02_ses-2"]
    assert s21.t1 is None and s21.wmh is None
    assert s22.t1.name == "sub-02_ses-2_acq-mprage_T1w.nii.gz"  # the only T1w of the session
    assert s22.wmh.name == "sub-02_ses-2_label-WMH_dseg.nii.gz"
    assert s22.meta["ses"] == "2"
    assert datasets.detect_layout(tmp_path) == "bids"
    assert len(datasets.discover(tmp_path)) == 3


# ------------------------------------------------------------------------------------ open_ms (built)


def test_open_ms_layouts_built(tmp_path):
    root = tmp_path / "open_ms"
    touch(root / "patient_info.csv", "patient_id,age,sex,ms_type,edss,criteria\n7,53,F,RR,0.5,x\n3,37,F,N/A,N/A,N/A\n")
    for name in ("FLAIR", "T1", "lesions"):
        touch(root / "labeled_mni" / "patient07" / f"{name}.nii.gz")
    touch(root / "labeled_mni" / "notes" / "readme.txt")
    clin = root / "unlabeled_clinical"
    touch(clin / "patient03_study1_FLAIR.nii.gz")
    touch(clin / "patient03_study2_FLAIR.nii.gz")
    touch(clin / "patient03_study2_T1W.nii.gz")
    touch(root / "lesion_masks" / "patient07_consensus_1mm.nii.gz")
    touch(root / "lesion_masks" / "patient07_brainmask_1mm.nii.gz")

    (lab,) = datasets.open_ms_labeled(root)
    assert lab.case_id == "patient07" and lab.wmh.name == "lesions.nii.gz" and lab.t1.name == "T1.nii.gz"
    assert lab.meta["age"] == 53 and lab.meta["edss"] == 0.5
    clinical = datasets.open_ms_unlabeled(root)
    assert [(c.case_id, c.t1 is not None) for c in clinical] == [
        ("patient03_study1", False), ("patient03_study2", True)
    ]
    assert clinical[0].meta["edss"] is None and clinical[0].meta["study"] == 1
    (mask,) = datasets.open_ms_lesion_masks(root)
    assert mask.brainmask.name == "patient07_brainmask_1mm.nii.gz"
    assert datasets.detect_layout(root) == "open_ms"
    assert [c.case_id for c in datasets.discover(root)] == ["patient07", "patient03_study1", "patient03_study2"]
    assert datasets.detect_layout(root / "unlabeled_clinical") == "open_ms_unlabeled"


# ----------------------------------------------------------------------------------------------- errors


def test_empty_folder_is_a_clear_input_error(tmp_path):
    touch(tmp_path / "notes.txt")
    touch(tmp_path / "scan.nii.gz")
    with pytest.raises(InputError, match="no recognisable cases"):
        datasets.discover(tmp_path)
    for loader in (datasets.challenge_layout, datasets.bids, datasets.open_ms_labeled,
                   datasets.open_ms_unlabeled, datasets.open_ms_lesion_masks):
        with pytest.raises(InputError) as info:
            loader(tmp_path)
        assert str(tmp_path) in str(info.value)


def test_missing_root_and_file_root(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        datasets.discover(tmp_path / "nope")
    with pytest.raises(InputError, match="is a file"):
        datasets.discover(touch(tmp_path / "x.nii.gz"))


# ------------------------------------------------------------------------------------------- real data


@needs_open_ms
def test_real_open_ms():
    labeled = datasets.open_ms_labeled(OPEN_MS)
    assert [c.case_id for c in labeled] == ["patient07", "patient19", "patient26"]
    assert all(c.flair.is_file() and c.t1.is_file() and c.wmh.is_file() for c in labeled)
    clinical = datasets.open_ms_unlabeled(OPEN_MS / "unlabeled_clinical")
    assert len(clinical) == 11
    assert sum(c.t1 is not None for c in clinical) == 8
    assert all(c.flair.is_file() for c in clinical)
    masks = datasets.open_ms_lesion_masks(OPEN_MS)
    assert len(masks) == 30 and all(m.brainmask is not None for m in masks)
    assert len(datasets.discover(OPEN_MS)) == 14


@needs_open_ms
def test_real_folder_without_cases():
    with pytest.raises(InputError, match="no recognisable cases"):
        datasets.discover(SHARED_DATA / "templates")

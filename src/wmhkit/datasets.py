"""Finding the cases of real (and synthetic) data sets on disk.

Every loader takes the data set's root folder and returns a list of :class:`Case` records holding
*paths*, not arrays: listing a data set is instant and nothing is read until a caller loads a volume with
:mod:`wmhkit.io`. Loaders never download anything and never assume where a data set lives; the caller
passes the root.

Layouts understood:

``open_ms_labeled``
    Lesjak et al. 2018 MS database, MNI-registered subset: ``[open_ms/]labeled_mni/patientNN/`` with
    ``FLAIR.nii.gz``, ``T1.nii.gz``, ``lesions.nii.gz``.
``open_ms_unlabeled``
    The same database's raw clinical scans: ``[open_ms/]unlabeled_clinical/patientNN_studyK_FLAIR.nii.gz``
    with ``..._T1W.nii.gz`` where it exists.
``challenge``
    MICCAI WMH challenge layout, also written by ``wmhkit synth``: ``<case>/pre/FLAIR.nii.gz``, optional
    ``pre/T1.nii.gz``, ``wmh.nii.gz``, ``brainmask.nii.gz``, ``meta.json``; cases may sit in site folders
    (``Utrecht/0/pre/FLAIR.nii.gz``).
``bids``
    ``sub-*/[ses-*/]anat/*_FLAIR.nii.gz`` with a matching ``*_T1w.nii.gz``; WMH labels and brain masks
    from ``derivatives/*/sub-*/...`` (``*_desc-wmh_mask``, ``*_label-WMH_*``, ``*_desc-brain_mask``).

:func:`discover` tells the layouts apart and raises :class:`wmhkit.errors.InputError` when a folder holds
no recognisable case.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from wmhkit.errors import InputError
from wmhkit.io import NIFTI_SUFFIXES, nifti_stem

LAYOUTS = ("open_ms", "open_ms_labeled", "open_ms_unlabeled", "challenge", "bids")

_PATIENT_DIR = re.compile(r"^patient(\d+)$")
_CLINICAL_FLAIR = re.compile(r"^(patient(\d+)_study(\d+))_FLAIR$")
_OPEN_MS_MASK = re.compile(r"^(patient(\d+))_consensus_1mm$")
# Deepest site/case nesting searched for challenge cases: <root>/<site>/<case>/pre/FLAIR.nii.gz.
_CHALLENGE_MAX_DEPTH = 4


@dataclass
class Case:
    """One subject/session of a data set: where its images are, not the images.

    Attributes
    ----------
    case_id : unique within the data set and safe as a file-name stem (no path separators)
    flair : the FLAIR image
    t1 : the T1-weighted image on any grid, or None
    wmh : WMH/lesion label map on the FLAIR grid, or None when unlabeled
    brainmask : brain mask on the FLAIR grid, or None
    meta : layout name, subject information and anything the data set's own metadata holds
    """

    case_id: str
    flair: Path
    t1: Path | None = None
    wmh: Path | None = None
    brainmask: Path | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class LesionMask:
    """A lesion mask with its brain mask but no image (the 30 open_ms ``lesion_masks``).

    Both files are 1 mm label maps on the patient's FLAIR grid.
    """

    case_id: str
    lesions: Path
    brainmask: Path | None
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- open_ms


def open_ms_labeled(root: str | os.PathLike) -> list[Case]:
    """The MNI-registered labeled open_ms cases.

    ``root`` is the ``open_ms`` folder or its ``labeled_mni`` subfolder. The images are skull-stripped,
    so there is no separate brain mask (their nonzero voxels are the brain).
    """
    base = _subfolder(root, "labeled_mni")
    info = _open_ms_patient_info(base)
    cases = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and _PATIENT_DIR.match(p.name)):
        flair = _nifti(folder, "FLAIR")
        if flair is None:
            continue
        number = int(_PATIENT_DIR.match(folder.name).group(1))
        meta = {"layout": "open_ms_labeled", "dataset": "open_ms", "space": "MNI152 1 mm",
                "patient": number, "skull_stripped": True, **info.get(number, {})}
        cases.append(Case(folder.name, flair, _nifti(folder, "T1"), _nifti(folder, "lesions"), None, meta))
    if not cases:
        raise InputError(base, "no open_ms labeled cases (expected patientNN/FLAIR.nii.gz)")
    return cases


def open_ms_unlabeled(root: str | os.PathLike) -> list[Case]:
    """The raw clinical open_ms scans: each ``patientNN_studyK_FLAIR`` paired with its ``_T1W`` if any.

    ``root`` is the ``open_ms`` folder or its ``unlabeled_clinical`` subfolder.
    """
    base = _subfolder(root, "unlabeled_clinical")
    info = _open_ms_patient_info(base)
    files = _nifti_files(base)
    cases = []
    for stem in sorted(files):
        match = _CLINICAL_FLAIR.match(stem)
        if not match:
            continue
        case_id, number, study = match.group(1), int(match.group(2)), int(match.group(3))
        meta = {"layout": "open_ms_unlabeled", "dataset": "open_ms", "space": "native",
                "patient": number, "study": study, "skull_stripped": False, **info.get(number, {})}
        cases.append(Case(case_id, files[stem], files.get(f"{case_id}_T1W"), None, None, meta))
    if not cases:
        raise InputError(base, "no open_ms clinical scans (expected patientNN_studyK_FLAIR.nii.gz)")
    return cases


def open_ms_lesion_masks(root: str | os.PathLike) -> list[LesionMask]:
    """The 30 open_ms consensus lesion masks with their brain masks (no images).

    ``root`` is the ``open_ms`` folder or its ``lesion_masks`` subfolder.
    """
    base = _subfolder(root, "lesion_masks")
    info = _open_ms_patient_info(base)
    files = _nifti_files(base)
    masks = []
    for stem in sorted(files):
        match = _OPEN_MS_MASK.match(stem)
        if not match:
            continue
        case_id, number = match.group(1), int(match.group(2))
        meta = {"layout": "open_ms_lesion_masks", "dataset": "open_ms", "space": "FLAIR 1 mm",
                "patient": number, **info.get(number, {})}
        masks.append(LesionMask(case_id, files[stem], files.get(f"{case_id}_brainmask_1mm"), meta))
    if not masks:
        raise InputError(base, "no open_ms lesion masks (expected patientNN_consensus_1mm.nii.gz)")
    return masks


def _open_ms_patient_info(base: Path) -> dict[int, dict]:
    """patient number -> {age, sex, ms_type, edss} from patient_info.csv beside or above ``base``."""
    for folder in (base, base.parent):
        path = folder / "patient_info.csv"
        if path.is_file():
            break
    else:
        return {}
    info = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                number = int(row.get("patient_id", ""))
            except ValueError:
                continue
            info[number] = {key: _csv_value(row.get(key)) for key in ("age", "sex", "ms_type", "edss")}
    return info


def _csv_value(text: str | None):
    if text is None or text.strip() in ("", "N/A", "n/a", "NA"):
        return None
    try:
        number = float(text)
    except ValueError:
        return text.strip()
    return int(number) if number.is_integer() else number


# ----------------------------------------------------------------------------------------- challenge


def challenge_layout(root: str | os.PathLike) -> list[Case]:
    """Cases in the WMH-challenge layout (also what ``wmhkit synth`` writes).

    A case is any folder up to four levels below ``root`` holding ``pre/FLAIR.nii[.gz]``. Its id is its
    path relative to ``root`` with ``/`` replaced by ``_`` (``Utrecht/0`` -> ``Utrecht_0``); the
    original relative path is kept in ``meta["relpath"]``. A ``meta.json`` beside ``pre/`` is merged
    into ``meta``. Challenge label maps may hold 2 (other pathology) besides 1 (WMH): callers decide.
    """
    base = _existing_dir(root)
    cases = []
    for folder in _challenge_case_dirs(base):
        pre = folder / "pre"
        rel = folder.relative_to(base).as_posix()
        meta = {"layout": "challenge", "relpath": rel}
        meta_file = folder / "meta.json"
        if meta_file.is_file():
            meta.update(_read_json(meta_file))
        case_id = "root" if rel == "." else rel.replace("/", "_")
        cases.append(Case(case_id, _nifti(pre, "FLAIR"), _nifti(pre, "T1"), _nifti(folder, "wmh"),
                          _nifti(folder, "brainmask"), meta))
    if not cases:
        raise InputError(base, "no challenge-layout cases (expected <case>/pre/FLAIR.nii.gz)")
    return cases


def _challenge_case_dirs(base: Path) -> list[Path]:
    found = []
    # Breadth-first over folders so that a case folder is not searched for nested cases.
    level = [base]
    for _ in range(_CHALLENGE_MAX_DEPTH + 1):
        deeper = []
        for folder in level:
            if _nifti(folder / "pre", "FLAIR") is not None:
                found.append(folder)
            else:
                deeper.extend(sorted(p for p in _subdirs(folder) if not p.name.startswith(".")))
        level = deeper
    return sorted(found, key=lambda p: _natural_key(p.relative_to(base).as_posix()))


# ---------------------------------------------------------------------------------------------- BIDS


def bids(root: str | os.PathLike) -> list[Case]:
    """Cases of a BIDS data set: one per ``*_FLAIR.nii[.gz]`` under ``sub-*/[ses-*/]anat/``.

    The T1 is the ``*_T1w`` with the same name apart from the suffix, else the only ``*_T1w`` of that
    anat folder. Labels and brain masks come from ``derivatives/<pipeline>/sub-*/[ses-*/]anat/``:
    ``*_desc-wmh_mask`` or ``*_label-WMH_*`` (WMH), ``*_desc-brain_mask`` (brain), matched on the
    subject, session and any acq/run entity the FLAIR has. ``participants.tsv`` rows go into ``meta``.
    """
    base = _existing_dir(root)
    participants = _bids_participants(base)
    derivatives = _bids_derivative_files(base)
    cases = []
    for anat in _bids_anat_dirs(base):
        files = _nifti_files(anat)
        t1s = [files[s] for s in sorted(files) if s.endswith("_T1w")]
        for stem in sorted(s for s in files if s.endswith("_FLAIR")):
            entities = _bids_entities(stem)
            prefix = stem[: -len("_FLAIR")]
            t1 = files.get(f"{prefix}_T1w") or (t1s[0] if len(t1s) == 1 else None)
            meta = {"layout": "bids", **entities, **participants.get(entities.get("sub", ""), {})}
            sidecar = anat / f"{stem}.json"
            if sidecar.is_file():
                meta["sidecar"] = _read_json(sidecar)
            wmh = _bids_match(entities, derivatives, _is_wmh_label)
            brain = _bids_match(entities, derivatives, _is_brain_mask)
            cases.append(Case(prefix, files[stem], t1, wmh, brain, meta))
    if not cases:
        raise InputError(base, "no BIDS FLAIR images (expected sub-*/[ses-*/]anat/*_FLAIR.nii.gz)")
    return cases


def _bids_anat_dirs(base: Path) -> list[Path]:
    dirs = []
    for sub in sorted(base.glob("sub-*")):
        if not sub.is_dir():
            continue
        dirs.extend(p for p in [sub / "anat"] if p.is_dir())
        dirs.extend(p / "anat" for p in sorted(sub.glob("ses-*")) if (p / "anat").is_dir())
    return dirs


def _bids_entities(stem: str) -> dict[str, str]:
    """'sub-01_ses-2_acq-x_FLAIR' -> {'sub': '01', 'ses': '2', 'acq': 'x', 'suffix': 'FLAIR'}."""
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts if "-" in p)
    if "-" not in parts[-1]:
        entities["suffix"] = parts[-1]
    return entities


def _bids_derivative_files(base: Path) -> list[tuple[dict[str, str], Path]]:
    deriv = base / "derivatives"
    if not deriv.is_dir():
        return []
    found = []
    for path in sorted(deriv.rglob("sub-*")):
        if path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES):
            found.append((_bids_entities(nifti_stem(path)), path))
    return found


def _is_wmh_label(entities: dict[str, str]) -> bool:
    desc, label = entities.get("desc", "").lower(), entities.get("label", "").lower()
    return (desc == "wmh" and entities.get("suffix") in ("mask", "dseg")) or label == "wmh"


def _is_brain_mask(entities: dict[str, str]) -> bool:
    return entities.get("desc", "").lower() == "brain" and entities.get("suffix") == "mask"


def _bids_match(flair: dict[str, str], derivatives, wanted) -> Path | None:
    for entities, path in derivatives:
        if not wanted(entities) or entities.get("sub") != flair.get("sub"):
            continue
        if entities.get("ses") != flair.get("ses"):
            continue
        # acq/run/rec only have to agree where both files name them.
        if all(entities[k] == flair[k] for k in ("acq", "run", "rec") if k in entities and k in flair):
            return path
    return None


def _bids_participants(base: Path) -> dict[str, dict]:
    path = base / "participants.tsv"
    if not path.is_file():
        return {}
    rows = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            pid = (row.pop("participant_id", "") or "").removeprefix("sub-")
            if pid:
                rows[pid] = {k: _csv_value(v) for k, v in row.items() if k}
    return rows


# ------------------------------------------------------------------------------------------ discover


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the layout (one of :data:`LAYOUTS`) that ``root`` holds.

    Raises InputError when ``root`` is missing or holds no recognisable case.
    """
    base = _existing_dir(root)
    if (base / "labeled_mni").is_dir() and (base / "unlabeled_clinical").is_dir():
        return "open_ms"
    if any(_PATIENT_DIR.match(p.name) and _nifti(p, "FLAIR") for p in _subdirs(base)) or (
        (base / "labeled_mni").is_dir()
    ):
        return "open_ms_labeled"
    if any(_CLINICAL_FLAIR.match(s) for s in _nifti_files(base)) or (base / "unlabeled_clinical").is_dir():
        return "open_ms_unlabeled"
    if (base / "dataset_description.json").is_file() or any(base.glob("sub-*/anat")) or any(
        base.glob("sub-*/ses-*/anat")
    ):
        return "bids"
    if _challenge_case_dirs(base):
        return "challenge"
    raise InputError(
        base,
        "no recognisable cases: expected open_ms (labeled_mni/, unlabeled_clinical/), "
        "challenge layout (<case>/pre/FLAIR.nii.gz) or BIDS (sub-*/anat/*_FLAIR.nii.gz)",
    )


def discover(root: str | os.PathLike) -> list[Case]:
    """All cases under ``root``, whatever its layout (see :func:`detect_layout`).

    An ``open_ms`` folder (layout ``open_ms``) yields its labeled and its clinical cases together
    (``meta["layout"]`` tells them apart).
    """
    layout = detect_layout(root)
    base = Path(root)
    if layout.startswith("open_ms"):
        cases = []
        if layout == "open_ms_labeled" or (base / "labeled_mni").is_dir():
            cases += _try(open_ms_labeled, base)
        if (base / "unlabeled_clinical").is_dir() or layout == "open_ms_unlabeled":
            cases += _try(open_ms_unlabeled, base)
        if not cases:
            raise InputError(base, "open_ms folder holds no FLAIR images")
        return cases
    return {"bids": bids, "challenge": challenge_layout}[layout](base)


def _try(loader, base: Path) -> list:
    try:
        return loader(base)
    except InputError:
        return []


# ------------------------------------------------------------------------------------------- helpers


def _existing_dir(root: str | os.PathLike) -> Path:
    base = Path(root)
    if not base.exists():
        raise InputError(base, "folder not found")
    if not base.is_dir():
        raise InputError(base, "is a file, expected a data set folder")
    return base


def _subfolder(root: str | os.PathLike, name: str) -> Path:
    base = _existing_dir(root)
    return base / name if (base / name).is_dir() else base


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _nifti(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``, whichever exists."""
    for suffix in (".nii.gz", ".nii"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _nifti_files(folder: Path) -> dict[str, Path]:
    """stem -> path of the NIfTI files directly in ``folder`` (.nii.gz wins over .nii)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name.endswith(".gz")):
        if path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES):
            files[nifti_stem(path)] = path
    return files


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"unreadable JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(path, "JSON must hold an object")
    return value


def _natural_key(text: str) -> list:
    # Site/case folders are numbered: 2 before 10.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]

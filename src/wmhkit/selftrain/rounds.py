"""Annotation-free training on a folder of unlabeled FLAIRs (DeepWMH, Liu et al. 2024), in stages:

1. **prepare** (per scan, cached): brain mask (FCN-1 or the non-zero region of a stripped scan), N4 in
   the brain (as ``wmhkit segment`` does before its network), white matter, pseudo-labels
   (:mod:`wmhkit.selftrain.pseudo`). Written to ``RUN/pseudo/<stem>_desc-{pseudo,brain,wm}_mask.nii.gz``
   and the bias-corrected FLAIR to ``RUN/scans/<stem>/pre/FLAIR.nii.gz`` (challenge layout, so the
   training engine reads it as any labeled folder).
2. **round 1**: the training engine on those scans and labels with a noise-robust loss (soft
   bootstrapping, ``loss.name = "bootstrap"``), from scratch or from ``init`` (e.g. a shipped model).
3. **round k > 1**: the previous round's network relabels every scan: the previous labels' lesions
   that it supports (mean probability at least ``support``) are kept whole, and its confident new
   findings (probability at least ``confident``) are added, in white matter, lesions at least
   ``min_volume_ml``; training continues from the previous round's weights.

Every round is its own run folder (``RUN/round<k>``): an interrupted round resumes exactly, a finished
one is skipped. ``RUN/model.pt`` is the last round's model, so ``wmhkit segment --model RUN`` uses it.
"""

from __future__ import annotations

import copy
import fnmatch
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from wmhkit.errors import InputError
from wmhkit.io import (
    derivative_stem,
    is_nifti_path,
    load_image,
    load_labels,
    save_volume,
    write_json,
)
from wmhkit.metrics import label_lesions
from wmhkit.selftrain.pseudo import component_volumes_ml, label_scan

# The recipe of every round (a package file, so that an installed wheel has it too).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "selftrain_cpu.toml"
PSEUDO_SUFFIX = "desc-pseudo_mask.nii.gz"


@dataclass
class Scan:
    """One prepared scan: its source, the challenge-layout folder the engine reads, and the masks."""

    source: Path
    stem: str
    folder: Path  # RUN/scans/<stem>: pre/FLAIR.nii.gz (bias-corrected), brainmask.nii.gz
    pseudo: Path
    white_matter: Path


def find_flairs(inputs, exclude=()) -> list[Path]:
    """FLAIR files of folders (BIDS ``sub-*/anat/*_FLAIR.nii.gz``, open_ms, challenge layout, or a flat
    folder whose NIfTI names contain "flair") and files, minus names matching any ``exclude`` glob."""
    from wmhkit import datasets

    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            if not is_nifti_path(path):
                raise InputError(path, "not a NIfTI file (.nii or .nii.gz)")
            found.append(path)
            continue
        if not path.is_dir():
            raise InputError(path, "no such file or folder")
        try:
            found.extend(case.flair for case in datasets.discover(path) if case.flair is not None)
        except InputError:
            flat = sorted(p for p in path.iterdir() if is_nifti_path(p) and "flair" in p.name.lower())
            if not flat:
                raise InputError(path, "no FLAIR scans (BIDS, challenge layout or *FLAIR*.nii.gz)") from None
            found.extend(flat)
    kept = [p for p in dict.fromkeys(found) if not any(fnmatch.fnmatch(p.name, g) for g in exclude)]
    if not kept:
        raise InputError(None, "no FLAIR scans left to train on" + (" after --exclude" if exclude else ""))
    return kept


def prepare_scan(flair_path: Path, out: Path, *, device: str = "cpu") -> Scan:
    """Stage 1 for one FLAIR (skipped when its files exist). Returns the :class:`Scan`."""
    stem = derivative_stem(flair_path)
    folder = out / "scans" / stem
    pseudo_path = out / "pseudo" / f"{stem}_{PSEUDO_SUFFIX}"
    wm_path = out / "pseudo" / f"{stem}_desc-wm_mask.nii.gz"
    scan = Scan(flair_path, stem, folder, pseudo_path, wm_path)
    corrected_path = folder / "pre" / "FLAIR.nii.gz"
    if pseudo_path.is_file() and wm_path.is_file() and corrected_path.is_file():
        return scan
    volume = load_image(flair_path)
    try:
        corrected, brain, result = label_scan(volume.data, volume.affine, device=device)
    except ValueError as error:
        raise InputError(flair_path, str(error)) from None
    white = result.white_matter
    (folder / "pre").mkdir(parents=True, exist_ok=True)
    pseudo_path.parent.mkdir(parents=True, exist_ok=True)
    save_volume(folder / "brainmask.nii.gz", brain, volume, dtype=np.uint8, force=True)
    save_volume(out / "pseudo" / f"{stem}_desc-brain_mask.nii.gz", brain, volume, dtype=np.uint8, force=True)
    save_volume(wm_path, white, volume, dtype=np.uint8, force=True)
    save_volume(pseudo_path, result.mask, volume, dtype=np.uint8, force=True)
    # Written last: its presence marks the scan as prepared.
    save_volume(corrected_path, corrected, volume, dtype=np.float32, force=True)
    return scan


def round_cases(scans: list[Scan], labels: dict[str, Path], folder: Path) -> Path:
    """A challenge-layout folder for one round: each scan's bias-corrected FLAIR and brain mask
    (hard links or copies) with that round's label map as ``wmh.nii.gz``."""
    for scan in scans:
        case = folder / scan.stem
        (case / "pre").mkdir(parents=True, exist_ok=True)
        for source, target in ((scan.folder / "pre" / "FLAIR.nii.gz", case / "pre" / "FLAIR.nii.gz"),
                               (scan.folder / "brainmask.nii.gz", case / "brainmask.nii.gz"),
                               (labels[scan.stem], case / "wmh.nii.gz")):
            _link_or_copy(source, target)
    return folder


def relabel(model_path: Path, scans: list[Scan], labels_before: dict[str, Path], folder: Path, *,
            confident: float = 0.5, support: float = 0.25, min_volume_ml: float = 0.01,
            device: str = "cpu") -> dict[str, Path]:
    """The next round's labels per scan: the lesions of ``labels_before`` that ``model_path`` supports,
    plus its confident lesions, in white matter.

    Confident predictions alone are fewer and smaller lesions than the labels the network learnt from
    (a probability map is rarely >= 0.5 over a whole lesion), so a round trained on them learns to find
    less; keeping the lesions it supports only drops those it rejects.
    """
    from wmhkit.segment import load_model, wmh_probability

    model = load_model(model_path)
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for scan in scans:
        target = folder / f"{scan.stem}_{PSEUDO_SUFFIX}"
        if not target.is_file():
            flair = load_image(scan.folder / "pre" / "FLAIR.nii.gz")
            brain = load_labels(scan.folder / "brainmask.nii.gz").data > 0
            white = load_labels(scan.white_matter).data > 0
            probability = wmh_probability(model, flair.data, flair.affine, brain, device=device)
            kept = supported_lesions(load_labels(labels_before[scan.stem]).data > 0, probability, support)
            mask = _large_lesions(((probability >= confident) | kept) & white, flair.affine, min_volume_ml)
            save_volume(target, mask, flair, dtype=np.uint8)
        labels[scan.stem] = target
    return labels


def supported_lesions(mask: np.ndarray, probability: np.ndarray, support: float) -> np.ndarray:
    """The lesions (26-connected components) of ``mask`` whose mean ``probability`` is >= ``support``."""
    lesions, count = label_lesions(mask)
    if count == 0:
        return np.zeros(mask.shape, bool)
    keep = np.zeros(count + 1, bool)
    keep[1:] = np.asarray(ndi.mean(probability, lesions, index=np.arange(1, count + 1))) >= support
    return keep[lesions]


def selftrain(
    inputs,
    out: str | Path,
    *,
    init: str | Path | None = None,
    rounds: int = 2,
    steps: int | None = None,
    round_steps: int | None = None,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    test: list[str] | None = None,
    exclude=(),
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Stages 1-3 (module docstring) into the run folder ``out``; returns ``out/model.pt``.

    steps : training steps of round 1 (default: the config's); round_steps : of each later round
    (default: a third of that). test : labeled folders scored at the end of every round (reported in
    each round's metrics.csv, never used to choose anything).
    """
    from tqdm import tqdm

    from wmhkit.train.config import load_config
    from wmhkit.train.engine import train

    if rounds < 1:
        raise InputError(None, f"--rounds must be at least 1, got {rounds}")
    out = Path(out)
    flairs = find_flairs(inputs, exclude)
    config = load_config(config_path or DEFAULT_CONFIG, overrides)  # before the slow stage: a bad --set fails now
    out.mkdir(parents=True, exist_ok=True)
    scans = [prepare_scan(p, out, device=device)
             for p in tqdm(flairs, desc="pseudo-labels", unit="scan", disable=not progress)]
    _write_summary(out, scans)
    first_steps = int(steps or config["optim"]["steps"])
    later_steps = int(round_steps or max(1, first_steps // 3))
    labels = {s.stem: s.pseudo for s in scans}
    previous = Path(init) if init else None
    for k in range(1, rounds + 1):
        run = out / f"round{k}"
        if k > 1:
            labels = relabel(previous, scans, labels, out / f"labels_round{k}", device=device)
        data = round_cases(scans, labels, out / f"cases_round{k}")
        round_config = copy.deepcopy(config)
        round_config["data"]["real"] = [str(data)]
        round_config["data"]["test"] = list(test or [])
        round_config["optim"]["steps"] = first_steps if (k == 1 and init is None) else later_steps
        round_config["run"]["validate_every"] = round_config["optim"]["steps"]
        round_config["run"]["device"] = device
        if not (run / "model.pt").is_file():
            resume = (run / "last.pt").is_file()
            train(round_config, run, resume=resume, init=None if resume else previous, progress=progress)
        previous = run / "model.pt"
    shutil.copyfile(previous, out / "model.pt.tmp")
    (out / "model.pt.tmp").replace(out / "model.pt")
    return out / "model.pt"


def _write_summary(out: Path, scans: list[Scan]) -> None:
    from wmhkit.segment import lesion_stats

    rows = []
    for scan in scans:
        volume = load_labels(scan.pseudo)
        stats = lesion_stats(volume.data > 0, load_labels(scan.folder / "brainmask.nii.gz").data > 0, volume.affine)
        rows.append({"scan": str(scan.source), "pseudo_ml": round(stats["wmh_volume_ml"], 3),
                     "pseudo_lesions": stats["lesion_count"]})
    write_json(out / "pseudo" / "summary.json", rows, force=True)


def _large_lesions(mask: np.ndarray, affine: np.ndarray, min_volume_ml: float) -> np.ndarray:
    labels, count = label_lesions(mask)
    if count == 0:
        return np.zeros(mask.shape, np.uint8)
    keep = component_volumes_ml(labels, count, affine) >= min_volume_ml
    keep[0] = False
    return keep[labels].astype(np.uint8)


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


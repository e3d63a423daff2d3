"""Evaluation of segmentation files and datasets with the challenge metrics.

Stages joined by plain data: files -> :class:`~wmhkit.metrics.CaseScores` -> rows (dicts) -> summary
(dict, JSON-ready) -> ranking (list of dicts). :mod:`wmhkit.commands.evaluate` is the CLI over these.

Dataset layout (the challenge's): ``REF_DIR/<case>/wmh.nii.gz``, where ``<case>`` may be nested
(``Utrecht/0``). A method's predictions: ``PRED_DIR/<case>.nii.gz`` or ``PRED_DIR/<case>/result.nii.gz``.
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from wmhkit.errors import InputError
from wmhkit.io import load_labels, load_volume
from wmhkit.metrics import HIGHER_IS_BETTER, METRICS, CaseScores, score

REFERENCE_NAMES = ("wmh.nii.gz", "wmh.nii")
PREDICTION_PATTERNS = ("{case}.nii.gz", "{case}.nii", "{case}/result.nii.gz", "{case}/result.nii")
CASE_COLUMNS = ("case",) + tuple(CaseScores.__dataclass_fields__)
SUMMARY_FIELDS = METRICS + ("ref_ml", "pred_ml", "ref_lesions", "pred_lesions")
# Affines that differ by less than this (mm) are the same grid written with float rounding.
AFFINE_TOLERANCE_MM = 1e-3


def evaluate_files(ref_path: str | os.PathLike, pred_path: str | os.PathLike) -> CaseScores:
    """Score one prediction file against one reference file.

    The reference must hold labels {0, 1, 2}; the prediction must have the reference's shape and is
    scored on the reference's geometry (a differing affine only warns, as the official evaluation
    copies the reference geometry onto the prediction).
    """
    ref = load_labels(ref_path, labels=(0, 1, 2))
    pred = load_volume(pred_path, allow_constant=True)
    if pred.shape != ref.shape:
        raise InputError(
            pred_path, f"shape {pred.shape} differs from the reference's {ref.shape} ({ref_path})"
        )
    if not np.allclose(pred.affine, ref.affine, atol=AFFINE_TOLERANCE_MM):
        warnings.warn(
            f"{pred_path}: affine differs from the reference's; scoring on the reference geometry"
        )
    return score(ref.data, pred.data, ref.affine)


def find_reference_cases(ref_dir: str | os.PathLike) -> dict[str, Path]:
    """Case id -> reference file for every ``wmh.nii[.gz]`` below ``ref_dir`` (sorted by case id)."""
    ref_dir = Path(ref_dir)
    if not ref_dir.is_dir():
        raise InputError(ref_dir, "reference folder not found")
    cases: dict[str, Path] = {}
    for name in REFERENCE_NAMES:
        for path in ref_dir.rglob(name):
            case = path.parent.relative_to(ref_dir).as_posix()
            if case == ".":
                continue
            cases.setdefault(case, path)
    if not cases:
        raise InputError(ref_dir, "no <case>/wmh.nii.gz reference files found")
    return dict(sorted(cases.items(), key=lambda item: _natural_key(item[0])))


def find_prediction(pred_dir: str | os.PathLike, case: str) -> Path | None:
    """The prediction file of ``case`` in a method's folder, or None."""
    for pattern in PREDICTION_PATTERNS:
        path = Path(pred_dir) / pattern.format(case=case)
        if path.is_file():
            return path
    return None


def match_predictions(
    references: Mapping[str, Path], pred_dir: str | os.PathLike, *, skip_missing: bool = False
) -> list[tuple[str, Path, Path]]:
    """(case, reference, prediction) triples; missing predictions are an error unless skipped."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "prediction folder not found")
    pairs, missing = [], []
    for case, ref_path in references.items():
        pred_path = find_prediction(pred_dir, case)
        if pred_path is None:
            missing.append(case)
        else:
            pairs.append((case, ref_path, pred_path))
    if missing and not skip_missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(pred_dir, f"no prediction for case(s) {shown} (--skip-missing to ignore)")
    if missing:
        warnings.warn(f"{pred_dir}: skipped {len(missing)} case(s) without prediction")
    if not pairs:
        raise InputError(pred_dir, "no prediction matches any reference case")
    return pairs


def evaluate_dataset(
    ref_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    *,
    groups: Mapping[str, str] | None = None,
    skip_missing: bool = False,
    jobs: int = 1,
    progress: bool = True,
    label: str = "evaluate",
) -> list[dict]:
    """Score every case of a dataset: one row dict per case (columns :data:`CASE_COLUMNS` [+ group])."""
    pairs = match_predictions(find_reference_cases(ref_dir), pred_dir, skip_missing=skip_missing)
    if groups is not None:
        unknown = [case for case, _, _ in pairs if case not in groups]
        if unknown:
            raise InputError(None, f"--groups has no group for case(s) {', '.join(unknown[:5])}")
    refs = [ref for _, ref, _ in pairs]
    preds = [pred for _, _, pred in pairs]
    bar = dict(total=len(pairs), desc=label, unit="case", disable=not progress or None, leave=False)
    if jobs > 1 and len(pairs) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            scores = list(tqdm(pool.map(evaluate_files, refs, preds), **bar))
    else:
        scores = [evaluate_files(r, p) for r, p in tqdm(zip(refs, preds), **bar)]
    rows = []
    for (case, _, _), case_scores in zip(pairs, scores):
        row = {"case": case, **case_scores.as_dict()}
        if groups is not None:
            row["group"] = groups[case]
        rows.append(row)
    return rows


def read_groups(path: str | os.PathLike) -> dict[str, str]:
    """Case -> group from a two-column CSV (``case,group``; a header row naming them is optional)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "groups file not found")
    groups: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for number, row in enumerate(csv.reader(fh), start=1):
            row = [cell.strip() for cell in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise InputError(path, f"line {number}: expected 'case,group'")
            if number == 1 and row[0].lower() == "case":
                continue
            groups[row[0]] = row[1]
    if not groups:
        raise InputError(path, "no 'case,group' rows")
    return groups


def summarise(rows: Sequence[Mapping], *, by_group: bool = False) -> dict:
    """Mean, std (ddof=1), median, count and NaN count of every metric over rows.

    NaN values (the undefined cases, see :mod:`wmhkit.metrics`) are left out of the statistics and
    counted in ``nan``. With ``by_group`` the same statistics per ``group`` value are added.
    """
    summary = {"cases": len(rows), "metrics": _column_stats(rows)}
    if by_group:
        names = sorted({row["group"] for row in rows}, key=_natural_key)
        summary["groups"] = {
            name: {
                "cases": sum(row["group"] == name for row in rows),
                "metrics": _column_stats([row for row in rows if row["group"] == name]),
            }
            for name in names
        }
    return summary


def _column_stats(rows: Sequence[Mapping]) -> dict:
    stats = {}
    for field in SUMMARY_FIELDS:
        values = np.array([float(row[field]) for row in rows], dtype=float)
        finite = values[~np.isnan(values)]
        stats[field] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
            "median": float(np.median(finite)) if finite.size else math.nan,
            "n": int(finite.size),
            "nan": int(values.size - finite.size),
        }
    return stats


def rank_methods(mean_scores: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """The challenge's ranking of several methods from their per-metric means over cases.

    For each metric the best method scores 0 and the worst 1; the others are placed linearly between
    them by their value (a metric on which all methods tie gives 0 to all; a NaN mean is worst, 1).
    The final score is the average over the five metrics; rows are returned best first, with the
    1-based ``rank``.
    """
    names = list(mean_scores)
    scaled = {name: {} for name in names}
    for metric in METRICS:
        values = np.array([mean_scores[name][metric] for name in names], dtype=float)
        finite = values[~np.isnan(values)]
        if finite.size:
            best = finite.max() if HIGHER_IS_BETTER[metric] else finite.min()
            worst = finite.min() if HIGHER_IS_BETTER[metric] else finite.max()
        for name, value in zip(names, values):
            if math.isnan(value):
                scaled[name][metric] = 1.0
            elif worst == best:
                scaled[name][metric] = 0.0
            else:
                scaled[name][metric] = float((value - best) / (worst - best))
    rows = []
    for name in names:
        row = {"method": name}
        for metric in METRICS:
            row[metric] = float(mean_scores[name][metric])
            row[f"{metric}_rank"] = scaled[name][metric]
        row["score"] = float(np.mean([scaled[name][m] for m in METRICS]))
        rows.append(row)
    rows.sort(key=lambda row: row["score"])
    for position, row in enumerate(rows, start=1):
        row["rank"] = position
    return rows


def means_of(summary: Mapping) -> dict[str, float]:
    """Metric -> mean over cases, from a :func:`summarise` result."""
    return {metric: summary["metrics"][metric]["mean"] for metric in METRICS}


# ------------------------------------------------------------------------------------ text renderings


def rows_to_csv(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """CSV text with the given columns; floats at full precision, NaN written as 'nan'."""
    buffer = _io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row[column]) for column in columns])
    return buffer.getvalue()


def _csv_cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def format_table(rows: Sequence[Mapping], columns: Sequence[str], digits: int = 3) -> str:
    """A fixed-width text table for the terminal."""
    cells = [[_table_cell(row[column], digits) for column in columns] for row in rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.rjust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _table_cell(value, digits: int) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def summary_rows(summary: Mapping, label: str = "") -> list[dict]:
    """mean / std / median rows of a summary, shaped like case rows (for printing under the table)."""
    rows = []
    for stat in ("mean", "std", "median"):
        row = {"case": f"{label}{stat}"}
        for field in SUMMARY_FIELDS:
            row[field] = summary["metrics"][field][stat]
        rows.append(row)
    return rows


def _natural_key(text: str) -> list:
    """Sort 'case2' before 'case10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


"""`wmhkit evaluate`: score segmentations with the WMH challenge's metrics."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from wmhkit.errors import InputError
from wmhkit.evaluation import (
    CASE_COLUMNS,
    evaluate_dataset,
    evaluate_files,
    format_table,
    means_of,
    rank_methods,
    read_groups,
    rows_to_csv,
    summarise,
    summary_rows,
)
from wmhkit.io import check_can_write, json_ready, write_json, write_text
from wmhkit.metrics import METRICS

HELP = "score segmentations with the MICCAI 2017 WMH challenge metrics"
EPILOG = """\
metrics (the official evaluation's semantics):
  dsc     Dice similarity coefficient
  h95     95th-percentile Hausdorff distance of lesion boundaries, mm
  avd     absolute volume difference, % of the reference volume
  recall  share of reference lesions (26-connected) that the prediction touches
  f1      lesion-wise F1 of recall and the share of predicted lesions that touch the reference
Reference label 1 is WMH; label 2 ("other pathology") is removed from the prediction before
scoring. Predictions: integer images count 1..1000 as lesion, float images 0.5..1000.
Undefined values (empty masks) are reported as nan and left out of means.

examples:
  wmhkit evaluate sub-01_wmh.nii.gz sub-01_desc-wmh_mask.nii.gz
  wmhkit evaluate --ref-dir training/ --pred-dir results/ -o eval/
  wmhkit evaluate --ref-dir training/ --pred-dir results/ --groups scanners.csv
  wmhkit evaluate --ref-dir training/ --compare unet=runs/unet/pred fcn=runs/fcn/pred -o cmp/

dataset layout: REF_DIR/<case>/wmh.nii.gz (case may be nested, e.g. Utrecht/0);
predictions PRED_DIR/<case>.nii.gz or PRED_DIR/<case>/result.nii.gz.
"""
# Shown under `wmhkit --help`.
EXAMPLES = [
    "wmhkit evaluate ref_wmh.nii.gz pred_mask.nii.gz        # score one segmentation",
    "wmhkit evaluate --ref-dir refs/ --pred-dir preds/ -o eval/   # a dataset, CSV + JSON",
]
TABLE_COLUMNS = CASE_COLUMNS
RANK_COLUMNS = ("rank", "method") + METRICS + ("score",)
METHOD_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help=HELP,
        description=HELP + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ref", nargs="?", help="reference label map (one pair)")
    parser.add_argument("pred", nargs="?", help="prediction on the reference's grid (one pair)")
    parser.add_argument("--ref-dir", help="reference dataset in the challenge layout")
    parser.add_argument("--pred-dir", help="predictions of one method for --ref-dir")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="NAME=PRED_DIR",
        help="rank several methods on --ref-dir with the challenge's ranking scheme",
    )
    parser.add_argument("--groups", help="CSV 'case,group' (e.g. scanner) for per-group means")
    parser.add_argument("-o", "--out", help="folder for cases.csv and summary.json")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--skip-missing", action="store_true", help="ignore cases with no prediction")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="cases scored in parallel")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return _run_compare(args)
    if args.ref_dir or args.pred_dir:
        return _run_dataset(args)
    if args.ref and args.pred:
        return _run_pair(args)
    raise InputError(None, "give REF PRED, or --ref-dir with --pred-dir or --compare (see --help)")


def _run_pair(args) -> int:
    if args.ref_dir or args.pred_dir or args.groups:
        raise InputError(None, "REF PRED cannot be combined with --ref-dir/--pred-dir/--groups")
    outputs = _outputs(args.out, ("cases.csv", "summary.json"), args.force)
    row = {"case": Path(args.pred).name, **evaluate_files(args.ref, args.pred).as_dict()}
    if outputs:
        write_text(outputs[0], rows_to_csv([row], TABLE_COLUMNS), force=args.force)
        write_json(outputs[1], row, force=args.force)
    if args.json:
        print(json.dumps(json_ready(row), indent=2))
    else:
        print(format_table([row], TABLE_COLUMNS))
    return 0


def _run_dataset(args) -> int:
    if not (args.ref_dir and args.pred_dir):
        raise InputError(None, "--ref-dir and --pred-dir go together")
    if args.ref or args.pred:
        raise InputError(None, "give either REF PRED or --ref-dir/--pred-dir, not both")
    outputs = _outputs(args.out, ("cases.csv", "summary.json"), args.force)
    groups = read_groups(args.groups) if args.groups else None
    rows = evaluate_dataset(
        args.ref_dir, args.pred_dir, groups=groups, skip_missing=args.skip_missing, jobs=args.jobs
    )
    summary = summarise(rows, by_group=groups is not None)
    columns = TABLE_COLUMNS + (("group",) if groups else ())
    if outputs:
        write_text(outputs[0], rows_to_csv(rows, columns), force=args.force)
        write_json(outputs[1], summary, force=args.force)
    if args.json:
        print(json.dumps(json_ready({"cases": rows, "summary": summary}), indent=2))
        return 0
    print(_dataset_text(rows, summary, columns))
    return 0


def _dataset_text(rows, summary, columns) -> str:
    stats = [{**row, "group": ""} for row in summary_rows(summary)] if "group" in columns else \
        summary_rows(summary)
    lines = [format_table(rows + stats, columns)]
    if "groups" in summary:
        group_rows = [
            {"group": name, "cases": g["cases"], **{m: g["metrics"][m]["mean"] for m in METRICS}}
            for name, g in summary["groups"].items()
        ]
        lines += ["", "per-group means:", format_table(group_rows, ("group", "cases") + METRICS)]
    nan_counts = {m: summary["metrics"][m]["nan"] for m in METRICS if summary["metrics"][m]["nan"]}
    if nan_counts:
        shown = ", ".join(f"{m} {n}" for m, n in nan_counts.items())
        lines.append(f"undefined (nan, left out of the statistics): {shown}")
    return "\n".join(lines)


def _run_compare(args) -> int:
    if not args.ref_dir:
        raise InputError(None, "--compare needs --ref-dir")
    if args.pred_dir or args.ref or args.pred:
        raise InputError(None, "--compare replaces --pred-dir and REF PRED")
    methods = _parse_methods(args.compare)
    names = [f"{name}/{f}" for name in methods for f in ("cases.csv", "summary.json")]
    outputs = _outputs(args.out, names + ["ranking.csv"], args.force)
    groups = read_groups(args.groups) if args.groups else None
    columns = TABLE_COLUMNS + (("group",) if groups else ())
    summaries = {}
    for name, pred_dir in methods.items():
        rows = evaluate_dataset(
            args.ref_dir, pred_dir, groups=groups, skip_missing=args.skip_missing,
            jobs=args.jobs, label=name,
        )
        summaries[name] = summarise(rows, by_group=groups is not None)
        if outputs:
            write_text(Path(args.out) / name / "cases.csv", rows_to_csv(rows, columns), force=args.force)
            write_json(Path(args.out) / name / "summary.json", summaries[name], force=args.force)
    ranking = rank_methods({name: means_of(s) for name, s in summaries.items()})
    if outputs:
        rank_columns = RANK_COLUMNS + tuple(f"{m}_rank" for m in METRICS)
        write_text(Path(args.out) / "ranking.csv", rows_to_csv(ranking, rank_columns), force=args.force)
    if args.json:
        print(json.dumps(json_ready({"ranking": ranking, "summaries": summaries}), indent=2))
    else:
        print("challenge ranking (per metric: mean over cases, scaled 0 = best .. 1 = worst; "
              "score = average of the five)")
        print(format_table(ranking, RANK_COLUMNS))
    return 0


def _parse_methods(items: list[str]) -> dict[str, str]:
    methods: dict[str, str] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise InputError(None, f"--compare expects NAME=PRED_DIR, got {item!r}")
        if not METHOD_NAME.match(name):
            raise InputError(None, f"--compare method name {name!r}: use letters, digits, '.', '_', '-'")
        if name in methods:
            raise InputError(None, f"--compare names {name!r} twice")
        methods[name] = folder
    if len(methods) < 2:
        raise InputError(None, "--compare needs at least two methods")
    return methods


def _outputs(out: str | None, names, force: bool) -> list[Path]:
    """Output paths under ``out``, refused up front if any exists without --force."""
    if not out:
        return []
    paths = [Path(out) / name for name in names]
    check_can_write(paths, force)
    return paths

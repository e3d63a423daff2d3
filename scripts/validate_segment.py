"""Validation table of `wmhkit segment` on the 3 labeled real cases, beside the plain FLAIR-threshold baseline.

    .venv/bin/python scripts/validate_segment.py [--tta] [--model NAME_OR_FILE_OR_RUN ...] [--pseudo]

Each case of ../shared/data/open_ms/labeled_mni (patients 07, 19, 26: never trained on, never used to
pick a checkpoint) goes through the same library call as the command (`wmhkit.segment.segment_scan`):
FLAIR only with the FLAIR-only default, and FLAIR + T1 with the T1 default. The baseline is
`wmhkit.baseline.flair_threshold` (median + 2.5 robust SD inside the brain, components >= 3 voxels).
`--pseudo` adds the annotation-free pseudo-labels alone (`wmhkit.selftrain.pseudo.label_scan`: brain,
N4, white matter, deviation from normal-appearing white matter), as `wmhkit selftrain` makes them.
Prints the mean of the five MICCAI 2017 metrics per method and Dice per case, as Markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wmhkit.baseline import flair_threshold
from wmhkit.io import load_image, load_labels
from wmhkit.metrics import score
from wmhkit.segment import load_model, resolve_model, segment_scan

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms" / "labeled_mni"
METRICS = ("dsc", "h95", "avd", "recall", "f1")


def methods(models: list[str], tta: bool, pseudo: bool = False):
    """(label, function(flair, t1) -> mask) for every method in the table.

    "default" gives two rows (the FLAIR-only and the FLAIR + T1 default); any other model one row, with
    the T1 if it takes one.
    """
    def baseline(flair, t1):
        return flair_threshold(flair.data.astype(np.float32))

    def network(model, with_t1: bool, label: str | None = None):
        def run(flair, t1):
            return segment_scan(flair, t1 if with_t1 else None, model=model, tta=tta).mask
        inputs = "FLAIR + T1" if with_t1 else "FLAIR only"
        return f"wmhkit segment, {label or model.name} ({inputs}){' + TTA' if tta else ''}", run

    def pseudo_labels(flair, t1):
        from wmhkit.selftrain.pseudo import label_scan

        return label_scan(flair.data, flair.affine)[2].mask

    rows = [("FLAIR threshold baseline (median + 2.5 robust SD)", baseline)]
    if pseudo:
        rows.append(("pseudo-labels alone (wmhkit selftrain, stage 1)", pseudo_labels))
    for name in models:
        if name == "default":
            rows += [network(load_model(resolve_model(name, with_t1)), with_t1) for with_t1 in (False, True)]
        else:
            model = load_model(resolve_model(name, True))
            # A run folder's model is called "model": name it by the path it came from.
            rows.append(network(model, model.needs_t1, None if model.name != "model" else name))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--model", nargs="*", default=["default"])
    parser.add_argument("--pseudo", action="store_true", help="add the annotation-free pseudo-labels alone")
    args = parser.parse_args()
    cases = sorted(p for p in DATA.iterdir() if p.is_dir())
    images = {c.name: (load_image(c / "FLAIR.nii.gz"), load_image(c / "T1.nii.gz"), load_labels(c / "lesions.nii.gz"))
              for c in cases}
    print("| method | Dice | H95 (mm) | AVD (%) | lesion recall | lesion F1 | Dice per case (" +
          ", ".join(images) + ") | s per case |")
    print("|---|---|---|---|---|---|---|---|")
    for label, run in methods(args.model, args.tta, args.pseudo):
        scores, seconds = [], []
        for flair, t1, truth in images.values():
            start = time.perf_counter()
            mask = run(flair, t1)
            seconds.append(time.perf_counter() - start)
            scores.append(score(truth.data, mask, truth.affine).as_dict())
        mean = {m: float(np.nanmean([s[m] for s in scores])) for m in METRICS}
        per_case = ", ".join(f"{s['dsc']:.2f}" for s in scores)
        print(f"| {label} | {mean['dsc']:.3f} | {mean['h95']:.1f} | {mean['avd']:.1f} | {mean['recall']:.2f} | "
              f"{mean['f1']:.2f} | {per_case} | {np.mean(seconds):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

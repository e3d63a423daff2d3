"""Does `wmhkit segment` need N4? Dice on the 3 labeled cases, with and without a known bias, N4 off and on.

    .venv/bin/python scripts/n4_decision.py [--t1]

The labeled cases are already N4-corrected; each is multiplied by the smooth bias of
bench/preprocess_speed.py (about +-30 %, the same field for FLAIR and T1) and segmented by the shipped
FLAIR-only default (with ``--t1`` also by the FLAIR + T1 one) with N4 off and on. Prints a Markdown table (docs/model_card.md, "Bias field").
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wmhkit.io import Volume, load_image, load_labels
from wmhkit.metrics import dice
from wmhkit.segment import load_model, resolve_model, segment_scan

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms" / "labeled_mni"


def biased(volume: Volume) -> Volume:
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in volume.shape], indexing="ij"))
    bias = np.exp(0.3 * (0.8 * grid[0] + 0.5 * grid[1] ** 2 - 0.6 * grid[2])).astype(np.float32)
    return Volume(volume.data * bias, volume.affine, volume.header, volume.path)


def main() -> int:
    with_t1_too = "--t1" in sys.argv[1:]
    print("| model | case | original, no N4 | original, N4 | biased, no N4 | biased, N4 |")
    print("|---|---|---|---|---|---|")
    for with_t1 in (False, True) if with_t1_too else (False,):
        model = load_model(resolve_model("default", with_t1))
        for case in sorted(p for p in DATA.iterdir() if p.is_dir()):
            flair, t1 = load_image(case / "FLAIR.nii.gz"), load_image(case / "T1.nii.gz")
            truth = load_labels(case / "lesions.nii.gz").data > 0
            cells = []
            for f, t in ((flair, t1), (biased(flair), biased(t1))):
                for n4 in (False, True):
                    result = segment_scan(f, t if with_t1 else None, model=model, n4=n4)
                    cells.append(f"{dice(truth, result.mask > 0):.3f}")
            print(f"| {model.name} | {case.name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

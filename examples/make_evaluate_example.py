"""Builds the bundled evaluation example from the open_ms data beside the checkout (dev script).

Reference: the 3-rater consensus lesion mask of open_ms patient 26 (MNI space).
Prediction: wmhkit's plain FLAIR-threshold baseline on that patient's FLAIR.
Run from the repository root: .venv/bin/python examples/make_evaluate_example.py
"""

from pathlib import Path

import numpy as np

from wmhkit.baseline import flair_threshold
from wmhkit.io import load_image, load_labels, save_volume

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT.parent / "shared" / "data" / "open_ms" / "labeled_mni" / "patient26"
OUT = ROOT / "examples" / "evaluate"

flair = load_image(CASE / "FLAIR.nii.gz")
lesions = load_labels(CASE / "lesions.nii.gz")
save_volume(OUT / "sub-patient26_wmh.nii.gz", lesions.data.astype(np.uint8), lesions, force=True)
save_volume(
    OUT / "sub-patient26_desc-threshold_mask.nii.gz",
    flair_threshold(flair.data),
    flair,
    dtype=np.uint8,
    force=True,
)
print(f"wrote {OUT}")

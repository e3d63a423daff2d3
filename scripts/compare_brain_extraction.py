"""wmhkit's brain extraction against HD-BET on every skull-on scan in ../shared/data.

Needs the HD-BET reference masks from scripts/hdbet_reference.py (bench/reference/hdbet/). Prints a
Markdown table (scan, Dice, volumes, seconds of each tool) and writes a montage of mask outlines
(wmhkit red, HD-BET cyan) to docs/img/brain_extraction_montage.png.
Run: .venv/bin/python scripts/compare_brain_extraction.py [--model runs/brain/brain_fcn1.pt]
"""

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wmhkit.brain import extract_brain, load_brain_model, load_brain_model_file  # noqa: E402
from wmhkit.io import load_image, load_labels  # noqa: E402
from wmhkit.metrics import dice  # noqa: E402
from wmhkit.preprocess import to_canonical  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "bench" / "reference" / "hdbet"
DATA = REPO.parent / "shared" / "data"


def scans() -> dict[str, Path]:
    found = {p.name.replace(".nii.gz", ""): p for p in sorted((DATA / "open_ms" / "unlabeled_clinical").glob("*.nii.gz"))}
    found["colin27_ch2"] = DATA / "templates" / "ch2.nii.gz"
    return found


def middle_slices(image, mask_a, mask_b, affine):
    """Axial slice through the brain's centre in RAS order, for display."""
    img, _, _ = to_canonical(image, affine)
    a, _, _ = to_canonical(mask_a, affine)
    b, _, _ = to_canonical(mask_b, affine)
    z = int(np.round(np.argwhere(b).mean(axis=0)[2])) if b.any() else img.shape[2] // 2
    return img[:, :, z].T, a[:, :, z].T, b[:, :, z].T


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    args = parser.parse_args()
    model = load_brain_model_file(args.model) if args.model else load_brain_model()
    timings = json.loads((REFERENCE / "timings.json").read_text())
    rows, tiles = [], []
    for name, path in scans().items():
        reference = REFERENCE / f"{name}_hdbet.nii.gz"
        if not reference.exists():
            print(f"skip {name}: no HD-BET reference")
            continue
        image = load_image(path)
        ref = load_labels(reference).data.astype(bool)
        start = time.perf_counter()
        result = extract_brain(image.data, image.affine, model, detect_stripped=False)
        seconds = time.perf_counter() - start
        ours = result.mask.astype(bool)
        rows.append((name, dice(ours, ref), result.volume_ml, ref.sum() * image.voxel_ml, seconds, timings.get(name, float("nan"))))
        tiles.append((name, *middle_slices(image.data, ours, ref, image.affine)))
    print("| scan | Dice vs HD-BET | wmhkit ml | HD-BET ml | wmhkit s | HD-BET s |")
    print("|---|---|---|---|---|---|")
    for name, d, v_ours, v_ref, s_ours, s_ref in rows:
        print(f"| {name} | {d:.3f} | {v_ours:.0f} | {v_ref:.0f} | {s_ours:.1f} | {s_ref:.1f} |")
    d = np.array([r[1] for r in rows])
    speed = np.array([r[5] / r[4] for r in rows])
    worst = rows[int(np.argmin(d))][0]
    print(f"\nmean Dice {d.mean():.4f}, min {d.min():.4f} ({worst}) over {len(rows)} scans; "
          f"wmhkit {np.median(speed):.0f}x faster (median)")
    columns = 5
    rows_n = int(np.ceil(len(tiles) / columns))
    fig, axes = plt.subplots(rows_n, columns, figsize=(3 * columns, 3 * rows_n), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, img, ours, ref) in zip(axes.ravel(), tiles):
        ax.imshow(img, cmap="gray", origin="lower")
        ax.contour(ref, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.contour(ours, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(name, fontsize=7)
    fig.suptitle("brain masks: wmhkit (red) vs HD-BET (cyan)")
    out = REPO / "docs" / "img" / "brain_extraction_montage.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"montage: {out}")


if __name__ == "__main__":
    main()

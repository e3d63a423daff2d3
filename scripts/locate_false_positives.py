"""Where a model's false positives lie on the 3 labeled real cases: size, place, FLAIR brightness.

Development script (reads the real data beside the checkout; the package never does). Each case goes
through `wmhkit segment`'s library call (FLAIR + T1), as in scripts/validate_segment.py; then:

* volumes: rated, predicted, true positive, false positive (predicted voxels more than one voxel from a
  rated lesion, so a border disagreement does not count), missed;
* for false positives, rated lesions and missed voxels: the share within 2/4/8/15 mm of the lateral
  ventricles (the two largest CSF-dark components, FLAIR < 0.3 x the brain's median) and the FLAIR /
  brain-median quartiles (the session-29 finding: false positives at 1.05-1.2, rated lesions 1.2-1.46);
* the false-positive components: count, the largest, how many are specks of <= 10 voxels, and for the
  five largest their MNI position and the generator's atlas classes under them (the cases are in MNI
  space, so the atlas applies by the affines alone).

Usage:  python scripts/locate_false_positives.py MODEL   (a run folder, a model file or a shipped name)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from wm_midscale_variation import atlas_labels_on  # noqa: E402
from wmhkit.io import load_image, load_labels  # noqa: E402
from wmhkit.segment import load_model, resolve_model, segment_scan  # noqa: E402
from wmhkit.synth.anatomy import load_atlas  # noqa: E402

REAL = REPO.parent / "shared" / "data" / "open_ms" / "labeled_mni"
VENTRICLE_BELOW = 0.3
DISTANCES_MM = (2, 4, 8, 15)
SPECK_VOXELS = 10


def lateral_ventricles(flair: np.ndarray, brain: np.ndarray, median: float) -> np.ndarray:
    dark = (flair < VENTRICLE_BELOW * median) & brain
    labels, n = ndi.label(dark)
    if n == 0:
        return dark
    sizes = ndi.sum(dark, labels, range(1, n + 1))
    return np.isin(labels, 1 + np.argsort(sizes)[-2:])


def describe_region(name: str, region: np.ndarray, distance_mm: np.ndarray, flair_ratio: np.ndarray) -> str:
    near = [float(np.mean(distance_mm[region] <= d)) for d in DISTANCES_MM]
    quartiles = np.percentile(flair_ratio[region], [25, 50, 75])
    return (f"  {name}: within {'/'.join(map(str, DISTANCES_MM))} mm of the ventricles "
            f"{' / '.join(f'{v:.2f}' for v in near)}; FLAIR / brain median p25/50/75 "
            f"{' / '.join(f'{v:.2f}' for v in quartiles)}")


def largest_components(false_positive: np.ndarray, atlas_labels: np.ndarray, atlas_names: dict, affine: np.ndarray):
    labels, n = ndi.label(false_positive)
    if n == 0:
        return
    sizes = ndi.sum(false_positive, labels, range(1, n + 1))
    ordered = np.sort(sizes)[::-1].astype(int)
    yield (f"  false-positive components {n}, largest {ordered[:5].tolist()} voxels, "
           f"specks of <= {SPECK_VOXELS} voxels {int(np.sum(sizes <= SPECK_VOXELS))}")
    for k in np.argsort(sizes)[::-1][:5]:
        component = labels == k + 1
        classes, counts = np.unique(atlas_labels[component], return_counts=True)
        top = sorted(zip(counts, classes), reverse=True)[:3]
        centre = affine[:3, :3] @ np.array(np.nonzero(component)).mean(1) + affine[:3, 3]
        where = ", ".join(f"{atlas_names[int(c)]} {count / component.sum():.2f}" for count, c in top)
        yield f"    {int(component.sum())} voxels at MNI {np.round(centre).astype(int).tolist()}: {where}"


def locate(model_name: str) -> None:
    model = load_model(resolve_model(model_name, True))
    atlas = load_atlas()
    for case in sorted(REAL.iterdir()):
        flair = load_image(case / "FLAIR.nii.gz")
        t1 = load_image(case / "T1.nii.gz")
        rated = np.asarray(load_labels(case / "lesions.nii.gz").data) > 0
        predicted = segment_scan(flair, t1, model=model).mask > 0
        data = flair.data.astype(np.float32)
        brain = data > 0
        median = float(np.median(data[brain]))
        distance_mm = ndi.distance_transform_edt(~lateral_ventricles(data, brain, median))
        false_positive = predicted & ~ndi.binary_dilation(rated, iterations=1)
        missed = rated & ~predicted
        print(f"{case.name}: rated {rated.sum() / 1000:.1f} ml, predicted {predicted.sum() / 1000:.1f}, "
              f"true positive {(predicted & rated).sum() / 1000:.1f}, false positive {false_positive.sum() / 1000:.1f}, "
              f"missed {missed.sum() / 1000:.1f}")
        for name, region in (("false positives", false_positive), ("rated", rated), ("missed", missed)):
            if region.any():
                print(describe_region(name, region, distance_mm, data / median))
        atlas_labels = atlas_labels_on(atlas, data.shape, flair.affine)
        for line in largest_components(false_positive, atlas_labels, atlas.names, flair.affine):
            print(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a run folder, a model file or a shipped model's name")
    locate(parser.parse_args(argv).model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed of the WMH training data path, one torch thread.

Prints
  * the default TorchIO augmentation (wmhkit.train.augment.DEFAULT_SPEC): ms per 2D slice
    (2 x 256 x 256) and s per 3D patch (2 x 96 x 96 x 96), and the same with every transform on;
  * synthetic_cases: seconds per case to synthesise (generate_sample, 1 mm anatomy, "mixed" profile) and
    to build each input kind, and to load a cached case;
  * SliceDataset / PatchDataset items per second with the default augmentation.
Run: OMP_NUM_THREADS=1 .venv/bin/python bench/augment_speed.py [--quick] [--cases N]
"""

import argparse
import tempfile
import time

import numpy as np
import torch

from wmhkit.train.augment import DEFAULT_SPEC, build_augmentation
from wmhkit.train.data import PatchDataset, SliceDataset, synthetic_cases
from wmhkit.train.inputs import KINDS


def toy_pair(shape, channels, rng):
    """A z-scored-looking image inside an ellipsoid brain, with a few lesion blobs labelled."""
    grid = np.indices(shape).astype(np.float32)
    centre = (np.array(shape) - 1) / 2
    radii = np.array(shape) * 0.4
    column = (-1,) + (1,) * len(shape)
    brain = (((grid - centre.reshape(column)) / radii.reshape(column)) ** 2).sum(0) <= 1
    image = np.where(brain, rng.standard_normal((channels,) + shape), 0).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for _ in range(5):
        at = tuple(int(rng.integers(int(c - r / 2), int(c + r / 2))) for c, r in zip(centre, radii))
        label[tuple(slice(a - 3, a + 3) for a in at)] = 1
    image[0][label > 0] += 4
    return image, label, brain.astype(np.uint8)


def per_item(augment, image, label, brain, n):
    t0 = time.perf_counter()
    for seed in range(n):
        augment(image, label, seed=seed, brain=brain, background=np.zeros(len(image)))
    return (time.perf_counter() - t0) / n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--cases", type=int, default=2, help="synthetic cases to generate (1 mm, mixed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n2, n3 = (20, 2) if args.quick else (100, 6)

    image2, label2, brain2 = toy_pair((256, 256), 2, rng)
    image3, label3, brain3 = toy_pair((96, 96, 96), 2, rng)
    every = {k: 1.0 for k in DEFAULT_SPEC}
    for name, spec in (("default spec", DEFAULT_SPEC), ("every transform on", every)):
        ms = 1000 * per_item(build_augmentation(spec, 2), image2, label2, brain2, n2)
        s3 = per_item(build_augmentation(spec, 3), image3, label3, brain3, n3)
        print(f"augmentation, {name:18s}: {ms:7.1f} ms per 2D slice 2x256x256, {s3:6.2f} s per 3D patch 2x96^3")
    for name in DEFAULT_SPEC:
        ms = 1000 * per_item(build_augmentation({name: 1.0}, 2), image2, label2, brain2, max(5, n2 // 4))
        s3 = per_item(build_augmentation({name: 1.0}, 3), image3, label3, brain3, max(1, n3 // 3))
        print(f"  {name:10s} always: {ms:7.1f} ms per 2D slice, {s3:6.2f} s per 3D patch")

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        cases = synthetic_cases(args.cases, 0, "flair_t1", cache, progress=False)
        first = (time.perf_counter() - t0) / args.cases
        for case in cases:
            print(f"synthetic case {case.name}: {case.meta['profile']}, shape {case.channels.shape[1:]}, "
                  f"synthesis {case.meta['generate_s']:.1f} s, flair_t1 inputs {case.meta['build_s']:.2f} s")
        print(f"synthetic_cases, first call: {first:.1f} s per case (synthesis + inputs + compressed write)")
        for kind in KINDS:
            t0 = time.perf_counter()
            built = synthetic_cases(args.cases, 0, kind, cache, progress=False)
            print(f"  kind {kind:15s}: building inputs {np.mean([c.meta['build_s'] for c in built]):5.2f} s per case, "
                  f"call {(time.perf_counter() - t0) / args.cases:5.2f} s per case")
        t0 = time.perf_counter()
        cases = synthetic_cases(args.cases, 0, "flair_t1", cache, progress=False)
        print(f"synthetic_cases, cached: {(time.perf_counter() - t0) / args.cases:.2f} s per case (load)")

        slices = SliceDataset({"synthetic": cases}, {"synthetic": 1.0}, 256, n2, 0,
                              augment=build_augmentation(DEFAULT_SPEC, 2))
        t0 = time.perf_counter()
        for i in range(n2):
            slices[i]
        print(f"SliceDataset 256x256, default augmentation: {1000 * (time.perf_counter() - t0) / n2:.1f} ms per item")
        patches = PatchDataset({"synthetic": cases}, {"synthetic": 1.0}, (96, 96, 96), n3, 0,
                               augment=build_augmentation(DEFAULT_SPEC, 3))
        t0 = time.perf_counter()
        for i in range(n3):
            patches[i]
        print(f"PatchDataset 96^3, default augmentation: {(time.perf_counter() - t0) / n3:.2f} s per item")


if __name__ == "__main__":
    main()

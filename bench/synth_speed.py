"""Speed of the synthetic data engine (target: >= 1 training sample per second per core).

Prints seconds per sample, one torch thread, for
  * the training Dataset (SynthDataset default grid: 112x144x112 at 1.5 mm), and the samples/s per
    core that gives; also a 2-worker DataLoader run (samples/s on this machine's cores, with and
    without the workers' start-up);
  * `wmhkit synth` cases of each profile (full clinical2d / research3d geometry, 1 mm anatomy),
    generation only, and with writing the NIfTI files.
Run: .venv/bin/python bench/synth_speed.py [--quick]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from wmhkit.commands.synth import write_case
from wmhkit.synth import generate_sample
from wmhkit.synth.anatomy import load_atlas
from wmhkit.synth.dataset import SynthDataset, make_loader
from wmhkit.synth.lesions import load_library


def timed(fn, n):
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    n_train, n_cli = (4, 1) if args.quick else (12, 3)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load_atlas()
    load_library()
    print(f"asset loading (once per process): {time.perf_counter() - t0:.2f} s")

    ds = SynthDataset(length=1000, seed=1)
    ds[0]  # warm-up
    s = timed(lambda i: ds[i + 1], n_train)
    print(f"Dataset sample {ds.shape} @ {ds.spacing_mm} mm, 1 thread: {s:.2f} s/sample = {1 / s:.2f} samples/s/core")

    cores = min(2, os.cpu_count() or 1)
    loader = make_loader(SynthDataset(length=n_train * cores, seed=2), batch_size=1, num_workers=cores)
    t0 = time.perf_counter()
    arrivals = []
    for _ in loader:
        arrivals.append(time.perf_counter())
    n, dt = len(arrivals), arrivals[-1] - t0
    print(f"DataLoader, {cores} workers (incl. worker start-up): {n / dt:.2f} samples/s ({n / dt / cores:.2f}/core)")
    # A training run starts its workers once: what it sees after the first sample of each worker.
    steady = (n - cores) / (arrivals[-1] - arrivals[cores - 1])
    print(f"DataLoader, {cores} workers, after start-up: {steady:.2f} samples/s ({steady / cores:.2f}/core)")

    for profile in ("clinical2d", "research3d"):
        gen = timed(lambda i: generate_sample(100 + i, profile, index=i), n_cli)
        with tempfile.TemporaryDirectory() as tmp:
            full = timed(lambda i: write_case(Path(tmp) / f"c{i}", generate_sample(200 + i, profile, index=i)), n_cli)
        print(f"wmhkit synth --profile {profile}: {gen:.1f} s/case generation, {full:.1f} s/case with writing")


if __name__ == "__main__":
    main()

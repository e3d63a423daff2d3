"""`wmhkit synth`: write synthetic FLAIR/T1 cases with WMH labels in the WMH challenge layout."""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from wmhkit import synth_report
from wmhkit.errors import InputError
from wmhkit.io import Volume, check_can_write, save_volume, write_json

HELP = "generate synthetic FLAIR/T1 cases with WMH, brain and tissue labels"
EPILOG = """\
Each case is real anatomy (Colin27 atlas in MNI space, randomly warped and atrophied), real and
procedural lesion shapes (none to ~80 ml), randomised contrast, bias field, noise and acquisition
geometry. The same --seed gives bit-identical files; case k depends only on (seed, k).

profiles:
  clinical2d   axial 2D: in-plane 0.4-1.0 mm, slices 3-8 mm (mostly 3-5) with slice-profile blur,
               matrices such as 512x512x16, 256x256x48, 240x240x48
  research3d   ~1 mm isotropic 3D (0.9-1.2 mm): 182x218x182, 176x240x256, ... axial or sagittal
  mixed        either, 50/50 (default)

output layout (DIR/<case>/):
  pre/FLAIR.nii.gz  pre/T1.nii.gz      paired, co-registered images (int16)
  wmh.nii.gz                           lesion label: 1 where >= 50% of the voxel is lesion
  brainmask.nii.gz  tissue.nii.gz      brain mask; anatomy labels (names in meta.json)
  meta.json                            seed, profile, age/atrophy, lesion load and count, contrast,
                                       voxel size, shape, shape sources ...
Without --skull the images are skull-stripped (0 outside the brain mask).

examples:
  wmhkit synth -n 20 -o synth/ --seed 1
  wmhkit synth -n 100 -o synth_clinical/ --seed 7 --profile clinical2d --skull -j 2
"""
EXAMPLES = ["wmhkit synth -n 20 -o synth/ --seed 1      # 20 synthetic cases with labels"]
OUTPUTS = ("pre/FLAIR.nii.gz", "pre/T1.nii.gz", "wmh.nii.gz", "brainmask.nii.gz", "tissue.nii.gz", "meta.json")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help=HELP,
        description=HELP + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--num", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument("-o", "--out", help="output folder (required unless --report)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--start", type=int, default=0, help="index of the first case (to extend a run)")
    parser.add_argument(
        "--profile", choices=("clinical2d", "research3d", "mixed"), default="mixed", help="acquisition profile"
    )
    parser.add_argument("--skull", action="store_true", help="keep skull, scalp, eyes and neck")
    parser.add_argument(
        "--work-spacing",
        type=float,
        default=1.0,
        metavar="MM",
        help="voxel size of the internal anatomy grid (default 1.0; 2.0 is ~4x faster, coarser)",
    )
    parser.add_argument("-j", "--jobs", type=int, default=1, help="cases generated in parallel processes")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    synth_report.add_report_arguments(parser)
    parser.set_defaults(func=run)


def case_name(seed: int, index: int) -> str:
    return f"synth_s{seed}_{index:04d}"


def run(args) -> int:
    if args.report:
        return synth_report.run_report(args)
    if not args.out:
        raise InputError(None, "-o/--out is required (the folder to write cases to)")
    if args.num < 1:
        raise InputError(None, f"-n must be at least 1 (got {args.num})")
    if args.start < 0:
        raise InputError(None, f"--start must be >= 0 (got {args.start})")
    if args.jobs < 1:
        raise InputError(None, f"--jobs must be at least 1 (got {args.jobs})")
    if not 0.5 <= args.work_spacing <= 3.0:
        raise InputError(None, f"--work-spacing must be within 0.5-3.0 mm (got {args.work_spacing})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    indices = range(args.start, args.start + args.num)
    check_can_write([out / case_name(args.seed, i) / f for i in indices for f in OUTPUTS], args.force)
    t0 = time.perf_counter()
    jobs = [(out / case_name(args.seed, i), args.seed, i, args.profile, args.skull, args.work_spacing, args.force)
            for i in indices]
    progress = dict(desc="wmhkit synth", unit="case", total=len(jobs), dynamic_ncols=True)
    if args.jobs > 1:
        # Each case depends only on (seed, index), so the files are the same whatever the job count.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(args.jobs, len(jobs)), initializer=_one_thread) as pool:
            loads = list(tqdm(pool.imap(_make_case, jobs), **progress))
    else:
        loads = [_make_case(job) for job in tqdm(jobs, **progress)]
    total_ml = float(sum(loads))
    dt = time.perf_counter() - t0
    mean_ml = total_ml / args.num
    print(f"wrote {args.num} cases to {out} ({dt / args.num:.1f} s/case, mean lesion load {mean_ml:.2f} ml)")
    return 0


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _make_case(job) -> float:
    """Generate and write one case; returns its lesion volume (ml)."""
    from wmhkit.synth import generate_sample

    folder, seed, index, profile, skull, work_spacing, force = job
    sample = generate_sample(seed, profile, skull, index=index, work_spacing_mm=work_spacing)
    write_case(folder, sample, force=force)
    return float(sample.meta["lesion_volume_ml"])


def write_case(folder: Path, sample, force: bool = False) -> None:
    """Write one :class:`wmhkit.synth.SynthSample` in the challenge layout."""
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    grid = Volume(data=sample.wmh, affine=sample.affine, header=header)
    for name, img in (("pre/FLAIR.nii.gz", sample.flair), ("pre/T1.nii.gz", sample.t1)):
        save_volume(folder / name, np.clip(np.rint(img), -32768, 32767).astype(np.int16), grid, force=force)
    save_volume(folder / "wmh.nii.gz", sample.wmh, grid, dtype=np.uint8, force=force)
    save_volume(folder / "brainmask.nii.gz", sample.brainmask, grid, dtype=np.uint8, force=force)
    save_volume(folder / "tissue.nii.gz", sample.tissue, grid, dtype=np.uint8, force=force)
    meta = dict(sample.meta)
    meta["case"] = folder.name
    meta["files"] = list(OUTPUTS[:-1])
    write_json(folder / "meta.json", meta, force=force)

"""`wmhkit segment`: WMH mask, probability, brain mask and statistics of one FLAIR scan."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from wmhkit.errors import InputError
from wmhkit.io import (
    check_can_write,
    derivative_stem,
    load_image,
    load_labels,
    save_volume,
    write_json,
)

# torch and the networks are imported inside the command: `wmhkit --help` should not wait for them.

EXAMPLES = [
    "wmhkit segment sub-01_FLAIR.nii.gz --t1 sub-01_T1w.nii.gz -o out/   # WMH mask, probability, stats",
]
OUTPUTS = {
    "mask": "desc-wmh_mask.nii.gz",
    "probseg": "desc-wmh_probseg.nii.gz",
    "brain": "desc-brain_mask.nii.gz",
    "stats": "desc-wmh_stats.json",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment WMH in a FLAIR scan (T1 optional); mask, probability, brain mask, stats",
        description="Segments white matter hyperintensities in one FLAIR (3D or thick-slice 2D, any "
        "orientation, skull on or off). Writes, on the FLAIR's own grid and header: "
        "<stem>_desc-wmh_mask.nii.gz (uint8), <stem>_desc-wmh_probseg.nii.gz (float32 0..1), "
        "<stem>_desc-brain_mask.nii.gz and <stem>_desc-wmh_stats.json (volumes in ml, 26-connected "
        "lesion count, timings). Exit codes: 0 ok, 2 bad input, 1 internal error.",
        epilog="example:\n  wmhkit segment sub-01_FLAIR.nii.gz --t1 sub-01_T1w.nii.gz -o derivatives/wmhkit",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("flair", help="FLAIR image (.nii/.nii.gz)")
    parser.add_argument("--t1", help="T1 image of the same head; registered to the FLAIR if on another grid")
    parser.add_argument("-o", "--out", help="output folder (default: the FLAIR's folder)")
    parser.add_argument("--brain-mask", help="brain mask on the FLAIR grid (default: computed)")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability cut-off of the mask (0.5)")
    parser.add_argument("--model", default="default",
                        help="shipped model name, a model file from `wmhkit train` or its run folder "
                        "(default: the shipped model for the inputs given)")
    parser.add_argument("--tta", action="store_true", help="average over flips (about 3x the network time)")
    parser.add_argument("--no-n4", dest="n4", action="store_false",
                        help="skip the N4 bias correction inside the brain (saves 1-2 s)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.set_defaults(func=run_segment)


def output_paths(flair_path: str | os.PathLike, out_dir: str | os.PathLike | None) -> dict[str, Path]:
    """BIDS-derivative names of the outputs: the FLAIR's stem without its modality suffix."""
    stem = derivative_stem(flair_path)
    folder = Path(out_dir) if out_dir else Path(flair_path).parent
    return {key: folder / f"{stem}_{name}" for key, name in OUTPUTS.items()}


def run_segment(args: argparse.Namespace) -> int:
    from wmhkit.segment import load_model, resolve_model, segment_scan

    started = time.perf_counter()
    paths = output_paths(args.flair, args.out)
    check_can_write(paths.values(), args.force)
    if args.device == "cuda":
        _require_cuda()
    load_start = time.perf_counter()
    flair = load_image(args.flair)
    t1 = load_image(args.t1) if args.t1 else None
    brain = _load_brain_mask(args.brain_mask, flair) if args.brain_mask else None
    model = load_model(resolve_model(args.model, t1 is not None))
    load_s = time.perf_counter() - load_start
    result = segment_scan(flair, t1, model=model, brain_mask=brain, threshold=args.threshold, tta=args.tta,
                          n4=args.n4, device=args.device)
    write_start = time.perf_counter()
    result.stats["timings_s"] = {"load": round(load_s, 3), **result.stats["timings_s"]}
    if brain is not None:
        result.stats["brain_mask_source"] = str(Path(args.brain_mask))
    _write_outputs(paths, result, flair, args.force, write_start, started)
    if not args.quiet:
        stats = result.stats
        print(f"WMH {stats['wmh_volume_ml']:.2f} ml in {stats['lesion_count']} lesions "
              f"(brain {stats['brain_volume_ml']:.0f} ml, model {stats['model']['name']}, "
              f"{stats['timings_s']['total']:.1f} s)")
        for key in ("mask", "probseg", "brain", "stats"):
            print(f"  {paths[key]}")
    return 0


def _write_outputs(paths: dict[str, Path], result, flair, force: bool, write_start: float, started: float) -> None:
    """All four files appear together or none does: written in a temporary folder beside them, then moved."""
    folder = paths["mask"].parent
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wmhkit-segment-", dir=folder))
    try:
        save_volume(staging / paths["mask"].name, result.mask, flair, dtype="uint8")
        save_volume(staging / paths["probseg"].name, result.probability, flair, dtype="float32")
        save_volume(staging / paths["brain"].name, result.brain, flair, dtype="uint8")
        now = time.perf_counter()
        result.stats["timings_s"]["write"] = round(now - write_start, 3)
        result.stats["timings_s"]["total"] = round(now - started, 3)
        write_json(staging / paths["stats"].name, result.stats)
        check_can_write(paths.values(), force)  # another process may have written them meanwhile
        for path in paths.values():
            os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_brain_mask(path: str, flair) -> np.ndarray:
    mask = load_labels(path)
    if mask.shape != flair.shape or not np.allclose(mask.affine, flair.affine, atol=1e-3):
        raise InputError(path, f"brain mask grid {mask.shape} does not match the FLAIR's {flair.shape} "
                               "(it must lie on the FLAIR's grid)")
    if not mask.data.any():
        raise InputError(path, "the brain mask is empty")
    return mask.data > 0


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise InputError(None, "--device cuda asked for, but this machine has no usable CUDA GPU")


"""`wmhkit brainmask` and `wmhkit train-brain`: brain extraction with FCN-1, and its training."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wmhkit.errors import InputError
from wmhkit.io import (
    check_can_write,
    derivative_stem,
    is_nifti_path,
    load_image,
    save_volume,
)

# torch and the networks are imported inside the commands: `wmhkit --help` should not wait for them.

EXAMPLES = [
    "wmhkit brainmask sub-01_FLAIR.nii.gz -o sub-01_desc-brain_mask.nii.gz   # brain extraction",
]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "brainmask",
        help="brain mask of a head scan (any contrast, 3D or thick-slice 2D)",
        description="Brain extraction with FCN-1 of the two-stage network; the mask is written on the "
        "input's native grid. An input that is already skull-stripped is detected and its non-zero "
        "region returned.",
        epilog="example:\n  wmhkit brainmask sub-01_FLAIR.nii.gz -o sub-01_desc-brain_mask.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", help="head or brain image (.nii/.nii.gz)")
    parser.add_argument("-o", "--out", help="output mask (default: <stem>_desc-brain_mask.nii.gz beside the input)")
    parser.add_argument("--model", help="a brain model file (default: the shipped one)")
    parser.add_argument("--no-detect-stripped", action="store_true",
                        help="run the network even if the input looks skull-stripped")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.set_defaults(func=run_brainmask)

    train = subparsers.add_parser(
        "train-brain",
        help="train the brain extractor (FCN-1) on synthetic heads",
        description="Trains FCN-1 on synthetic heads from the training-data engine; checkpoints every "
        "--checkpoint-every steps; --resume continues a stopped run exactly.",
        epilog="example:\n  wmhkit train-brain --out runs/brain --steps 3000\n"
        "  wmhkit train-brain --out runs/brain --steps 3000 --resume --stop-at 1500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--out", required=True, help="run folder (checkpoint, log, cache, exported model)")
    # Unset options keep the recipe's defaults (wmhkit.train.BrainRecipe).
    train.add_argument("--steps", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, dest="learning_rate")
    train.add_argument("--width", type=int)
    train.add_argument("--cache-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--checkpoint-every", type=int)
    train.add_argument("--init", help="start from this brain model file (fine-tuning)")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--stop-at", type=int, help="stop after this step (continue later with --resume)")
    train.set_defaults(func=run_train)


def run_brainmask(args: argparse.Namespace) -> int:
    from wmhkit.brain import extract_brain

    image_path = Path(args.image)
    out = Path(args.out) if args.out else image_path.with_name(f"{derivative_stem(image_path)}_desc-brain_mask.nii.gz")
    if not is_nifti_path(out):
        raise InputError(out, "output name must end in .nii or .nii.gz")
    check_can_write([out], args.force)
    image = load_image(image_path)
    model = _model_file(args.model) if args.model else None
    start = time.perf_counter()
    try:
        result = extract_brain(image.data, image.affine, model, detect_stripped=not args.no_detect_stripped)
    except FileNotFoundError:
        raise InputError(None, "this build ships no brain model yet: train one with `wmhkit train-brain` "
                               "and pass it with --model") from None
    save_volume(out, result.mask, image, dtype="uint8", force=args.force)
    how = "input already skull-stripped: kept its non-zero region" if result.skipped_because_stripped else "FCN-1"
    print(f"{out}: brain {result.volume_ml:.0f} ml ({how}, {time.perf_counter() - start:.1f} s)")
    return 0


def _model_file(path: str):
    from wmhkit.brain import load_brain_model_file

    if not Path(path).is_file():
        raise InputError(path, "model file not found")
    return load_brain_model_file(path)


def run_train(args: argparse.Namespace) -> int:
    from wmhkit.train import BrainRecipe, train_brain_extractor

    names = ("steps", "batch_size", "learning_rate", "width", "cache_size", "seed", "checkpoint_every", "init")
    recipe = BrainRecipe(**{n: getattr(args, n) for n in names if getattr(args, n) is not None})
    if args.init and not Path(args.init).is_file():
        raise InputError(args.init, "model file not found")
    exported = train_brain_extractor(Path(args.out), recipe, resume=args.resume, stop_at=args.stop_at)
    print(f"model: {exported}")
    return 0

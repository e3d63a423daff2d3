"""`wmhkit pretrain`: pretrain a network's encoder on a proxy task (brain age) for `wmhkit train --init`."""

from __future__ import annotations

import argparse

from wmhkit.commands.train import add_run_options, config_overrides
from wmhkit.errors import InputError

EXAMPLES = [
    "wmhkit pretrain --task age --config configs/pretrain_age_cpu.toml --out runs/age   # pretrain an encoder",
]

# Flags that are shorthands for config keys (any other key: --set section.key=value).
SHORTHANDS = {
    "steps": "pretrain.steps", "lr": "pretrain.lr", "batch_size": "pretrain.batch_size", "device": "run.device",
    "seed": "run.seed", "threads": "run.threads",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain the 3D U-Net's encoder on brain-age regression (synthetic atrophy)",
        description="Trains the encoder of the config's network (unet3d_ds) with a regression head on the "
        "synthetic generator's atrophy/age parameter, and writes encoder.pt for `wmhkit train --init`. "
        "Run folder: last.pt (resumable), log.csv, metrics.csv (validation MAE, r), encoder.pt.",
        epilog="examples:\n"
        "  wmhkit pretrain --task age --config configs/pretrain_age_cpu.toml --out runs/age\n"
        "  wmhkit pretrain --task age --config configs/unet3d_ds_cpu.toml --out runs/age --steps 200\n"
        "  wmhkit train --config configs/unet3d_ds_cpu.toml --out runs/ds --init runs/age/encoder.pt "
        "--set model.freeze_encoder_steps=200",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", default="age", choices=["age"], help="proxy task (default: age)")
    parser.add_argument("--config", help="training config (its [model] and data.inputs), optionally with a "
                        "[pretrain] table or segmentation_config = FILE (see configs/pretrain_age_cpu.toml)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out (its stored config is used)")
    add_run_options(parser, "override a config key, e.g. pretrain.cases=24 (value in TOML syntax); repeatable")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wmhkit.train.config import ConfigError
    from wmhkit.train.pretrain import load_pretrain_config, pretrain

    overrides = [f'pretrain.task="{args.task}"'] + config_overrides(args, SHORTHANDS)
    try:
        config = load_pretrain_config(args.config, overrides)
    except ConfigError as error:
        raise InputError(None, str(error)) from None
    try:
        encoder = pretrain(config, args.out, resume=args.resume, stop_at=args.stop_at, progress=not args.quiet)
    except FileExistsError as error:
        raise InputError(None, str(error)) from None
    except ValueError as error:
        raise InputError(args.config, str(error)) from None
    print(f"run folder: {args.out}" + (f"; encoder: {encoder}" if encoder.exists() else " (stopped early; --resume)"))
    return 0

"""`wmhkit train`: train any of wmhkit's WMH networks from a config file (see configs/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from wmhkit.errors import InputError

EXAMPLES = [
    "wmhkit train --config configs/unet2d_cpu.toml --out runs/unet2d      # train a network",
]

# Flags that are shorthands for config keys (any other key: --set section.key=value).
SHORTHANDS = {
    "steps": "optim.steps", "lr": "optim.lr", "batch_size": "optim.batch_size", "device": "run.device",
    "seed": "run.seed", "workers": "run.workers", "threads": "run.threads",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a WMH network (2D U-Net, side-output FCN, ...) from a config",
        description="Trains the network a TOML config describes (configs/*.toml) into a run folder: "
        "last.pt (resumable), best.pt and model.pt (exported), metrics.csv, log.csv, curves.png. "
        "Run it under torchrun for several processes/GPUs (DistributedDataParallel).",
        epilog="examples:\n"
        "  wmhkit train --config configs/unet2d_cpu.toml --out runs/unet2d\n"
        "  wmhkit train --config configs/unet2d_cpu.toml --out runs/unet2d --resume\n"
        "  wmhkit train --config configs/sidefcn_cpu.toml --out runs/xu --set data.inputs=\\\"colour_t1\\\"\n"
        "  torchrun --nproc_per_node 2 -m wmhkit train --config configs/unet2d_cpu.toml --out runs/ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML config (default: built-in defaults)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--init", help="start from these weights (checkpoint, model file or VGG-16 state dict)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly; the config stored in the run is used (--config, --set and the config shorthands are ignored)")
    parser.add_argument("--stop-at", type=int, help="stop after this step (continue later with --resume)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key (value in TOML syntax); repeatable")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, help="torch threads per process (0: cores / processes)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wmhkit.train.config import ConfigError, load_config
    from wmhkit.train.engine import train

    overrides = list(args.set)
    for flag, key in SHORTHANDS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as error:
        raise InputError(None, str(error)) from None
    if args.init and not Path(args.init).is_file():
        raise InputError(args.init, "weights file not found")
    try:
        exported = train(config, args.out, resume=args.resume, init=args.init, stop_at=args.stop_at,
                         progress=not args.quiet)
    except FileExistsError as error:
        raise InputError(None, str(error)) from None
    except ValueError as error:
        raise InputError(args.config, str(error)) from None
    print(f"run folder: {args.out}" + (f"; model: {exported}" if exported.exists() else " (stopped early; --resume)"))
    return 0

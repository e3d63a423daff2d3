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
    "seed": "run.seed", "workers": "run.workers", "threads": "run.threads", "time_budget": "run.time_budget_minutes",
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
        "  wmhkit train --config configs/unet3d_ds_cpu.toml --out runs/ds --time-budget 75\n"
        "  wmhkit train --config configs/sidefcn_cpu.toml --out runs/xu --set data.inputs=\\\"colour_t1\\\"\n"
        "  torchrun --nproc_per_node 2 -m wmhkit train --config configs/unet2d_cpu.toml --out runs/ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML config (default: built-in defaults)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--init", help="start from these weights: a checkpoint, a model file, an encoder file of "
                        "`wmhkit pretrain` (loaded into the network's encoder only) or a VGG-16 state dict")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly; the config stored in the run is used (--config, --set and the config shorthands are ignored)")
    add_run_options(parser, "override a config key (value in TOML syntax); repeatable")
    parser.add_argument("--workers", type=int, help="DataLoader worker processes")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="fit the training loop into this many minutes on this machine: the pace, measured "
                        "over steps 6-25 and again every 100 steps, sets optim.steps (never above the config's), "
                        "and the schedule follows")
    parser.set_defaults(func=run)


def add_run_options(parser: argparse.ArgumentParser, set_help: str) -> None:
    """The options `wmhkit train` and `wmhkit pretrain` share: chunking, overrides and their shorthands."""
    parser.add_argument("--stop-at", type=int, help="stop after this step (continue later with --resume)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=set_help)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--threads", type=int, help="torch threads per process (0: cores / processes)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config_overrides(args: argparse.Namespace, shorthands: dict[str, str]) -> list[str]:
    """``--set`` values followed by the shorthand flags given, as ``section.key=value`` overrides."""
    overrides = list(args.set)
    for flag, key in shorthands.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    return overrides


def run(args: argparse.Namespace) -> int:
    from wmhkit.train.config import ConfigError, load_config
    from wmhkit.train.engine import train

    try:
        config = load_config(args.config, config_overrides(args, SHORTHANDS))
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

"""`wmhkit selftrain`: annotation-free training on a folder of unlabeled FLAIRs (DeepWMH method)."""

from __future__ import annotations

import argparse
from pathlib import Path

from wmhkit.errors import InputError

# torch and the networks are imported inside the command: `wmhkit --help` should not wait for them.

EXAMPLES = [
    "wmhkit selftrain scans/ -o runs/site --init sidefcn-flair   # adapt the model to a site, no labels",
]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "selftrain",
        help="train on unlabeled FLAIRs: pseudo-labels from normal-appearing white matter, noise-robust rounds",
        description="Annotation-free training (DeepWMH, Liu et al. 2024). Every FLAIR gets pseudo-labels "
        "(voxels abnormally bright against the scan's own normal-appearing white matter, written as "
        "RUN/pseudo/<stem>_desc-pseudo_mask.nii.gz); a network is trained on them with a noise-robust "
        "loss, then relabels the scans with its confident predictions for the next round. RUN/model.pt "
        "is the result: `wmhkit segment --model RUN`. Re-running the same command resumes.",
        epilog="examples:\n  wmhkit selftrain scans/ -o runs/selftrain\n"
        "  wmhkit selftrain scans/ -o runs/site --init sidefcn-flair --rounds 2\n"
        "  wmhkit selftrain scans/ -o runs/x --exclude 'patient19_*' --test labeled/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+",
                        help="folders of FLAIRs (BIDS, challenge layout, flat *FLAIR*.nii.gz) or files")
    parser.add_argument("-o", "--out", required=True, help="run folder (pseudo-labels, rounds, model.pt)")
    parser.add_argument("--init",
                        help="start from this model: a shipped name (sidefcn-flair), a model file or run folder")
    parser.add_argument("--rounds", type=int, default=2, help="training rounds (default 2)")
    parser.add_argument("--steps", type=int, help="steps of round 1 from scratch (default: the recipe's 1500)")
    parser.add_argument("--round-steps", type=int,
                        help="steps of later rounds and of a round from --init (default: a third of --steps)")
    parser.add_argument("--config", help="another recipe (TOML) instead of the built-in one")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe key")
    parser.add_argument("--test", action="append", default=[], metavar="DIR",
                        help="labeled folder scored after each round (reported only)")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="skip FLAIRs whose file name matches")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wmhkit.segment import resolve_model
    from wmhkit.selftrain.rounds import selftrain
    from wmhkit.train.config import ConfigError

    init = None
    if args.init:
        init = resolve_model(args.init, with_t1=False)
    for folder in args.test:
        if not Path(folder).is_dir():
            raise InputError(folder, "--test folder not found")
    try:
        model = selftrain(args.inputs, args.out, init=init, rounds=args.rounds, steps=args.steps,
                          round_steps=args.round_steps, config_path=args.config, overrides=args.set,
                          test=args.test, exclude=args.exclude, device=args.device, progress=not args.quiet)
    except ConfigError as error:
        raise InputError(args.config, str(error)) from None
    print(f"model: {model}  (use: wmhkit segment FLAIR --model {Path(args.out)})")
    return 0

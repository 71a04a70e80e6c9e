"""The `zir` command line. Thin: it parses arguments and calls the library; errors print as one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_models(args: argparse.Namespace) -> int:
    from zir.report_tables import models_table

    models_table(args.pattern, with_flops=not args.no_flops).print()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from zir.demo import run_demo

    run_demo(out_dir=args.out, steps=args.steps, seed=args.seed)
    return 0


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from zir.data.inspect import inspect_source, summary_lines

    plan = {"global": 2, "pipeline": args.pipeline} if args.pipeline else None
    info = inspect_source(args.source, args.png, plan=plan, limit=args.limit, data_root=args.data_root)
    print("\n".join(summary_lines(info)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="zir", description="Vision Transformers, self-supervised and cross-modal.")
    from zir import __version__

    parser.add_argument("--version", action="version", version=f"zir {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="list zoo models with parameters and GFLOPs")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'deit_*'")
    models.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
    models.set_defaults(func=_cmd_models)

    demo = sub.add_parser("demo", help="the main job on built-in data: train briefly and print a table")
    demo.add_argument("--out", default="runs/demo", help="run folder for weights and results (default runs/demo)")
    demo.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    data = sub.add_parser("data", help="look at datasets").add_subparsers(dest="data_command", required=True,
                                                                         metavar="ACTION")
    inspect = data.add_parser("inspect", help="counts, class balance, caption stats, bad files, and a PNG grid")
    inspect.add_argument("source", help="a built-in name (shapes, digits, cifar10, flickr8k), folder, table or shards")
    inspect.add_argument("--png", default=None, help="where to write the sample grid (default: none)")
    inspect.add_argument("--pipeline", default=None, help="also show two views of this augmentation (e.g. simclr, dino)")
    inspect.add_argument("--limit", type=int, default=5000, help="samples to read at most (default 5000)")
    inspect.add_argument("--data-root", default=None, help="folder holding cifar10/ and flickr8k/ (default $ZIR_DATA)")
    inspect.set_defaults(func=_cmd_data_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zir` console script."""
    from zir.errors import ZirError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZirError as err:
        print(f"zir: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zir: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `zir eval` and `zir explain` sub-commands: argument parsing and printing only, the work is in zir.eval."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a run, print the results table, write results.json and the report."""
    from zir.eval.report import write_report
    from zir.eval.run_eval import evaluate_run, results_table

    results = evaluate_run(args.run, args.tasks, data=args.data, data_root=args.data_root, limit=args.limit,
                           baseline=args.baseline)
    results_table(results, f"Evaluation of {args.run}").print()
    print(f"wrote {Path(args.run) / 'results.json'}")
    if not args.no_report:
        print(f"wrote {write_report(args.run, data=args.data, data_root=args.data_root)}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Write the attention / PCA picture of one image through a run's image tower."""
    from zir.eval.explain import explain_image, read_image
    from zir.eval.run_eval import image_size, image_tower, load_run

    run = load_run(args.run)
    _, tower = image_tower(run.model)
    side = image_size(tower)
    images = read_image(args.image, (side, side))
    out = Path(args.out) if args.out else Path(args.run) / "explain" / f"{Path(args.image).stem}.png"
    info = explain_image(tower, images, out)
    print(f"wrote {info['png']} (patch grid {info['grid'][0]}x{info['grid'][1]}, {info['heads']} heads, step {run.step})")
    return 0


def add_parsers(sub) -> None:
    """Add `eval` and `explain` to the `zir` sub-command parsers."""
    ev = sub.add_parser("eval", help="evaluate a run: zero-shot, retrieval, linear probe, k-NN; results.json and report.html",
                        description="Evaluate RUN's newest checkpoint, write RUN/results.json and RUN/report.html.")
    ev.add_argument("run", help="run folder (from zir train)")
    ev.add_argument("--tasks", default="zeroshot,retrieval,linear,knn",
                    help="comma-separated: zeroshot, retrieval, linear, knn (default all)")
    ev.add_argument("--data", default=None, help="evaluate on this source instead of the run's (e.g. shapes, cifar10)")
    ev.add_argument("--data-root", default=None, help="folder holding cifar10/ and flickr8k/ (default $ZIR_DATA)")
    ev.add_argument("--limit", type=int, default=None, help="samples per split at most (default all)")
    ev.add_argument("--baseline", action="store_true", help="also evaluate the same architecture at random init")
    ev.add_argument("--no-report", action="store_true", help="do not write report.html")
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("explain", help="attention rollout, per-head CLS attention and patch PCA of one image")
    ex.add_argument("run", help="run folder (from zir train)")
    ex.add_argument("image", help="an image file (resized to the tower's input size)")
    ex.add_argument("--out", default=None, help="PNG to write (default RUN/explain/IMAGE.png)")
    ex.set_defaults(func=cmd_explain)

"""The `zir` command line. Thin: it parses arguments and calls the library; errors print as one line."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_models(args: argparse.Namespace) -> int:
    from zir.report_tables import models_table

    models_table(args.pattern, with_flops=not args.no_flops).print()
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from zir.recipes import recipe_path
    from zir.report_tables import recipes_table

    if args.path:
        print(recipe_path(args.path).resolve())
        return 0
    recipes_table().print()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from zir.demo import run_demo

    from zir.demo import DEFAULT_STEPS

    run_demo(out_dir=args.out, steps=DEFAULT_STEPS if args.steps is None else args.steps, seed=args.seed,
             threads=args.threads)
    return 0


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from zir.data.inspect import inspect_source, summary_lines

    plan = {"global": 2, "pipeline": args.pipeline} if args.pipeline else None
    info = inspect_source(args.source, args.png, plan=plan, limit=args.limit, data_root=args.data_root)
    print("\n".join(summary_lines(info)))
    return 0


def _cmd_data_tokenizer(args: argparse.Namespace) -> int:
    from zir.data import open_source
    from zir.data.tokenizer import train_bpe

    source = open_source(args.source, data_root=args.data_root)
    tokenizer = train_bpe(source.iter_captions(), vocab_size=args.vocab_size, context_length=args.context_length)
    path = tokenizer.save(args.out)
    print(f"{path}: byte-level BPE, {tokenizer.vocab_size} tokens, context {args.context_length}, from {source.name}'s "
          f"captions; set the text tower's vocab_size={tokenizer.vocab_size} and data.tokenizer={path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from zir.errors import ConfigError
    from zir.train import TrainingInterrupted, resume, train

    progress = False if args.no_progress else None
    overrides = list(args.overrides)
    try:
        if args.resume:
            if args.recipe:
                if "=" not in args.recipe:
                    raise ConfigError(f"zir train --resume RUN takes overrides only (key=value); got recipe {args.recipe!r}")
                overrides.insert(0, args.recipe)
            if args.import_factory:
                _import_factory(args.import_factory, Path(args.resume) / "config.yaml", overrides)
            summary = resume(args.resume, overrides, progress=progress)
        else:
            if not args.recipe:
                raise ConfigError("zir train needs a recipe (a shipped name such as mae, see zir recipes, or a YAML path) "
                                  "or --resume RUN")
            from zir.config import load_config

            if args.import_factory:
                from zir.recipes import recipe_path

                _import_factory(args.import_factory, recipe_path(args.recipe), overrides)
            cfg = load_config(args.recipe, overrides)
            if args.print_config:
                import yaml

                print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
                return 0
            out = args.out or _free_run_dir(cfg.name)
            summary = train(cfg, out, progress=progress)
    except TrainingInterrupted as stop:
        print(f"zir: {stop}", file=sys.stderr)
        return 128 + int(stop.signum)
    except OSError as err:  # a full disk while writing metrics or status (checkpoints say so themselves)
        if err.errno != errno.ENOSPC:
            raise
        print(f"zir: error: no space left on device writing {err.filename or args.resume or args.out or 'the run folder'}; "
              f"the checkpoints already written are kept", file=sys.stderr)
        return 2
    if summary and _is_rank0():
        _print_summary(summary)
    return 0


def _import_factory(target: str, recipe: Path, overrides: list[str]) -> None:
    """--import-factory module:function: import it and register it under the recipe's model.factory name.

    The one place zir imports a module by name, and only because the user typed it on the command line.
    """
    from zir.config import apply_overrides, read_yaml
    from zir.errors import ConfigError
    from zir.models.factories import import_factory

    if not recipe.is_file():
        raise ConfigError(f"{recipe.parent} is not a run folder (no config.yaml)" if recipe.name == "config.yaml"
                          else f"recipe {recipe} does not exist")
    raw = read_yaml(recipe)
    model = apply_overrides(raw if isinstance(raw, dict) else {}, overrides).get("model")
    name = model.get("factory") if isinstance(model, dict) else None
    if not name or not isinstance(name, str):
        raise ConfigError(f"--import-factory {target}: {recipe} sets no model.factory; name the factory there "
                          "(e.g. model.factory=my_net) and the function is registered under that name")
    import_factory(target, name)


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _free_run_dir(name: str) -> str:
    """runs/NAME, or runs/NAME-2, -3, ... when taken; NAME is a plain name, so the run stays inside runs/."""
    from zir.config import check_run_name

    base = Path("runs") / check_run_name(name)
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{name}-{i}")
    return str(out)


def _param_line(summary: dict) -> str:
    """'N trainable of M' from a run summary ('-' for a summary written before the counts were kept)."""
    trainable, total = summary.get("trainable_params"), summary.get("total_params")
    if not isinstance(trainable, int) or not isinstance(total, int) or not total:
        return "-"
    return f"{trainable:,} trainable of {total:,} ({100.0 * trainable / total:.2f}%)"


def _print_summary(summary: dict) -> None:
    from zir.report_tables import TextTable

    best = summary.get("best") or {}
    loss = summary.get("final_loss")
    rate = summary.get("samples_per_s")
    table = TextTable(title=f"Run {summary['name']} finished", columns=["", ""])
    table.rows = [
        ["run folder", summary["run"]],
        ["steps", str(summary["steps"])],
        ["time", f"{summary['time_s']:.1f} s"],
        ["samples/s", f"{rate:.0f}" if rate else "-"],
        ["final loss", f"{loss:.4f}" if loss is not None else "-"],
        ["best loss", f"{best['loss']:.4f} at step {best['step']}" if best else "-"],
        ["skipped steps", str(summary["skipped_steps"])],
        ["parameters", _param_line(summary)],
        ["bad data", summary["data"]],
        ["checkpoint", summary["checkpoint"]],
    ]
    table.print()


def _cmd_runs(args: argparse.Namespace) -> int:
    import os

    from zir.report_tables import TextTable
    from zir.train.runs import list_runs

    rows = list_runs(args.root)
    table = TextTable(title=f"Runs under {args.root}", columns=["run", "recipe", "status", "step", "best loss", "last loss", "updated"])
    for r in rows:
        best = r["best"]
        last = r["last"].get("loss") if r["last"] else None
        run = os.path.relpath(r["run"], args.root)
        table.rows.append([run if run != "." else r["run"], r["name"], r["status"], f"{r['step']}/{r['total_steps']}",
                           f"{best['loss']:.4f} @ {best['step']}" if best else "-",
                           f"{last:.4f}" if isinstance(last, (int, float)) else "-", r["updated"][5:16].replace("T", " ")])
    if not rows:
        table.caption = "no runs yet: start one with zir train mae"
    table.print()
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from zir.train.runs import export_run

    import zir

    if args.format == "hf":
        from zir.interop.export import export_hf

        folder, kind = export_hf(args.run, args.out, ema=args.ema, license=args.license)
        print(f"wrote {folder} as {kind} (config.json, model.safetensors, README.md); load it with zir.load({str(folder)!r})")
        return 0
    if args.format == "open_clip":
        from zir.interop.export import export_open_clip

        folder = export_open_clip(args.run, args.out, ema=args.ema, license=args.license)
        print(f"wrote {folder} (open_clip_model.safetensors, open_clip_config.json, tokenizer.json, README.md)")
        return 0
    if args.format == "onnx":
        from zir.interop.onnx_export import export_onnx

        paths = export_onnx(args.run, args.out, ema=args.ema)
        print(f"wrote {', '.join(str(p) for p in paths)} (dynamic batch; run them with onnxruntime)")
        return 0

    path = export_run(args.run, args.out, ema=args.ema)
    loader = "zir.load" if hasattr(zir, "load") else "zir.train.runs.load"
    print(f"wrote {path} and {path.with_name('config.yaml')}; load it with {loader}({str(path)!r})")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with zir's error format: one `zir: error:` line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"zir: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = _Parser(prog="zir", description="Vision Transformers, self-supervised and cross-modal.")
    from zir import __version__

    parser.add_argument("--version", action="version", version=f"zir {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="list zoo models with parameters and GFLOPs")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'deit_*'")
    models.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
    models.set_defaults(func=_cmd_models)

    recipes = sub.add_parser("recipes", help="list the shipped recipes (zir train NAME), one line each")
    recipes.add_argument("--path", default=None, metavar="NAME", help="print where recipe NAME lives, to copy and edit")
    recipes.set_defaults(func=_cmd_recipes)

    demo = sub.add_parser("demo", help="the main job on built-in data: train briefly and print a table")
    demo.add_argument("--out", default="runs/demo", help="run folder for weights and results (default runs/demo)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's, printed in its title)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: tiny towers gain nothing from more)")
    demo.set_defaults(func=_cmd_demo)
    data = sub.add_parser("data", help="look at datasets").add_subparsers(dest="data_command", required=True,
                                                                         metavar="ACTION")
    inspect = data.add_parser("inspect", help="counts, class balance, caption stats, bad files, and a PNG grid")
    inspect.add_argument("source", help="a built-in name (shapes, digits, cifar10, flickr8k, fsdd, av_digits), folder, table or shards")
    inspect.add_argument("--png", default=None, help="where to write the sample grid (default: none)")
    inspect.add_argument("--pipeline", default=None, help="also show two views of this augmentation (e.g. simclr, dino)")
    inspect.add_argument("--limit", type=int, default=5000, help="samples to read at most (default 5000)")
    inspect.add_argument("--data-root", default=None, help="folder holding cifar10/, flickr8k/ and fsdd/ (default $ZIR_DATA)")
    inspect.set_defaults(func=_cmd_data_inspect)
    tok = data.add_parser("tokenizer", help="train a byte-level BPE tokenizer on a source's captions")
    tok.add_argument("source", help="a captioned source (shapes, flickr8k, a caption table or shards)")
    tok.add_argument("--out", required=True, help="where to write tokenizer.json")
    tok.add_argument("--vocab-size", type=int, default=4096, help="tokens, including 256 bytes and 3 special ones")
    tok.add_argument("--context-length", type=int, default=32, help="tokens per caption after padding or cutting")
    tok.add_argument("--data-root", default=None, help="folder holding cifar10/, flickr8k/ and fsdd/ (default $ZIR_DATA)")
    tok.set_defaults(func=_cmd_data_tokenizer)

    tr = sub.add_parser("train", help="train a recipe into a run folder, or resume one",
                        description="Train RECIPE with key=value overrides (e.g. optim.lr=5e-4 train.steps=50), or continue a run.")
    tr.add_argument("recipe", nargs="?", help="a shipped recipe such as mae (see zir recipes) or a recipe YAML path")
    tr.add_argument("overrides", nargs="*", help="dotted overrides: section.field=value")
    tr.add_argument("--out", default=None, help="run folder (default runs/NAME, numbered when taken)")
    tr.add_argument("--resume", default=None, metavar="RUN", help="continue the run in this folder from its newest checkpoint")
    tr.add_argument("--no-progress", action="store_true", help="print a line every train.log_every steps instead of a bar")
    tr.add_argument("--print-config", action="store_true", help="print the resolved config (recipe + overrides) and stop")
    tr.add_argument("--import-factory", default=None, metavar="MODULE:FUNCTION",
                    help="import FUNCTION from MODULE and build the model with it, registered under the recipe's "
                         "model.factory name (a recipe or run folder never imports code by itself)")
    tr.set_defaults(func=_cmd_train)

    runs = sub.add_parser("runs", help="list run folders with status and best loss")
    runs.add_argument("root", nargs="?", default="runs", help="folder holding runs (default runs)")
    runs.set_defaults(func=_cmd_runs)

    export = sub.add_parser("export", help="one safetensors file plus config from a run, loadable with zir.load")
    export.add_argument("run", help="run folder")
    export.add_argument("--out", default=None, help="file or folder to write (default RUN/export/model.safetensors; --format hf: RUN/export_hf; "
                             "--format onnx: RUN/export_onnx; --format open_clip: RUN/export_open_clip)")
    export.add_argument("--ema", action="store_true", help="export the weight EMA (runs with train.ema)")
    export.add_argument("--format", choices=("zir", "hf", "open_clip", "onnx"), default="zir",
                        help="zir: one safetensors file (default); hf: a transformers folder with a model card; "
                             "open_clip: open_clip's state dict (a CLIP pair); onnx: each tower as ONNX "
                             "(docs/interop.md)")
    export.add_argument("--license", default="other", help="the licence field of the hf model card (default: other)")
    export.set_defaults(func=_cmd_export)

    from zir.eval.commands import add_parsers as add_eval_parsers

    add_eval_parsers(sub)  # zir eval, zir explain
    from zir.search.commands import add_parsers as add_search_parsers

    add_search_parsers(sub)  # zir embed, zir search, zir dedup, zir serve
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `zir` console script."""
    from zir.errors import ZirError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also come after options: zir train R --out RUN optim.lr=1e-3
        loose = [e for e in extra if not e.startswith("-")]
        if getattr(args, "command", None) == "train" and loose == extra:
            bad = [e for e in extra if "=" not in e]
            if bad:
                parser.exit(2, f"zir: error: override {bad[0]!r}: expected section.field=value, e.g. optim.lr=5e-4\n")
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
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

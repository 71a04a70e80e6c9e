"""The `zir eval` and `zir explain` sub-commands: argument parsing and printing only, the work is in zir.eval."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a run, print the results table, write results.json and the report."""
    from zir.eval.report import write_report
    from zir.eval.run_eval import evaluate_run, results_table

    results = evaluate_run(args.run, args.tasks, data=args.data, data_root=args.data_root, limit=args.limit,
                           baseline=args.baseline, teacher=args.teacher, rerank=args.rerank)
    results_table(results, f"Evaluation of {args.run}").print()
    print(f"wrote {Path(args.run) / 'results.json'}")
    if not args.no_report:
        print(f"wrote {write_report(args.run, data=args.data, data_root=args.data_root)}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Write the attention / PCA picture of one image through a run's image tower (or of a .wav through its
    audio tower)."""
    from zir.eval.explain import explain_image, read_image
    from zir.eval.run_eval import image_size, image_tower, load_run

    run = load_run(args.run)
    if Path(args.image).suffix.lower() in (".wav", ".wave", ".flac", ".ogg", ".oga"):
        return _explain_audio(run, args)
    _, tower = image_tower(run.model)
    side = image_size(tower)
    images = read_image(args.image, (side, side))
    out = Path(args.out) if args.out else Path(args.run) / "explain" / f"{Path(args.image).stem}.png"
    info = explain_image(tower, images, out)
    print(f"wrote {info['png']} (patch grid {info['grid'][0]}x{info['grid'][1]}, {info['heads']} heads, step {run.step})")
    if args.text:
        _explain_texts(run, tower, images, args.text, out.with_name(f"{out.stem}-text.png"))
    return 0


def _explain_texts(run, tower, images, texts: list[str], out: Path) -> None:
    """Write and print which patches moved each text's score (needs an image-text objective and tokenizer)."""
    import torch

    from zir.eval.run_eval import EvalError, image_text_objective, image_tower
    from zir.eval.saliency import explain_text

    obj = image_text_objective(run.model, image_tower(run.model)[0])
    if obj is None:
        raise EvalError(f"--text needs a run with an image-text objective (clip, siglip, slip, coca, imagebind); {run.run_dir} has none")
    tokenizer = run.tokenizer
    if tokenizer is None:
        raise EvalError(f"--text needs the run's tokenizer; {run.run_dir} has no tokenizer.json and no data.tokenizer")
    with torch.no_grad():
        embeddings = obj.text_encoder(tokenizer)(texts)
    info = explain_text(tower, obj.project_image, images, texts, embeddings, out)
    for text, score in zip(texts, info["scores"]):
        print(f"  {score:+.3f}  {text}")
    print(f"wrote {info['png']} (which patches raised each text's score)")


def _explain_audio(run, args: argparse.Namespace) -> int:
    """A recording's spectrogram with rollout over it; with --text, each text's score and relevance map."""
    import torch

    from zir.eval.explain_audio import explain_spectrograms, overlay, read_wav, spectrogram_panel, spectrogram_plan
    from zir.eval.pictures import save_panels
    from zir.eval.run_eval import EvalError, image_text_objective
    from zir.eval.run_loading import scored_tower
    from zir.eval.saliency import text_relevance

    name, tower = scored_tower(run.model, "audio")
    if tower.modality != "audio":
        raise EvalError(f"{args.image} is audio but {run.run_dir} has no audio tower")
    mels = read_wav(args.image, spectrogram_plan(run.model, tower, run.config))
    out = Path(args.out) if args.out else Path(args.run) / "explain" / f"{Path(args.image).stem}.png"
    info = explain_spectrograms(tower, mels, out)
    print(f"wrote {info['png']} (patch grid {info['grid'][0]}x{info['grid'][1]} frequency x time, step {run.step})")
    if not args.text:
        return 0
    obj = image_text_objective(run.model, name)
    if obj is None or run.tokenizer is None:
        raise EvalError(f"--text needs a run with an audio-text objective or an imagebind text tower, and its "
                        f"tokenizer; {run.run_dir} has " + ("no tokenizer" if obj is not None else "neither"))
    with torch.no_grad():
        texts = torch.nn.functional.normalize(obj.text_encoder(run.tokenizer)(args.text).float(), dim=-1)
    rows, scores = [("spectrogram", spectrogram_panel(mels[0]))], []
    for text, embedding in zip(args.text, texts):
        score, relevance = text_relevance(tower, obj.project_image, mels, embedding)
        scores.append(float(score[0]))
        rows.append((f"{float(score[0]):+.2f} {text}"[:40], overlay(mels[0], relevance[0])[1]))
    probs = torch.softmax(100.0 * torch.tensor(scores), dim=0)  # CLIP's zero-shot temperature
    for text, score, p in sorted(zip(args.text, scores, probs.tolist()), key=lambda x: -x[1]):
        print(f"  {score:+.3f}  {100 * p:5.1f}%  {text}")
    path = save_panels([rows], out.with_name(f"{out.stem}-text.png"), scale=3)
    print(f"wrote {path} (which patches raised each text's score)")
    return 0


def add_parsers(sub) -> None:
    """Add `eval` and `explain` to the `zir` sub-command parsers."""
    ev = sub.add_parser("eval", help="evaluate a run: zero-shot, retrieval, linear probe, k-NN; results.json and report.html",
                        description="Evaluate RUN's newest checkpoint, write RUN/results.json and RUN/report.html.")
    ev.add_argument("run", help="run folder (from zir train)")
    ev.add_argument("--tasks", default="zeroshot,retrieval,linear,knn",
                    help="comma-separated: zeroshot, retrieval, linear, knn (default these four), finetune (the "
                         "run's own classifier head, from the supervised objective), segment (a linear "
                         "probe of patch tokens against shapes' per-pixel masks: mIoU), av_retrieval (audio<->image, "
                         "an imagebind run on av_digits)")
    ev.add_argument("--teacher", action="store_true",
                    help="evaluate the EMA teacher (dino, ibot) instead of the student; results keyed TASK_teacher")
    ev.add_argument("--data", default=None, help="evaluate on this source instead of the run's (e.g. shapes, cifar10)")
    ev.add_argument("--data-root", default=None, help="folder holding cifar10/, flickr8k/ and fsdd/ (default $ZIR_DATA)")
    ev.add_argument("--limit", type=int, default=None, help="samples per split at most (default all)")
    ev.add_argument("--rerank", type=int, default=0, metavar="K",
                    help="retrieval also re-ranks each query's top K by the run's itm objective (reranked_* metrics)")
    ev.add_argument("--baseline", action="store_true", help="also evaluate the same architecture at random init")
    ev.add_argument("--no-report", action="store_true", help="do not write report.html")
    ev.set_defaults(func=cmd_eval)

    ex = sub.add_parser("explain", help="attention rollout, per-head CLS attention and patch PCA of one image; "
                                               "a .wav: its spectrogram with attention rollout over it")
    ex.add_argument("run", help="run folder (from zir train)")
    ex.add_argument("image", help="an image file (resized to the tower's input size), or a .wav/.flac/.ogg (read as the run's audio views read it)")
    ex.add_argument("--out", default=None, help="PNG to write (default RUN/explain/IMAGE.png)")
    ex.add_argument("--text", action="append", default=[], metavar="TEXT",
                    help="also show which patches raised this text's score (repeatable; image-text runs; for a .wav, "
                         "audio-text or imagebind runs, with each text's zero-shot probability)")
    ex.set_defaults(func=cmd_explain)

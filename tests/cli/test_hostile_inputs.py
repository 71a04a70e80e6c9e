"""Every command against hostile and broken inputs: one table of (id, builder, command, expectation) rows.

Each row builds its input with tests/cli/hostile/corpus.py in a fresh working folder, runs `zir.cli.main(argv)`
in process from that folder, and checks what the Trust issue demands of every input:
- no traceback, ever; a user error exits 2 with exactly one stderr line starting `zir: error:`;
- bad samples are skipped and counted exactly (`zir data inspect`'s `usable` and `skipped` lines);
- nothing is written, changed or deleted outside the folders the row allows (the whole tmp_path is compared);
- nothing named in a file is imported or run (the payload module would leave PAYLOAD_RAN behind).

To change what a row expects, edit its `Expect`; `waits` names the fix (helper branch) a row needed.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostile import corpus as c
from zir.cli import main


@dataclass(frozen=True)
class Expect:
    """What must happen: exit status (None: 0, or 2 with the one-line error), error text, inspect counts,
    the folders (relative to the working folder) where files may appear or change."""

    status: int | None = 2
    error: str = ""
    usable: int | None = None
    skipped: dict | int | None = None  # reason -> count, or the total when the reason is not pinned
    writes: tuple[str, ...] = ()
    waits: str = ""  # the fix a row waits on or came with, for the record


def error(text: str = "", waits: str = "") -> Expect:
    """A user error: exit 2, one `zir: error:` line containing `text`, nothing written."""
    return Expect(2, text, waits=waits)


def train_error(text: str = "", waits: str = "") -> Expect:
    """A user error of zir train: as `error`, but the run folder (out/ or runs/) may hold its config and log."""
    return Expect(2, text, writes=("out", "runs"), waits=waits)


def inspected(usable: int, skipped: dict | int | None = None, waits: str = "") -> Expect:
    """`zir data inspect` succeeds with exactly `usable` samples and these skips (none when {})."""
    return Expect(0, usable=usable, skipped={} if skipped is None else skipped, waits=waits)


def contained(*writes: str, status: int | None = None, waits: str = "") -> Expect:
    """Runs or refuses (status None: either), writing only under `writes`."""
    return Expect(status, writes=writes, waits=waits)


@dataclass(frozen=True)
class Row:
    id: str
    build: c.Builder
    argv: tuple[str, ...]
    expect: Expect


def R(id, build, argv, expect):  # noqa: N802 - reads as a table row
    return Row(id, build, tuple(argv.split()) if isinstance(argv, str) else tuple(argv), expect)


TRAIN = "train r.yaml --out out --no-progress"
INSPECT = "data inspect"
EVAL = "eval run --tasks knn --limit 8 --no-report"
EXPLAIN = "explain run pic.png --out pic-explained.png"
STEPS_1 = "train.steps=1"
SYM, LNK = tarfile.SYMTYPE, tarfile.LNKTYPE
MISSING = "missing file"
NOT_IMAGE = "not an image"
CORRUPT = "corrupt or truncated image"
TOO_LARGE = "image too large"
DAMAGED = "damaged shard (ReadError)"

ROWS = [
    # -- images in a folder source: each bad file is one counted skip, the two good ones stay usable
    R("img-truncated-jpeg", c.image_folder({"cut.jpg": c.TRUNCATED_JPEG}), f"{INSPECT} imgs", inspected(2, {CORRUPT: 1})),
    R("img-truncated-png", c.image_folder({"cut.png": c.TRUNCATED_PNG}), f"{INSPECT} imgs", inspected(2, {CORRUPT: 1})),
    R("img-zero-bytes", c.image_folder({"empty.png": b""}), f"{INSPECT} imgs", inspected(2, {NOT_IMAGE: 1})),
    R("img-text-named-jpg", c.image_folder({"text.jpg": c.TEXT_AS_IMAGE}), f"{INSPECT} imgs", inspected(2, {NOT_IMAGE: 1})),
    R("img-huge-header", c.image_folder({"bomb.png": c.huge_header_png}), f"{INSPECT} imgs", inspected(2, {TOO_LARGE: 1})),
    R("img-200000x1", c.image_folder({"wide.png": c.wide_png}), f"{INSPECT} imgs", inspected(3)),
    R("img-all-bad", c.image_folder({"a.jpg": c.TEXT_AS_IMAGE, "b.png": b""}, good=0), f"{INSPECT} imgs",
      inspected(0, {NOT_IMAGE: 2})),
    R("img-folder-empty", c.image_folder({"notes.txt": b"no images here"}, good=0), f"{INSPECT} imgs",
      error("no image files found")),
    # -- images given to zir explain
    R("explain-text-named-png", c.image_file("pic.png", c.TEXT_AS_IMAGE, with_run=True), EXPLAIN, error("cannot be decoded")),
    R("explain-zero-bytes", c.image_file("pic.png", b"", with_run=True), EXPLAIN, error("cannot be decoded")),
    R("explain-truncated-png", c.image_file("pic.png", c.TRUNCATED_PNG, with_run=True), EXPLAIN, error("pic.png")),
    R("explain-huge-header", c.image_file("pic.png", c.huge_header_png, with_run=True), EXPLAIN, error("pic.png", waits="C")),
    R("explain-200000x1", c.image_file("pic.png", c.wide_png, with_run=True), EXPLAIN, contained("pic-explained.png")),
    R("explain-missing-image", c.image_file("other.png", c.png_bytes, with_run=True), EXPLAIN, error("does not exist")),

    # -- caption tables
    R("table-missing-images", c.caption_table("t.csv", c.csv_text(c.GOOD_ROWS + [("gone.png", "x"), ("gone2.png", "y")])),
      f"{INSPECT} tab/t.csv", inspected(2, {MISSING: 2})),
    R("table-empty-caption", c.caption_table("t.csv", c.csv_text(c.GOOD_ROWS + [("ok_2.png", " ")]), images=3),
      f"{INSPECT} tab/t.csv", inspected(2, {"no usable caption": 1})),
    R("table-missing-columns", c.caption_table("t.csv", "a,b\n1,2\n"), f"{INSPECT} tab/t.csv", error("no image column")),
    R("table-empty-file", c.caption_table("t.csv", b""), f"{INSPECT} tab/t.csv", error("no rows")),
    R("table-header-only", c.caption_table("t.csv", "image,caption\n"), f"{INSPECT} tab/t.csv", error("no rows")),
    R("table-binary", c.caption_table("t.csv", bytes(range(256)) * 8), f"{INSPECT} tab/t.csv", error("t.csv")),
    R("table-nul-bytes", c.caption_table("t.csv", "image,caption\nok_0.png,a\x00b\n"), f"{INSPECT} tab/t.csv",
      inspected(1)),
    R("table-bom", c.caption_table("t.csv", "\ufeff" + c.csv_text(c.GOOD_ROWS)), f"{INSPECT} tab/t.csv",
      inspected(2, waits="C")),
    R("table-huge-field", c.caption_table("t.csv", c.csv_text(c.GOOD_ROWS[:1] + [("ok_1.png", "word " * 40_000)])),
      f"{INSPECT} tab/t.csv", inspected(2, waits="C")),
    R("table-dotdot-and-absolute", c.caption_table("t.csv", c.escaping_rows), f"{INSPECT} tab/t.csv",
      error("outside the table's folder", waits="C")),
    R("table-unknown-suffix", c.caption_table("t.xlsx", b"PK\x03\x04"), f"{INSPECT} table:tab/t.xlsx", error("t.xlsx")),
    R("table-jsonl-bad-line", c.caption_table("t.jsonl", '{"image": "ok_0.png", "caption": "a"}\n{nope\n'),
      f"{INSPECT} tab/t.jsonl", error("line 2")),
    R("table-jsonl-non-object-rows", c.caption_table("t.jsonl", '{"image": "ok_0.png", "caption": "a"}\n[1, 2]\n"x"\n'),
      f"{INSPECT} tab/t.jsonl", inspected(1, {"row is not a JSON object": 2}, waits="C")),
    R("tokenizer-binary-table", c.caption_table("t.csv", bytes(range(256)) * 8), "data tokenizer tab/t.csv --out tok",
      error("t.csv")),

    # -- shards
    R("shard-good", c.shard("a.tar", c.good_samples(3)), f"{INSPECT} shards/a.tar", inspected(3)),
    R("shard-cut-tar", c.shard("a.tar", c.cut_after_members(6)), f"{INSPECT} shards/a.tar", inspected(2, {DAMAGED: 1})),
    R("shard-cut-gzip", c.shard("a.tar.gz", c.cut_after_members(6, gz=True)), f"{INSPECT} shards/a.tar.gz",
      inspected(2, 1)),
    R("shard-cut-header", c.shard("a.tar", lambda: c.open_tar(c.good_samples(2)) + b"\x01" * 300),
      f"{INSPECT} shards/a.tar", inspected(2, 1, waits="C")),
    R("shard-garbled-header", c.shard("a.tar", lambda: c.open_tar(c.good_samples(2)) + b"\x01" * 1024),
      f"{INSPECT} shards/a.tar", inspected(2, 1, waits="C")),
    R("shard-not-a-tar", c.shard("a.tar", lambda: c.TEXT_AS_IMAGE), f"{INSPECT} shards/a.tar", inspected(0, 1)),
    R("shard-hardlink", c.shard("a.tar", c.good_samples(2) + [c.link("s9.png", "s0.png", LNK)]),
      f"{INSPECT} shards/a.tar", inspected(3, waits="C")),
    R("shard-hardlink-dangling", c.shard("a.tar", c.good_samples(2) + [c.link("s9.png", "elsewhere.png", LNK)]),
      f"{INSPECT} shards/a.tar", inspected(2, {"hard link to a member not in the shard": 1}, waits="C")),
    R("shard-symlink", c.shard("a.tar", c.good_samples(2) + [c.link("s9.png", "/etc/passwd", SYM)]),
      f"{INSPECT} shards/a.tar", inspected(2, {"symlink member": 1}, waits="C")),
    R("shard-oversize-member", c.shard("a.tar.gz", c.oversize_member_shard), f"{INSPECT} shards/a.tar.gz",
      inspected(2, {"member over 67,108,864 bytes": 1}, waits="C")),
    R("shard-header-claims-50gb", c.shard("a.tar", lambda: c.open_tar(c.good_samples(2))
                                        + c.oversize_header("s9.png", 50 * 2 ** 30)),
      f"{INSPECT} shards/a.tar", inspected(2, {"member over 67,108,864 bytes": 1, DAMAGED: 1}, waits="C")),
    R("shard-member-dotdot-name", c.shard("a.tar", c.good_samples(1) + c.sample("../../escaped", seed=5, txt="x")),
      f"{INSPECT} shards/a.tar", inspected(2)),
    R("shard-label-not-integer", c.shard("a.tar", c.good_samples(2) + c.sample("s9", cls="abc")),
      f"{INSPECT} shards/a.tar", inspected(2, {"label is not an integer": 1})),
    R("shard-json-label-list", c.shard("a.tar", c.good_samples(2) + c.sample("s9", json='{"label": [1, 2]}')),
      f"{INSPECT} shards/a.tar", inspected(2, {"label is not an integer": 1}, waits="C")),
    R("shard-json-label-object", c.shard("a.tar", c.good_samples(2) + c.sample("s9", json='{"label": {"a": 1}}')),
      f"{INSPECT} shards/a.tar", inspected(2, {"label is not an integer": 1}, waits="C")),
    R("shard-no-image", c.shard("a.tar", c.good_samples(2) + [("s9.txt", b"caption only")]),
      f"{INSPECT} shards/a.tar", inspected(2, {"no image or audio in sample": 1})),
    R("shard-corrupt-image", c.shard("a.tar", c.good_samples(2) + [("s9.png", c.TEXT_AS_IMAGE)]),
      f"{INSPECT} shards/a.tar", inspected(2, {NOT_IMAGE: 1})),
    R("shard-missing", c.with_files(), f"{INSPECT} shards/none.tar", error("none.tar")),
    R("tokenizer-cut-shard", c.shard("a.tar", c.cut_after_members(6)),
      "data tokenizer shards/a.tar --out tok --vocab-size 300", contained("tok", status=0)),

    # -- recipes
    R("recipe-bad-yaml", c.recipe(text="model: [unclosed\n"), TRAIN, train_error("not valid YAML")),
    R("recipe-not-a-mapping", c.recipe(text="- a\n- b\n"), TRAIN, train_error("expected a mapping")),
    R("recipe-binary", c.recipe(text=bytes(range(256)) * 4), TRAIN, train_error("r.yaml")),
    R("recipe-empty", c.recipe(text=""), TRAIN, train_error("train.steps")),
    R("recipe-missing", c.with_files(), TRAIN, train_error("recipe r.yaml does not exist")),
    R("resume-binary-config", c.damaged_run(a=c.replace_file("config.yaml", bytes(range(256)) * 4)),
      "train --resume run --no-progress", error("config.yaml")),
    R("eval-binary-config", c.damaged_run(a=c.replace_file("config.yaml", bytes(range(256)) * 4)), EVAL,
      error("config.yaml")),
    R("export-binary-config", c.damaged_run(a=c.replace_file("config.yaml", bytes(range(256)) * 4)), "export run",
      error("config.yaml")),
    R("recipe-tokenizer-garbage", lambda root, kit: c.write(root, "tok.json", bytes(range(256))),
      f"train clip data.tokenizer=tok.json {STEPS_1} --out out --no-progress",
      train_error("tok.json")),
    R("recipe-batch-zero", c.recipe(), TRAIN + " data.batch_size=0", train_error("data.batch_size=0")),
    R("recipe-unknown-top-key", c.recipe(modle={"x": 1}), TRAIN, train_error("unknown section 'modle'")),
    R("recipe-wrong-type", c.recipe(train__steps="many"), TRAIN, train_error("train.steps='many'")),
    R("recipe-section-not-mapping", c.recipe(optim=5), TRAIN, train_error("optim: expected a mapping")),
    R("recipe-model-not-mapping", c.recipe(model=5), TRAIN, train_error("model")),
    R("recipe-lr-inf", c.recipe(optim__lr=float("inf")), TRAIN, train_error("optim.lr", waits="B")),
    R("recipe-lr-nan", c.recipe(optim__lr=float("nan")), TRAIN, train_error("optim.lr")),
    R("recipe-unknown-model", c.recipe(model__towers__image__model="vit_nope"), TRAIN, train_error("vit_nope")),
    R("recipe-unknown-objective", c.recipe(model__objectives={"nope": {"weight": 1.0}}), TRAIN, train_error("nope")),
    R("recipe-unknown-source", c.recipe(data__source="no_such_data"), TRAIN, train_error("no_such_data")),
    R("recipe-unknown-data-option", c.recipe(data__options={"size": 32, "n": 8, "colour_mode": "x"}), TRAIN,
      train_error("colour_mode", waits="C")),
    R("recipe-shipped-with-folder-source", c.image_folder({}),
      f"train mae data.source=imgs data.batch_size=2 {STEPS_1} --out out --no-progress",
      contained("out", status=0, waits="C")),
    R("recipe-name-dotdot", c.recipe(name="../../escaped"), "train r.yaml --no-progress", train_error("name=", waits="A")),
    R("recipe-name-absolute", c.recipe(name=lambda root: str(root.parent / "abs_escape")), "train r.yaml --no-progress",
      train_error("name=", waits="A")),
    R("recipe-factory-os-system", c.recipe(model__factory="os:system"), TRAIN, train_error("model.factory", waits="A")),
    R("recipe-factory-payload", c.with_files(c.payload, c.recipe(model__factory=c.PAYLOAD_FACTORY)), TRAIN,
      train_error("model.factory", waits="A")),
    R("recipe-out-is-a-file", c.with_files(c.recipe(), lambda root, kit: c.write(root, "out", "keep me")), TRAIN,
      error("out", waits="B")),

    # -- overrides
    R("override-no-equals", c.recipe(), f"{TRAIN} optimlr", train_error("override 'optimlr': expected section.field=value")),
    R("override-empty-key", c.recipe(), f"{TRAIN} =5", train_error("expected section.field=value")),
    R("override-unknown-field", c.recipe(), f"{TRAIN} optim.lrr=1", train_error("did you mean optim.lr")),
    R("override-unknown-section", c.recipe(), f"{TRAIN} foo.bar=1", train_error("unknown section 'foo'")),
    R("override-into-a-number", c.recipe(), f"{TRAIN} optim.lr.x=1", train_error("optim.lr={'x': 1}: expected a number")),
    R("override-bad-yaml-value", c.recipe(), f"{TRAIN} optim.lr=[", train_error("optim.lr='['")),
    R("override-lr-inf", c.recipe(), f"{TRAIN} optim.lr=inf", train_error("optim.lr", waits="B")),
    R("override-depth-abc", c.recipe(), f"{TRAIN} model.towers.image.depth=abc", train_error("depth", waits="B")),
    R("override-factory-payload", c.with_files(c.payload, c.recipe()), f"{TRAIN} model.factory={c.PAYLOAD_FACTORY}",
      train_error("model.factory", waits="A")),

    # -- run folders
    R("run-missing-config-eval", c.damaged_run(a=c.remove("config.yaml")), EVAL, error("no config.yaml")),
    R("run-missing-config-export", c.damaged_run(a=c.remove("config.yaml")), "export run", error("no config.yaml")),
    R("run-missing-config-resume", c.damaged_run(a=c.remove("config.yaml")), "train --resume run --no-progress",
      error("no config.yaml")),
    R("run-corrupt-config-eval", c.damaged_run(a=c.set_config("model: [")), EVAL, error("not valid YAML")),
    R("run-corrupt-config-export", c.damaged_run(a=c.set_config("model: [")), "export run", error("not valid YAML")),
    R("run-corrupt-config-resume", c.damaged_run(a=c.set_config("model: [")), "train --resume run --no-progress",
      error("not valid YAML")),
    R("run-config-a-list-export", c.damaged_run(a=c.set_config("- 1\n- 2\n")), "export run", error("config.yaml")),
    R("run-config-misfit-eval", c.damaged_run(a=c.set_config(c.model_change(towers__image__model="vit_micro_patch4_32"))),
      EVAL, error("does not fit")),
    R("run-config-misfit-resume", c.damaged_run(a=c.set_config(c.model_change(towers__image__model="vit_micro_patch4_32"))),
      "train --resume run --no-progress train.steps=2", error("does not fit", waits="B")),
    R("run-truncated-checkpoint-eval", c.damaged_run(a=c.cut_file("CKPT/model.safetensors", 100)), EVAL,
      error("no readable checkpoint")),
    R("run-truncated-checkpoint-export", c.damaged_run(a=c.cut_file("CKPT/model.safetensors", 100)), "export run",
      error("no readable checkpoint")),
    R("run-newest-checkpoint-truncated-export", c.damaged_run(a=c.newer_copy, b=c.cut_file("CKPT/model.safetensors", 100)),
      "export run", contained("run/export", status=0)),
    R("run-garbage-trainer-state-export", c.damaged_run(a=c.replace_file("CKPT/trainer.pt", b"not a pickle" * 50)),
      "export run", error("no readable checkpoint")),
    R("run-garbage-checkpoint-resume", c.damaged_run(a=c.replace_file("CKPT/model.safetensors", b"garbage" * 50)),
      "train --resume run --no-progress train.steps=2", error("checkpoint", waits="B")),
    R("run-trainer-state-bad-step-eval", c.damaged_run(a=c.trainer_state({"step": "abc"})), EVAL,
      error("no readable checkpoint")),
    R("run-factory-eval", c.with_files(c.payload, c.damaged_run(a=c.set_config(c.model_change(factory=c.PAYLOAD_FACTORY)))),
      EVAL, error("model.factory", waits="A")),
    R("run-factory-explain", c.with_files(c.payload, c.image_file("pic.png", c.png_bytes),
                                          c.damaged_run(a=c.set_config(c.model_change(factory=c.PAYLOAD_FACTORY)))),
      EXPLAIN, error("model.factory", waits="A")),
    R("run-factory-resume", c.with_files(c.payload, c.damaged_run(a=c.set_config(c.model_change(factory=c.PAYLOAD_FACTORY)))),
      "train --resume run --no-progress train.steps=2", error("model.factory", waits="A")),
    R("run-os-system-factory-eval", c.damaged_run(a=c.set_config(c.model_change(factory="os:system"))), EVAL,
      error("model.factory", waits="A")),
    R("runs-status-a-list", c.runs_root([1, 2]), "runs runs_root", Expect(0)),
    R("runs-status-garbage", c.runs_root("{not json"), "runs runs_root", Expect(0)),
    R("runs-status-wrong-types", c.runs_root({"status": "finished", "best": "x", "last": 3, "updated": 5, "step": "a"}),
      "runs runs_root", Expect(0)),
    R("export-out-is-a-file", c.with_files(c.damaged_run(), lambda root, kit: c.write(root, "taken", "keep me")),
      "export run --out taken", error("taken")),
    R("tokenizer-out-is-a-file", c.with_files(c.caption_table("t.csv", c.csv_text(c.GOOD_ROWS)),
                                              lambda root, kit: c.write(root, "taken", "keep me")),
      "data tokenizer tab/t.csv --out taken --vocab-size 300", error("taken")),
    R("runs-root-is-a-file", lambda root, kit: c.write(root, "runs_root", "x"), "runs runs_root",
      error("not a folder of runs")),

    # -- exports (an export-only folder, as zir eval reads one)
    R("export-garbage-weights", c.export_folder(weights="garbage"), "eval exp --tasks knn --limit 8 --no-report",
      error("not a readable safetensors file")),
    R("export-no-metadata", c.export_folder(metadata=None), "eval exp --tasks knn --limit 8 --no-report",
      error("no zir model config")),
    R("export-metadata-not-json", c.export_folder(c.meta_model("{not json")), "eval exp --tasks knn --limit 8 --no-report",
      error("zir_model", waits="A")),
    R("export-metadata-a-list", c.export_folder(c.meta_model("[1, 2]")), "eval exp --tasks knn --limit 8 --no-report",
      error("model", waits="A")),
    R("export-metadata-bad-step", c.export_folder(c.meta_set(step="abc")), "eval exp --tasks knn --limit 8 --no-report",
      error("step")),
    R("export-weights-misfit", c.export_folder(weights="misfit"), "eval exp --tasks knn --limit 8 --no-report",
      error("does not fit")),
    R("export-factory-metadata", c.with_files(c.payload, c.export_folder(c.meta_model(
        '{"factory": "%s", "towers": {}}' % c.PAYLOAD_FACTORY))), "eval exp --tasks knn --limit 8 --no-report",
      error("model.factory", waits="A")),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def _inspect_counts(out: str) -> tuple[int, dict[str, int]]:
    usable = re.search(r"usable (\d+)\)", out)
    assert usable, f"no counts in zir data inspect's output:\n{out}"
    skipped = {m[1]: int(m[0]) for m in re.findall(r"^skipped\s+(\d+) (.*) \(first: .*\)$", out, re.M)}
    return int(usable[1]), skipped


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZIR_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield c.Kit(c.Kit.train_base(tmp_path_factory.mktemp("base")))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input(row: Row, kit, tmp_path, monkeypatch, capsys):
    root = tmp_path / "cwd"
    root.mkdir()
    row.build(root, kit)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))  # as `python -m zir` would find a module in the working folder
    monkeypatch.delitem(sys.modules, c.PAYLOAD_MODULE, raising=False)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    try:
        status = main(list(row.argv))
    except SystemExit as stop:
        status = stop.code
    except Exception as err:  # noqa: BLE001 - any escape is the traceback a user would see
        pytest.fail(f"traceback: {type(err).__name__}: {err}")
    finally:
        sys.modules.pop(c.PAYLOAD_MODULE, None)
    out, err = capsys.readouterr()
    exp = row.expect

    assert not (root / c.PAYLOAD_MARKER).exists(), "a module named in a file was imported"
    assert "Traceback" not in out + err
    allowed = (0, 2) if exp.status is None else (exp.status,)
    assert status in allowed, f"exit status {status}, expected {allowed}; stderr:\n{err}"
    if status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("zir: error: "), f"stderr is not one error line:\n{err}"
        assert exp.error in lines[0]
    if exp.usable is not None:
        usable, skipped = _inspect_counts(out)
        assert usable == exp.usable, out
        assert (sum(skipped.values()) if isinstance(exp.skipped, int) else skipped) == exp.skipped, out

    after = _snapshot(tmp_path)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    places = tuple(str(Path("cwd") / w) for w in exp.writes)
    outside = sorted(p for p in changed if not any(p == w or p.startswith(w + "/") for w in places))
    assert not outside, f"written, changed or deleted outside {list(exp.writes) or 'nothing'}: {outside}"


def test_the_corpus_covers_every_kind_of_input():
    """The table keeps at least the kinds the Trust issue lists, so a careless edit cannot drop one."""
    kinds = {r.id.split("-")[0] for r in ROWS}
    assert kinds >= {"img", "explain", "table", "shard", "recipe", "override", "run", "runs", "export", "tokenizer"}
    assert len({r.id for r in ROWS}) == len(ROWS)

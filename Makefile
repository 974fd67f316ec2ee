# Two commands do everything on a fresh machine: `make run` (the main job) and `make test`.
# Both create .venv when missing and install torch==2.13.0 first (the CPU wheel on local disk;
# an unpinned torch would pull a multi-GB CUDA build), then this package with its test extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean format

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dcsbm run --config configs/quick.json

# every test, on both cores: pytest-xdist gives each worker whole files (a module's trained run is made once)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# format the tree the way tests/test_lint.py checks it (ruff: import order, then the formatter)
format: $(STAMP)
	$(BIN)/ruff check --select I --fix src tests bench examples docs/hooks.py docs/maths_pdf.py
	$(BIN)/ruff format src tests bench examples docs/hooks.py docs/maths_pdf.py

clean:
	rm -rf $(VENV) .cache .pytest_cache results

bench: $(STAMP)
	$(BIN)/python -m bench

# make docs: the documentation site, built with --strict (a broken link or reference fails) into site/.
# Installs the docs extra into .venv when missing, as the other targets install theirs.
DOCS_STAMP := $(VENV)/.docs-installed
.PHONY: docs clean-cache

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@if $(BIN)/python -c 'import sys; sys.path.insert(0, "docs"); import maths_pdf; sys.exit(maths_pdf.find_browser() is None)'; \
	then $(MAKE) --no-print-directory maths-pdf; \
	else echo "make docs: no Chromium, so no site/maths.pdf (see make maths-pdf)"; fi

# make maths-pdf: docs/maths.md (the site's maths page, hooks applied) with every function it names
# and its line range (from inspect, at build time) as a printable PDF, site/maths.pdf (~15 s).
# HTML -> PDF by headless Chromium, formulas as MathML (latex2mathml): no TeX Live (about 1 GB for
# XeLaTeX and fonts), no JavaScript or network (MathJax); Chromium is what checks the HTML reports.
# Needs Chromium (apt-get install chromium; macOS: brew install --cask chromium; or CHROMIUM=path).
.PHONY: maths-pdf
maths-pdf: $(DOCS_STAMP)
	$(BIN)/python docs/maths_pdf.py --out site/maths.pdf

# The per-user data cache (graphs and walks, keyed by their data hash): $DCSBM_CACHE_DIR, else
# $XDG_CACHE_HOME/dcsbm-transformer, else ~/.cache/dcsbm-transformer. `make clean` leaves it alone.
clean-cache:
	rm -rf "$${DCSBM_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/dcsbm-transformer}"

# `make test` and `make demo` need nothing but python3 (3.10+) on the PATH:
# the first run creates .venv, installs the pinned requirements into it, then
# this package itself (editable, without touching the pins), so the tests
# import the installed `sagan_tf`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A throwaway venv for `make install-check`.
CHECK_VENV ?= /tmp/sagan_tf-install-check

.PHONY: test lint demo install-check clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# pytest's own entry point, not `python -m pytest`: the checkout is then not
# on sys.path, and `sagan_tf` comes from the installed package. Three worker
# processes, each taking whole files (so a module's fixtures are built once):
# many tests wait on the commands they start, so a third worker fills the
# two cores (measured on a 2-core AMD EPYC: 9.3 min with three workers).
test: lint
	$(VENV)/bin/pytest -n 3 --dist loadfile

demo: $(STAMP)
	$(PY) demo/run_demo.py

# `pip install .` into a fresh venv with pyproject's dependency ranges (no
# pins, no dev tools); then, from an empty folder, every module imports
# and each console command answers --help (absl exits 1 after --help).
install-check:
	rm -rf $(CHECK_VENV)
	$(PYTHON) -m venv $(CHECK_VENV)
	$(CHECK_VENV)/bin/pip install --quiet .
	mkdir -p $(CHECK_VENV)/empty
	cd $(CHECK_VENV)/empty && ../bin/python -c "import importlib, pkgutil, \
	  sagan_tf; names = [m.name for m in pkgutil.walk_packages( \
	  sagan_tf.__path__, 'sagan_tf.')]; \
	  [importlib.import_module(n) for n in names]; \
	  print('sagan_tf', sagan_tf.__version__, 'from', sagan_tf.__file__, \
	        '-', len(names), 'modules import')"
	cd $(CHECK_VENV)/empty && for command in sagan-train sagan-eval \
	    sagan-convert sagan-import-tf1; do \
	  ../bin/$$command --help > help.txt 2>&1; \
	  grep -q -- "--debug" help.txt || { cat help.txt; exit 1; }; \
	  echo "$$command --help: $$(grep -c -- '^  --' help.txt) flags"; \
	done
	rm -rf $(CHECK_VENV)

clean:
	rm -rf $(VENV) demo_out .pytest_cache build *.egg-info

# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing, install the package with its dev extras, and reuse it later.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
NB_WORKERS ?= 2

.PHONY: setup demo test test-slow notebooks check-notebooks check-clean check-export test-nbs test-py test-nbs-slow clean-venv

# Installs only when pyproject.toml's content changed (not its modification time: nbdev-export rewrites it).
setup:
	@bash .ci/setup "$(PYTHON)" "$(VENV)"

demo: setup
	$(BIN)/dense-ulearn demo

# Order matters: clean notebooks, exports in sync, the committed outputs (pictures, sizes, no errors), notebook tests,
# then pytest (its summary line last).
test: setup check-clean check-export check-notebooks test-nbs test-py

check-clean: setup
	@PATH="$(abspath $(BIN)):$$PATH" bash .ci/check-clean

check-export: setup
	@PATH="$(abspath $(BIN)):$$PATH" bash .ci/check-export

test-nbs: setup
	@PATH="$(abspath $(BIN)):$$PATH" bash .ci/test-nbs --n-workers $(NB_WORKERS)

test-py: setup
	@PATH="$(abspath $(BIN)):$$PATH" bash .ci/test-py

# Executed notebooks: re-run every notebook in place (slow cells included) and check the outputs. Run it after
# changing a notebook or the code it shows; commit the notebooks with their outputs.
notebooks: setup
	@PATH="$(abspath $(BIN)):$$PATH" bash .ci/run-notebooks

check-notebooks: setup
	@$(BIN)/python .ci/check_notebooks.py

# Slow work: notebook cells flagged `#| slow` and pytest tests marked `slow`.
test-slow: setup
	@PATH="$(abspath $(BIN)):$$PATH" bash .ci/test-slow

clean-venv:
	rm -rf $(VENV)

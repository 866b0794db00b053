# Two entry points: `make demo` (main job) and `make test` (test suite). Both install first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-slow clean

$(BIN)/ead: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first: a bare "torch" would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,eval,tensorboard,qm9]'
	touch $(BIN)/ead

install: $(BIN)/ead

demo: install
	mkdir -p out
	$(BIN)/ead sample -n 20 -o out/demo.sdf --seed 0
	$(BIN)/ead evaluate out/demo.sdf

test: install
	$(BIN)/pytest -q

test-slow: install
	$(BIN)/pytest -q -m slow

clean:
	rm -rf $(VENV) out runs

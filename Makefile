# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
CRYPTEN := crypten==0.4.1
PYCANON := pycanon==1.3.6

.PHONY: setup demo docker-demo test lint protos bench clean

setup: $(STAMP)

# Idempotent: re-runs only when the project's dependency files change.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU wheel; a looser spec pulls a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# crypten's metadata names dead packages: install it alone, its real needs come from pyproject
	$(BIN)/python -m pip install --quiet --no-deps $(CRYPTEN)
	# compat mode: the checkout itself goes on sys.path (the default editable finder turns
	# our top-level packages into namespace packages)
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	# the tests' oracle for the anonymity measures; it pins an old numpy: alone, without deps
	$(BIN)/python -m pip install --quiet --no-deps $(PYCANON)
	touch $(STAMP)

demo: setup
	$(BIN)/smpc selftest --parties 3
	$(BIN)/smpc local examples/hospitals/consortium.toml

# The Docker demo for real: engine (started if installed), image, `up`, each hospital's result
# checked against its plaintext twin, teardown (docker/demo.py; docker/README.md)
docker-demo: setup
	$(BIN)/python docker/demo.py

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

protos: setup
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --grpc_python_out=. --pyi_out=. proto/parties/wire/wire.proto

bench: setup
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/psi.py
	$(BIN)/python benchmarks/inference.py

clean:
	rm -rf $(VENV)

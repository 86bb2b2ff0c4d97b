# Two commands for a newcomer: `make run` (the service on its embedded S3)
# and `make test` (the whole test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint protos bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/blobgate-server --dev

test: $(BIN)/.installed
	$(BIN)/pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Regenerate the checked-in Python code from protos/ (never edit it by hand).
protos: $(BIN)/.installed
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos protos/blobgate/v1/storage.proto

bench: $(BIN)/.installed
	$(BIN)/python -m bench.throughput

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

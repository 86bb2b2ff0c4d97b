# Two commands for a newcomer: `make run` (the service on its embedded S3)
# and `make test` (the whole test suite). Both create .venv on first use;
# `make test-fast` is the edit-test loop's subset.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# LocalStack's S3, which the tests marked both_s3s also run on: Python 3.13 in
# a virtual environment of its own. Its interpreter: python3.13 on PATH, else
# pyenv's 3.13.0; empty when neither runs.
LOCALSTACK_VENV ?= .venv-localstack
PYTHON313 ?= $(shell for p in python3.13 "$$HOME/.pyenv/versions/3.13.0/bin/python3"; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null \
	&& command -v "$$p" && break; done)

.PHONY: run test test-fast lint protos check-protos buf contract-release bench soak lock localstack clean

# The versions that were tested (requirements/dev.lock, hash-checked), then
# the project itself; pyproject.toml keeps ranges for library users.
$(BIN)/.installed: pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Re-resolve the lock files from pyproject.toml's ranges (uv, from PyPI):
# server.lock is what the Docker image installs (blobgate[server]), build.lock
# the build backend its wheel is built with ([build-system] requires), dev.lock
# what make and CI do; localstack.lock, from requirements/localstack.in, is
# LocalStack's.
lock: $(BIN)/.installed
	$(BIN)/pip install --quiet uv
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(BIN)/uv pip compile --quiet - --python-version 3.11 --generate-hashes \
			--custom-compile-command 'make lock' -o requirements/build.lock
	$(BIN)/uv pip compile --quiet pyproject.toml --python-version 3.11 --generate-hashes \
		--extra server -o requirements/server.lock
	$(BIN)/uv pip compile --quiet pyproject.toml --python-version 3.11 --generate-hashes \
		--extra dev -o requirements/dev.lock
	$(BIN)/uv pip compile --quiet requirements/localstack.in --python-version 3.13 \
		--generate-hashes -o requirements/localstack.lock

# LocalStack in .venv-localstack (the hash-checked versions of
# requirements/localstack.lock); tests/support/localstack.py starts it.
$(LOCALSTACK_VENV)/bin/.installed: requirements/localstack.lock
	@test -n "$(PYTHON313)" || { echo "make localstack: LocalStack needs Python 3.13:" \
		"put python3.13 on PATH or install it with pyenv (~/.pyenv/versions/3.13.0)" >&2; exit 1; }
	$(PYTHON313) -m venv --clear $(LOCALSTACK_VENV)
	$(LOCALSTACK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCALSTACK_VENV)/bin/pip install --quiet --require-hashes -r requirements/localstack.lock
	touch $@

localstack: $(LOCALSTACK_VENV)/bin/.installed

run: $(BIN)/.installed
	$(BIN)/blobgate-server --dev

# With Python 3.13, LocalStack is installed first and the both_s3s tests run on
# it too; without, those runs are skipped with the reason (an error under CI).
# Two workers (pytest-xdist), each with its own moto and LocalStack.
test: $(BIN)/.installed $(if $(PYTHON313),$(LOCALSTACK_VENV)/bin/.installed)
	$(BIN)/pytest -n 2

# The edit-test loop, in under a minute: the tests that start no process (no
# blobgate-server, CLI, LocalStack or Node) and need no S3 server, that is the
# unit tests and the runs on the in-memory store (tests/support/selection.py).
test-fast: $(BIN)/.installed
	$(BIN)/pytest -m "not slow and not s3_server"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

# Regenerate the checked-in Python code from protos/ (never edit it by hand).
protos: $(BIN)/.installed
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos protos/blobgate/v1/storage.proto

# Fail when the checked-in generated code differs from a fresh generation.
check-protos: $(BIN)/.installed
	@tmp=$$(mktemp -d) && \
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=$$tmp --pyi_out=$$tmp \
		--grpc_python_out=$$tmp protos/blobgate/v1/storage.proto && \
	for f in storage_pb2.py storage_pb2.pyi storage_pb2_grpc.py; do \
		diff -u protos/blobgate/v1/$$f $$tmp/blobgate/v1/$$f || \
		{ echo "protos/blobgate/v1/$$f is stale: run make protos"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated code is up to date"

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The contract: lint, formatting, and no breaking change against the last
# released contract (contract/blobgate-v1.binpb, a buf build image).
buf: node_modules/.installed
	node_modules/.bin/buf lint
	node_modules/.bin/buf format --diff --exit-code
	node_modules/.bin/buf breaking --against contract/blobgate-v1.binpb

# On a release only: make the current contract the one later changes must keep.
contract-release: node_modules/.installed
	node_modules/.bin/buf build -o contract/blobgate-v1.binpb

bench: $(BIN)/.installed
	$(BIN)/python -m bench.throughput

soak: $(BIN)/.installed
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) $(LOCALSTACK_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

# Build the image from the Dockerfile (buildah; a debootstrap stand-in for the
# base image where no registry is reachable, cached), run it on moto's S3 and
# probe it: HEALTHCHECK, a CLI round trip, SIGTERM exit 0 with nothing lost.
.PHONY: image-test
image-test: $(BIN)/.installed
	VENV=$(VENV) ops/image-test

# Build the wheel as the Dockerfile does, install it into a fresh virtualenv
# outside the checkout and smoke-test it from there: the base install (the CLI,
# the Python client, none of the server's dependencies, py.typed), then
# blobgate[server] serving a CLI round trip on moto's S3 and stopping on SIGTERM.
.PHONY: wheel-test
wheel-test: $(BIN)/.installed
	VENV=$(VENV) PYTHON=$(PYTHON) ops/wheel-test

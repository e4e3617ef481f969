# Docket — the commands a user and CI run. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TPM_STAMP := $(VENV)/.installed-tpm

.PHONY: run test lint bench proto proto-check clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Docket needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	@# xds-protos (Envoy's API, for ext_authz) ships older copies of the OpenTelemetry protos
	@# into opentelemetry/proto/; whichever installs last wins. The exporter needs its own.
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
		"opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	@touch $(STAMP)

## run: install and start Docket on embedded defaults (./docket-data, the bundle in policies/)
run: $(STAMP)
	$(BIN)/docket serve

# The `tpm` extra (tpm2-pytss) compiles against libtss2-dev, which .ci/install-test-deps
# installs as root; without it the tpm2-pytss tests skip, saying why (in CI they fail).
$(TPM_STAMP): $(STAMP)
	@if pkg-config --exists tss2-esys 2>/dev/null; then \
		$(BIN)/python -m pip install --quiet -e '.[tpm]' && touch $@; \
	else echo "make: no libtss2-dev (pkg-config tss2-esys): the tpm2-pytss tests will skip" >&2; fi

## test: install what the tests need (as root, the system packages too) and run them
test: $(STAMP)
	@.ci/install-test-deps
	@$(MAKE) --no-print-directory $(TPM_STAMP)
	$(BIN)/python -m pytest -n auto --durations=25

## lint: the generated code is current, ruff (lint + format check), mypy --strict
lint: $(STAMP) proto-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## bench: the benchmarks; figures are printed and belong in benchmarks/README.md
bench: $(STAMP)
	@.ci/install-test-deps
	$(BIN)/python -m benchmarks

PROTOS := $(wildcard sdk/v1/*.proto)
PROTOC  = $(BIN)/python -m grpc_tools.protoc -I . --python_out=$(1) --mypy_out=$(1) \
	--grpc_python_out=$(1) --mypy_grpc_out=$(1) \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc $(PROTOS)

# The SPIFFE Workload API: messages only; sdk/agent/_workload_api.py registers the service
# under the package-less name SPIFFE clients call (sdk/workload/README.md).
WORKLOAD_PROTO := sdk/workload/workload.proto
PROTOC_MESSAGES = $(BIN)/python -m grpc_tools.protoc -I . --python_out=$(1) --mypy_out=$(1) \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy $(WORKLOAD_PROTO)

## proto: regenerate the committed gRPC/protobuf code under sdk/v1 and sdk/workload
proto: $(STAMP)
	$(call PROTOC,.)
	$(call PROTOC_MESSAGES,.)

## proto-check: fail when the committed generated code differs from what `make proto` makes
proto-check: $(STAMP)
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
	$(call PROTOC,$$out) && $(call PROTOC_MESSAGES,$$out) && \
	for f in $$(cd "$$out" && find sdk -type f); do \
		cmp -s "$$out/$$f" "$$f" || { echo "$$f is stale: run 'make proto' and commit the result" >&2; exit 1; }; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

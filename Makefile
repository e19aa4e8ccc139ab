# imgrun. `make build` builds the CLI into ./imgrun; `make test` runs the whole suite as
# CI does (scripts/test.sh: as root it installs the test dependencies first).
GO ?= go

.PHONY: build test deps bench

build:
	CGO_ENABLED=0 $(GO) build -o imgrun ./cmd/imgrun

test:
	bash scripts/test.sh

deps:
	bash scripts/deps.sh

# Benchmarks (placeholder until pkg benchmarks exist): runs every Benchmark once.
bench:
	$(GO) test -tags integration -run '^$$' -bench . -benchtime 1x ./...

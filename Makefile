# imapgate — build, test, demo, bench. Every target works on a fresh Debian machine as root.
GO       ?= go
BIN      := bin/imapgate
PKGS     := ./...
# Tests start real Dovecot, PostgreSQL and SoftHSM2 on 127.0.0.1; they are slow to build
# (smallstep pulls in ~400 modules) but quick to run.
TESTFLAGS ?= -count=1 -timeout 30m

.PHONY: all build deps test vet lint fuzz bench bench-compare demo clean

all: build

deps:
	@bash scripts/deps.sh
	$(GO) mod download

build: deps
	$(GO) build -o $(BIN) ./cmd/imapgate

vet:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# staticcheck, pinned; not part of `make test` so CI does not depend on one more download.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) run $(STATICCHECK) $(PKGS)

test: deps vet
	$(GO) test $(TESTFLAGS) $(PKGS)
	$(MAKE) fuzz FUZZTIME=20000x

# A short run of every fuzz target; `make fuzz FUZZTIME=10m` for a real session.
# make test budgets by executions, not by time: with a duration, Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" when a
# loaded machine keeps a worker busy past the deadline (go.dev/issue/75804, fixed
# in Go 1.27); a count has no deadline to race, and a real crasher still fails.
FUZZTIME ?= 20000x
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# Benchmarks report their own figures (b.ReportMetric); see docs/benchmarks.md.
# Time-based where an operation is short; once (-benchtime 1x) where the
# benchmark sets up a large case and loops inside (CRLs, the front's load runs).
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 2s ./pkcs11/
	$(GO) test -run '^$$' -bench Issue -benchtime 2s ./ca/
	$(GO) test -run '^$$' -bench '^BenchmarkCRL$$' -benchtime 1x ./ca/
	$(GO) test -run '^$$' -bench ServeCRL -benchtime 200x ./ca/
	$(GO) test -run '^$$' -bench . -benchtime 5x ./crl/
	IMAPGATE_BENCH=1 $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./mtls/
	bash scripts/bench.sh

# Only the outside-in comparison (load generator against Dovecot, nginx, bare Go and
# the front; docs/performance.md). BENCH_SECONDS, BENCH_ROUNDS, BENCH_ROWS tune it.
bench-compare: deps
	bash scripts/bench.sh

# The main job on embedded defaults: a CA in ./demo, served on 127.0.0.1.
demo: build
	bash scripts/demo.sh

clean:
	rm -rf bin demo

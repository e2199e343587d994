# imapgate — build, test, demo, bench. Every target works on a fresh Debian machine as root.
GO       ?= go
BIN      := bin/imapgate
PKGS     := ./...
# Tests start real Dovecot, PostgreSQL and SoftHSM2 on 127.0.0.1; they are slow to build
# (smallstep pulls in ~400 modules) but quick to run.
TESTFLAGS ?= -count=1 -timeout 30m

.PHONY: all help build deps test vet lint fuzz bench bench-compare demo demo-check clean

all: build

help: ## list the targets
	@echo "make TARGET — imapgate (every target works on a fresh Debian machine as root)"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F'\t' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## apt-get install the Debian packages that are missing (scripts/deps.sh), go mod download
	@bash scripts/deps.sh
	$(GO) mod download

build: deps ## build bin/imapgate
	$(GO) build -o $(BIN) ./cmd/imapgate

vet: ## go vet and the gofmt check
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# staticcheck, pinned; not part of `make test` so CI does not depend on one more download.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: ## staticcheck over every package
	$(GO) run $(STATICCHECK) $(PKGS)

# Tests that cannot run on this machine (e2e's Thunderbird, say) skip loudly and
# write why to $(SKIPS); the summary at the end lists them.
SKIPS    := $(CURDIR)/.test-skips
test: deps vet ## deps, vet, every test, every fuzz target briefly, then make demo-check
	@rm -f $(SKIPS)
	@IMAPGATE_SKIP_FILE=$(SKIPS) $(GO) test $(TESTFLAGS) $(PKGS); rc=$$?; \
	  if [ -s $(SKIPS) ]; then echo "== tests SKIPPED on this machine (not tested):"; cat $(SKIPS); fi; exit $$rc
	$(MAKE) fuzz FUZZTIME=20000x
	$(MAKE) demo-check

# A short run of every fuzz target; `make fuzz FUZZTIME=10m` for a real session.
# make test budgets by executions, not by time: with a duration, Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" when a
# loaded machine keeps a worker busy past the deadline (go.dev/issue/75804, fixed
# in Go 1.27); a count has no deadline to race, and a real crasher still fails.
FUZZTIME ?= 20000x
fuzz: ## every fuzz target for FUZZTIME (default 20000x; e.g. FUZZTIME=10m)
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# Benchmarks report their own figures (b.ReportMetric); see docs/benchmarks.md.
# Time-based where an operation is short; once (-benchtime 1x) where the
# benchmark sets up a large case and loops inside (CRLs, the front's load runs).
bench: deps ## benchmarks that report their own figures (docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchtime 2s ./pkcs11/
	$(GO) test -run '^$$' -bench Issue -benchtime 2s ./ca/
	$(GO) test -run '^$$' -bench 'Audit|Search' -benchtime 5x ./ca/
	$(GO) test -run '^$$' -bench '^BenchmarkCRL$$' -benchtime 1x ./ca/
	$(GO) test -run '^$$' -bench ServeCRL -benchtime 200x ./ca/
	$(GO) test -run '^$$' -bench . -benchtime 5x ./crl/
	IMAPGATE_BENCH=1 $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./mtls/
	bash scripts/bench.sh

# Only the outside-in comparison (load generator against Dovecot, nginx, bare Go and
# the front; docs/performance.md). BENCH_SECONDS, BENCH_ROUNDS, BENCH_ROWS tune it.
bench-compare: deps ## only the outside-in comparison (scripts/bench.sh; docs/performance.md)
	bash scripts/bench.sh

# The whole gate on 127.0.0.1, state in /run/imapgate-demo (DEMO_DIR); Ctrl-C stops it.
# scripts/demo.sh runs itself as a job of its own on a terminal, so make never sees
# the Ctrl-C and exits 0 once everything has stopped.
DEMO_BIN := bin/demo-backend
$(DEMO_BIN): build
	$(GO) build -o $(DEMO_BIN) ./testenv/cmd/demo-backend

demo: build $(DEMO_BIN) ## run the whole gate on 127.0.0.1 and print commands to try (Ctrl-C stops it; DEMO_ONESHOT=1 stops after the walkthrough)
	@bash scripts/demo.sh

demo-check: build $(DEMO_BIN) ## the demo without a terminal: run every printed command and check its outcome, then a clean stop
	@bash scripts/demo-check.sh

clean: ## remove bin/ and the demo's runtime directory
	rm -rf bin /run/imapgate-demo

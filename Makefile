SHELL := /bin/bash
# ratchetd — build, test and code generation.
# protoc comes from Debian (installed on demand); protoc-gen-go is pinned by
# go.mod's `tool` directive, so regeneration is reproducible.

GO        ?= go
PKGS      := ./...
BIN       := $(CURDIR)/bin
PROTOS    := $(wildcard messages/*.proto)
FUZZTIME  ?= 30s
BENCHTIME ?= 1s

.PHONY: all build test test-short race vet proto proto-check protoc bench bench-peers fuzz demo clean crash sessions-memory sessions-disk

all: build

build:
	$(GO) build $(PKGS)

## test: the whole suite: vet, then every package under -race except the
## two that run protoactor-go's remote layer: its own code races (remote.Start
## sets grpc's global logger, protoactor-badger.md §0; its endpoint manager
## and readers race with its Shutdown), so transport/node (several remotes in
## one process) and cmd/ratchetd/serve (nodes stopped with SIGTERM) run
## without -race.
NORACE_PKGS := ./transport/node ./cmd/ratchetd/serve
test: vet
	$(GO) test -race -count=1 $$($(GO) list $(PKGS) | grep -v -e '/transport/node$$' -e '/cmd/ratchetd/serve$$')
	$(GO) test -count=1 $(NORACE_PKGS)

vet:
	$(GO) vet $(PKGS)

## protoc: install Debian's protoc when it is missing.
protoc:
	@command -v protoc >/dev/null 2>&1 || { \
	  echo "protoc not found: installing Debian's protobuf-compiler"; \
	  apt-get update && apt-get install -y protobuf-compiler; }

$(BIN)/protoc-gen-go: go.mod go.sum
	@mkdir -p $(BIN)
	$(GO) build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

$(BIN)/protoc-gen-go-grpc: go.mod go.sum
	@mkdir -p $(BIN)
	$(GO) build -o $@ google.golang.org/grpc/cmd/protoc-gen-go-grpc

PLUGINS := --plugin=protoc-gen-go=$(BIN)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(BIN)/protoc-gen-go-grpc
GRPC_PROTOS := messages/api.proto

## proto: regenerate every *.pb.go from messages/*.proto (and the gRPC
## service of api.proto).
proto: protoc $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	protoc $(PLUGINS) \
	  --go_out=. --go_opt=module=github.com/ratchetd/ratchetd \
	  -I messages $(PROTOS)
	protoc $(PLUGINS) \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/ratchetd/ratchetd \
	  -I messages $(GRPC_PROTOS)

## proto-check: fail when the committed generated code differs from a fresh
## regeneration (the protoc version line in the header is not compared).
proto-check: protoc $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	@tmp=$$(mktemp -d); \
	protoc $(PLUGINS) \
	  --go_out=$$tmp --go_opt=module=github.com/ratchetd/ratchetd \
	  -I messages $(PROTOS) || exit 1; \
	protoc $(PLUGINS) \
	  --go-grpc_out=$$tmp --go-grpc_opt=module=github.com/ratchetd/ratchetd \
	  -I messages $(GRPC_PROTOS) || exit 1; \
	status=0; \
	for f in $$tmp/messages/*.pb.go; do \
	  g=messages/$$(basename $$f); \
	  if [ ! -f $$g ]; then echo "proto-check: $$g is missing (run make proto)"; status=1; continue; fi; \
	  if ! diff -u <(grep -Ev '^//[[:space:]]*(-[[:space:]]*)?protoc[[:space:]]' $$g) <(grep -Ev '^//[[:space:]]*(-[[:space:]]*)?protoc[[:space:]]' $$f) >/dev/null; then \
	    echo "proto-check: $$g differs from a fresh regeneration (run make proto)"; status=1; fi; \
	done; \
	rm -rf $$tmp; \
	[ $$status -eq 0 ] && echo "proto-check: generated code is up to date"; exit $$status

## demo: the main job (the README's first command).
demo:
	$(GO) run ./cmd/ratchetd demo

## crash: the crash harness with at least 200 SIGKILLs (make test runs 4).
CRASH_RUNS ?= 200
crash:
	RATCHETD_CHAOS_RUNS=$(CRASH_RUNS) $(GO) test -count=1 -timeout 60m -run '^TestChaos$$' -v ./cmd/ratchetd/chaos | grep -E 'chaos:|^(ok|FAIL|---)'

## bench: the Go benchmarks of the crypto layer and of the engine (durable
## against in-memory, in one run), and the floors under the engine's own
## costs: one actor message, and the store's writes of a pingpong message.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./crypto/...
	$(GO) test -run '^$$' -bench 'EngineThroughput|StatusSender' -benchmem -benchtime 4000x .
	$(GO) test -run '^$$' -bench 'ActorHop|PingpongWrites' -benchtime 200000x -count 3 ./actors ./persistence

## sessions-memory: resident memory of an engine holding SESSIONS sessions.
SESSIONS ?= 100000
sessions-memory:
	RATCHETD_SESSIONS=$(SESSIONS) $(GO) test -run '^$$' -bench ManySessions -benchtime 1x -timeout 60m .

## sessions-disk: resident memory of an engine with DISK_SESSIONS
## conversations in Badger of which ACTIVE_SESSIONS are active at once
## (the command issue's goal: 1 000 000 and 100 000, in under 1 GiB).
## Phase 1 (the idle majority, about 15 minutes for 900 000) is built once
## into PHASE1_DIR and kept; remove it after changing the code. Phase 2
## (the active set) runs in a fresh process on a copy of it, inside a
## memory cgroup of MEMORY_LIMIT bytes when one can be made here (see
## bench/memlimit.sh), with GOMEMLIMIT=MEMLIMIT for the Go heap.
DISK_SESSIONS ?= 1000000
ACTIVE_SESSIONS ?= 100000
MEMLIMIT ?= 800MiB
MEMORY_LIMIT ?= 1073741824
PHASE1_DIR ?= /tmp/ratchetd-phase1-$(DISK_SESSIONS)-$(ACTIVE_SESSIONS)
SESSIONS_ENV = RATCHETD_SESSIONS=$(DISK_SESSIONS) RATCHETD_ACTIVE=$(ACTIVE_SESSIONS) RATCHETD_PHASE1=$(PHASE1_DIR)
SESSIONS_RUN = -test.run '^$$' -test.bench SessionsOnDisk -test.benchtime 1x -test.timeout 180m
sessions-disk:
	$(GO) test -c -o .sessions-disk.test .
	test -f $(PHASE1_DIR)/phase1.bot || GOMEMLIMIT=3GiB RATCHETD_PHASE1_ONLY=1 $(SESSIONS_ENV) ./.sessions-disk.test $(SESSIONS_RUN)
	GOMEMLIMIT=$(MEMLIMIT) $(SESSIONS_ENV) bench/memlimit.sh $(MEMORY_LIMIT) ./.sessions-disk.test $(SESSIONS_RUN)
	rm -f .sessions-disk.test

## bench-peers: ratchetd's crypto against go.mau.fi/libsignal and
## status-im/doubleratchet, same workloads in one process (nested module
## bench/; about a minute on 2 cores). Extra flags: PEERS_FLAGS=--json etc.
bench-peers:
	cd bench && $(GO) run ./cmd/peers $(PEERS_FLAGS)

## fuzz: run each fuzz target for FUZZTIME (not part of `test`).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "== $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

clean:
	rm -rf $(BIN)

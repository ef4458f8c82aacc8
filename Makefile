# rankfarm — make targets. `make run` and `make test` work on a fresh Debian or
# Ubuntu machine: they install OpenMPI (MPICH with MPI=mpich) with apt when it
# is missing and you are root, and otherwise print the command to run. MPI=mpich
# builds the binding with -tags mpich, and the launcher is then mpirun.mpich.

SHELL     := /bin/bash
GO        ?= go
MPI       ?= openmpi
TAGS      := $(if $(filter mpich,$(MPI)),mpich,)
GOFLAGS_T := $(if $(TAGS),-tags $(TAGS),)
FUZZTIME  ?= 20s
NP        ?= 4
BIN       := bin/rankfarm
# The full logs of the end-to-end suite, one pair per user: /tmp is shared,
# and one user cannot overwrite another's file there.
E2E_LOG   := /tmp/rankfarm-e2e-$(shell id -un)

ifeq ($(shell id -u),0)
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
endif

.PHONY: all build run test test-other-mpi unit e2e e2e-queue nompi lint bench fuzz mpi chromium slurm slurm-stop hosts hosts-stop clean

all: build

## chromium: the headless browser of the dashboard test (as root; installs
## Debian's chromium with apt when missing)
chromium:
	@./ci/ensure-chromium.sh

mpi:
	@MPI=$(MPI) ./ci/ensure-mpi.sh

build: mpi
	$(GO) build $(GOFLAGS_T) -o $(BIN) ./cmd/rankfarm

## run: the example workflow on the local default (mpirun -np <cores>)
run: mpi
	$(GO) run $(GOFLAGS_T) ./examples/workflow

## test: lint, unit tests with -race, the nompi build, the MPI end-to-end suite
## over TCP and over the shared-filesystem queue
## (and, as root, the provider tests on a real single-node Slurm and the
## tests across hosts on the emulated cluster of ci/hosts.sh)
test: mpi chromium lint nompi slurm hosts unit e2e e2e-queue slurm-stop hosts-stop

## hosts: start the emulated cluster of the tests across hosts (as root;
## ci/hosts.sh installs what it needs with apt): $(HOSTS) hosts in network,
## UTS, IPC and mount namespaces, an rsh agent, a directory shared over
## sshfs. Without root the tests across hosts are skipped.
HOSTS ?= 4
hosts:
	@if [ "$$(id -u)" -eq 0 ]; then ./ci/hosts.sh start $(HOSTS); \
	  else echo "make: the tests across hosts will be skipped; run 'sudo ./ci/hosts.sh start' to run them"; fi

hosts-stop:
	@if [ "$$(id -u)" -eq 0 ]; then ./ci/hosts.sh stop; fi

## slurm: start the single-node Slurm of the provider tests (as root; installs
## slurm-wlm and munge with apt when missing); without root the tests skip it
slurm:
	@if [ "$$(id -u)" -eq 0 ]; then ./ci/slurm.sh start; \
	  else ./ci/slurm.sh status >/dev/null 2>&1 || echo "make: the Slurm tests will be skipped; run 'sudo ./ci/slurm.sh start' to run them"; fi

slurm-stop:
	@if [ "$$(id -u)" -eq 0 ]; then ./ci/slurm.sh stop; fi

lint:
	@fmt=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	  if [ -n "$$fmt" ]; then echo "gofmt needed: $$fmt"; exit 1; fi
	$(GO) vet $(GOFLAGS_T) ./...
	$(GO) tool staticcheck $(GOFLAGS_T) ./...

nompi:
	CGO_ENABLED=0 $(GO) build -tags nompi ./...
	CGO_ENABLED=0 $(GO) vet -tags nompi ./...

unit:
	$(GO) test $(GOFLAGS_T) -race -count=1 -timeout 600s $$($(GO) list ./... | grep -v /e2e)

e2e:
	$(GO) test $(GOFLAGS_T) -count=1 -timeout 900s -v ./e2e/ 2>&1 | tee $(E2E_LOG).log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; \
	  exit $${PIPESTATUS[0]}

## e2e-queue: the same end-to-end suite over the shared-filesystem queue link
e2e-queue:
	RANKFARM_E2E_LINK=queue $(GO) test $(GOFLAGS_T) -count=1 -timeout 900s -v ./e2e/ 2>&1 | tee $(E2E_LOG)-queue.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; \
	  exit $${PIPESTATUS[0]}

## test-other-mpi: with MPI=mpich, the other family's binding tests and
## the end-to-end suite (.ci/run runs it after make test)
test-other-mpi: mpi slurm hosts
	$(GO) test $(GOFLAGS_T) -race -count=1 ./mpiexec/mpi/ ./launch/
	$(MAKE) e2e MPI=$(MPI)
	$(MAKE) slurm-stop hosts-stop

## bench: the standard benchmark suite on this machine (under a minute on 2
## cores): throughput, latency, efficiency, scaling over rank counts and the
## front end's memory per pending task. result.json, results.md (the table
## the README quotes, naming the command and the machine) and the plots
## (latency, efficiency, scaling, memory; PNG and SVG) go to results/bench/
## (git-ignored)
bench: build
	rm -rf results/bench
	./$(BIN) bench --np $(NP) --tasks 200000 --out results/bench
	@echo "make bench: results.md, result.json and the plots are in results/bench/"

fuzz: mpi
	@set -e; for pkg in $$($(GO) list $(GOFLAGS_T) ./...); do \
	  for f in $$($(GO) test $(GOFLAGS_T) -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test $(GOFLAGS_T) -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean:
	rm -rf bin

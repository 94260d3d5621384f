# labctl — build, test, run the default lab.
#
# Every target that needs machine packages installs the missing ones first
# (Debian/apt, by name, only when missing), so the README's two commands work
# on a fresh machine.

SHELL := /bin/bash
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GOFMT ?= $(dir $(GO))gofmt
BIN := bin/labctl
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
DEFAULT_LAB ?= first-look

# What labs and their learners use on the machine: ps, ip, ss, strace, lsof,
# nsenter, dig, ping, curl, mkfs.ext4.
APT_PACKAGES := procps psmisc iproute2 util-linux strace lsof e2fsprogs curl \
	iputils-ping bind9-dnsutils bash tcpdump nftables systemd-container debootstrap

.PHONY: all deps build lab test test-unit lint fmt vet fuzz bench clean schema rootfs

all: build

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing missing packages: $$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root (sudo make ...) to install: $$missing" >&2; exit 3; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@test -x "$(GO)" || { echo "Go 1.26 is needed (expected at /usr/local/go/bin/go or on PATH)" >&2; exit 3; }

build: deps
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/labctl

# Bring up the default lab and enter it. Leaving the shell leaves the lab
# running until `bin/labctl down`.
lab: build
	@if ./$(BIN) status --json | grep -q '"name": "$(DEFAULT_LAB)"'; then \
		echo "$(DEFAULT_LAB) is already running; entering it"; \
	else \
		./$(BIN) up --name $(DEFAULT_LAB) $(DEFAULT_LAB) || exit $$?; \
	fi; \
	./$(BIN) shell $(DEFAULT_LAB); \
	echo "left the lab shell; the lab keeps running. Remove it with: $(BIN) down $(DEFAULT_LAB)"

# The README's test command: formatting, vet, every test (privileged ones
# run for real as root), then every lab of the catalog proves itself.
# -p 1: privileged tests compare whole-machine snapshots, so test binaries
# must not create labs at the same time.
test: deps lint build rootfs
	$(GO) test -p 1 -count=1 -timeout 25m ./...
	./$(BIN) test -j 2 --junit bin/catalog-junit.xml

# The root filesystem systemd lab hosts boot: debootstrap from this machine's
# apt mirror into /var/cache/labctl (about 2 minutes the first time, then a
# no-op). `labctl up` of a systemd lab builds it too when it is missing.
rootfs: build
	./$(BIN) rootfs

lint: fmt vet

fmt:
	@out=$$($(GOFMT) -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt: these files need formatting:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=60s ./labs/

# Measure labctl against a plain-shell baseline doing the same work
# (bench/baseline.sh): up/down latency, density, catalog wall time. Prints
# Markdown, writes bin/bench.json; asserts nothing about time. Run as root
# on an otherwise idle machine.
bench: build rootfs
	$(GO) build -o bin/labbench ./bench
	./bin/labbench bench --json bin/bench.json

# 1,000 up/down cycles of the default lab, 200 of a network lab, 200 ups
# SIGKILLed at random points plus gc; fails on any residue.
.PHONY: soak
soak: build rootfs
	$(GO) build -o bin/labbench ./bench
	./bin/labbench soak --kill-log bin/soak-kills.log

# Regenerate the committed JSON Schema after changing the format's types.
schema: build
	./$(BIN) schema > docs/lab-schema.json

clean:
	rm -rf bin

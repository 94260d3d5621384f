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

.PHONY: all deps build lab test test-unit lint fmt vet fuzz bench clean schema rootfs cross \
	vagrant-validate deps-vagrant deps-vm box test-vm

all: build

deps:
	$(call apt_missing,$(APT_PACKAGES))
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
test: deps lint build rootfs vagrant-validate
	$(GO) test -p 1 -count=1 -timeout 25m ./...
	./$(BIN) test -j 2 --junit bin/catalog-junit.xml

# The root filesystem systemd lab hosts boot: debootstrap from this machine's
# apt mirror into /var/cache/labctl (1 to 2½ minutes the first time, then a
# no-op). `labctl up` of a systemd lab builds it too when it is missing.
rootfs: build
	./$(BIN) rootfs

lint: fmt vet cross

# labctl builds for macOS and Windows users of VM mode (labctl vm up, up --vm).
cross:
	GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/labctl
	GOOS=windows GOARCH=amd64 CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/labctl

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

# ---- VM mode (docs/vm.md) ----
# Only vagrant and its libvirt plugin for `vagrant validate` in CI; the libvirt
# daemons and qemu come with deps-vm, for box/test-vm.
VM_PACKAGES := vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
define apt_missing
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing missing packages: $$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "run as root (sudo make ...) to install: $$missing" >&2; exit 3; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# vagrant-libvirt too: with no provider plugin at all, `vagrant validate`
# fails ("No usable default provider") on a fresh machine, and with it the
# libvirt section of the Vagrantfile is validated as well. Neither needs
# libvirtd or qemu.
deps-vagrant:
	$(call apt_missing,vagrant vagrant-libvirt)

# Works offline and without libvirtd: checks the Vagrantfile's syntax and config.
vagrant-validate: deps-vagrant
	vagrant validate

# The VM tools, and libvirt's daemons when they are not running (no systemd
# as PID 1 on CI machines: start them directly, then wait until libvirtd
# answers). libvirt's "default" network is never autostarted: it would add
# virbr0 and iptables chains to the machine.
deps-vm:
	$(call apt_missing,$(VM_PACKAGES))
	@rm -f /etc/libvirt/qemu/networks/autostart/default.xml
	@if ! virsh -c qemu:///system version >/dev/null 2>&1; then \
		pgrep -x virtlogd >/dev/null || virtlogd -d; \
		pgrep -x libvirtd >/dev/null || libvirtd -d; \
		for i in $$(seq 300); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.1; done; \
		virsh -c qemu:///system version >/dev/null || { echo "libvirtd does not answer" >&2; exit 3; }; \
	fi

# The offline box labctl/debian12: debootstrap from this machine's apt
# mirror, kernel and initrd booted directly, tools and the systemd hosts'
# root filesystem baked in; cached in /var/cache/labctl/box, then reused
# (about 4 minutes the first time). debootstrap mounts /proc in its tree:
# on a shared machine run it under the machine lock.
box: build rootfs
	$(call apt_missing,$(VM_PACKAGES))
	./$(BIN) vm box

# The slow end-to-end VM test (not in `make test`, see README): box, vagrant
# up under software emulation, labctl test inside the VM for the OOM lab
# (cgroup v2), CPU limits, a network lab and a systemd lab, a lab driven
# with --vm, then destroy. It starts libvirtd/virtlogd if needed and stops
# what it started, and fails on any residue (VMs, volumes, pools, networks,
# links, nftables/iptables rules, processes).
TEST_VM_LABS ?= oom-killed-worker cpu-throttled-api no-default-route exec-not-found
test-vm: box
	LABCTL_TEST_VM=1 LABCTL_TEST_VM_LABS="$(TEST_VM_LABS)" $(GO) test -count=1 -v -timeout 40m -run '^TestVMEndToEnd$$' ./vm/

# Regenerate the committed JSON Schema after changing the format's types.
schema: build
	./$(BIN) schema > docs/lab-schema.json

clean:
	rm -rf bin

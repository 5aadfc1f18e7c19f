# vcontainer: build, install, test. `make help` lists the targets.
#
#   make build                      release build of the workspace (binary + plugins)
#   make agent                      static guest agent (vcontainer-agent)
#   make guest [ARCH=aarch64]       guest blobs of both arches (or one) into build/blobs (needs root)
#   make aarch64-probe              arm64 kernel + busybox probe initramfs for tests/tests/aarch64_boot.rs
#   make install PREFIX=~/.local    bin/ (+ vdkr, vpdmn, <tool>-<arch> links), lib/vcontainer/plugins/, share/vcontainer/
#   make sdk                        build/sdk/: vcontainer-standalone-<host>.sh installer + .tar.zst/.tar.gz
#                                   (with QEMU and helpers; SDK_BUNDLE_QEMU=0 without QEMU)
#   make sdk-test                   the installer in fresh bullseye and trixie chroots without QEMU (root)
#   make test                       everything, including the end-to-end tests against real guests
#   make test-unit                  the tests that need no guest (end-to-end tests skip, saying why)
#   make stress                     fault figures (killed QEMU/CLI, full disk, parallel); STRESS_* rounds
#   make fuzz [FUZZ_SECONDS=60]     each cargo-fuzz target in fuzz/ for FUZZ_SECONDS: execs, findings
#   make bench | make lint

CARGO        ?= cargo
PREFIX       ?= /usr/local
DESTDIR      ?=
# the guest agent is built for the guest's arch; an explicit --target keeps the static
# RUSTFLAGS away from the host artifacts in target/release
AGENT_TARGET ?= x86_64-unknown-linux-gnu

RELEASE_DIR  := target/release
BLOB_DIR     := build/blobs
TOOL_LINKS   := vdkr vpdmn vdkr-x86_64 vdkr-aarch64 vpdmn-x86_64 vpdmn-aarch64 vrunner vrunner.sh

BIN_DEST     := $(DESTDIR)$(PREFIX)/bin
PLUGIN_DEST  := $(DESTDIR)$(PREFIX)/lib/vcontainer/plugins
SHARE_DEST   := $(DESTDIR)$(PREFIX)/share/vcontainer

.PHONY: all help build build-debug agent guest aarch64-probe test-fixtures install sdk sdk-test test test-unit bench stress fuzz lint

all: build

help:
	@sed -n '3,13p' Makefile | sed 's/^#//'

build:
	$(CARGO) build --release --workspace

# the end-to-end tests run target/debug/vcontainer and load the plugin .so files beside it
build-debug:
	$(CARGO) build --workspace

agent:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p vcontainer-agent --target $(AGENT_TARGET)

# owned by the guest image builder; it builds the agents itself (the aarch64 one in a trixie
# chroot, scripts/build-agent-cross.sh) and caches by input hash
ARCH ?= x86_64 aarch64
guest:
	GUEST_ARCH="$(ARCH)" scripts/build-guest.sh

# Debian's static busybox for arm64, armhf and i386: the content of the tests' foreign-arch images
test-fixtures:
	scripts/fetch-test-busybox.sh

# Debian's arm64 cloud kernel and a busybox /init that reports what it sees: proves the aarch64
# QEMU command line boots on a host that cannot build an aarch64 agent (cached, no root tricks)
aarch64-probe:
	scripts/build-aarch64-probe.sh

install: build
	install -d $(BIN_DEST) $(PLUGIN_DEST) $(SHARE_DEST)
	install -m 0755 $(RELEASE_DIR)/vcontainer $(BIN_DEST)/vcontainer
	for link in $(TOOL_LINKS); do ln -sfn vcontainer $(BIN_DEST)/$$link; done
	set -e; found=0; for so in $(RELEASE_DIR)/libvcontainer_*.so; do \
	  [ -e "$$so" ] || continue; found=1; install -m 0755 "$$so" $(PLUGIN_DEST)/; done; \
	  [ $$found = 1 ] || { echo "install: no plugins (libvcontainer_*.so) in $(RELEASE_DIR)" >&2; exit 1; }
	if [ -d $(BLOB_DIR) ]; then rm -rf $(SHARE_DEST)/blobs && cp -a $(BLOB_DIR) $(SHARE_DEST)/blobs; \
	  else echo "install: no $(BLOB_DIR) (run 'make guest'); installed without guest blobs" >&2; fi

# the relocatable SDK (scripts/sdk/build-sdk.sh): cargo decides what to rebuild, and the
# tree is repacked only when a binary, plugin, blob or SDK script is newer than the installer
SDK_OUT       := build/sdk
SDK_INSTALLER := $(SDK_OUT)/vcontainer-standalone-$(shell uname -m).sh
SDK_PACKAGES  := vcontainer vcontainer-runtime-docker vcontainer-runtime-podman vcontainer-backend-sloci vcontainer-backend-umoci

sdk:
	$(CARGO) build --release $(addprefix -p ,$(SDK_PACKAGES))
	@$(MAKE) --no-print-directory $(SDK_INSTALLER)

$(SDK_INSTALLER): $(RELEASE_DIR)/vcontainer $(wildcard $(RELEASE_DIR)/libvcontainer_*.so) \
		$(wildcard $(BLOB_DIR)/*/*/*) $(filter-out scripts/sdk/chroot-%,$(wildcard scripts/sdk/*))
	SDK_SKIP_BUILD=1 SDK_OUT=$(SDK_OUT) BLOB_DIR=$(BLOB_DIR) RELEASE_DIR=$(RELEASE_DIR) scripts/sdk/build-sdk.sh

# issue 17: the installer on hosts without QEMU and with an older glibc (scripts/sdk/chroot-test.sh)
sdk-test: sdk test-fixtures
	SDK_INSTALLER=$(CURDIR)/$(SDK_INSTALLER) scripts/sdk/chroot-test.sh

# VCONTAINER_E2E=1: a missing guest fails the end-to-end tests instead of skipping them;
# the SDK is built after the guest (its blobs) for tests/tests/sdk.rs
# RUST_BACKTRACE=0: a failing test's message (the command's stderr) is then the last thing
# it prints, where a CI log's tail shows it, instead of being pushed out by a backtrace
test: build-debug guest aarch64-probe test-fixtures
	@$(MAKE) --no-print-directory sdk
	RUST_BACKTRACE=0 VCONTAINER_E2E=1 $(CARGO) test --workspace --exclude vcontainer-tests
	# the end-to-end suites boot real VMs under TCG on a 2-core host: one at a time; a test
	# that fails is retried once on its own and named FLAKY if it then passes
	CARGO=$(CARGO) scripts/e2e-tests.sh
	@$(MAKE) --no-print-directory sdk-test

test-unit: build-debug
	$(CARGO) test --workspace

bench:
	$(CARGO) bench --workspace
	scripts/bench-vm.sh
	scripts/bench-batch.sh
	scripts/bench-engine-api.sh

# issue 13 item 5's figures on the real guest (scripts/stress.sh says what and how long;
# STRESS_QEMU_KILLS=3 STRESS_CLI_KILLS=3 STRESS_PARALLEL_ROUNDS=3 for a short run); not in `test`
stress: build-debug
	scripts/stress.sh

# issue 13 item 5's hostile-input figures: the cargo-fuzz targets in fuzz/ (agent tar unpack,
# volume sync-back, OCI layout reader, argv planner), FUZZ_SECONDS each, with their executions
# and findings (scripts/fuzz.sh says more; needs nightly + cargo-fuzz); not in `test`
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# pier: `make run` starts pierd with the default configuration, `make test`
# runs every test. Both install what they need on a fresh Debian machine.

GO        ?= go
PREFIX    ?= /usr/local
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# Debian packages pier uses (and builds with: libjsmn-dev is the monitor's
# JSON tokenizer, a header), and those its tests use besides (clang with
# libFuzzer, libclang-rt-14-dev, for the monitor's fuzz targets; buildah
# and debootstrap for the Dockerfile's test; criu for CheckpointContainer,
# optional on a node, see the README).
DEBS      := crun runc containernetworking-plugins busybox-static iptables ca-certificates gcc libc6-dev libjsmn-dev musl-tools
TEST_DEBS := clang libclang-rt-14-dev buildah debootstrap criu
CRI_TOOLS := v1.37.0
HELM      := v3.22.0
export PATH := /usr/local/go/bin:/usr/local/bin:$(PATH)

.PHONY: image cni-config all build run test e2e e2e-node unit bench bench-compare conformance conformance-update lint install deps test-deps fuzz fuzz-request fuzz-log fuzz-go FORCE

all: build

build: bin/pierd bin/pier-shim bin/pier-shim-monitor bin/pier-install

# nri_no_wasm: NRI plugins are processes (WebAssembly ones would link a
# WebAssembly runtime into pierd, 8 MB).
bin/pierd: FORCE
	$(GO) build -tags nri_no_wasm -ldflags "$(LDFLAGS)" -o $@ ./cmd/pierd

# The DaemonSet's installer (deploy/helm/pier): static, it runs in the
# pier image and its probes run in the host's root.
bin/pier-install: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $@ ./cmd/pier-install

# The shim is static and lean: one runs per container. pier-shim (Go) runs
# the create, then execs pier-shim-monitor (C), which stays for the
# container's life; see cmd/pier-shim-monitor/monitor.h.
bin/pier-shim: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $@ ./cmd/pier-shim

# The monitor, and its variants for the tests (cmd/pier-shim-monitor's
# monitor_test.go builds them through make): with AddressSanitizer and
# UBSan; with fault injection (test/fault.c fails the calls PIER_FAULT
# names; a delete waits 1 s there, not 10); the C unit tests; the libFuzzer
# targets of the request parser and the log line splitter (clang). Each is
# written to a temporary file and renamed: tests build them concurrently.
# Every warning is an error in the monitor's files, whatever CFLAGS says;
# in the ASan build, _FORTIFY_SOURCE, which Debian's gcc does not set,
# makes glibc mark the results of write() and the like that must not be
# ignored (it needs -O; musl has no such marks).
#
# The monitor itself is linked statically with musl (MON_CC): one runs per
# container for its whole life, and musl's start-up dirties 28 KiB of
# private memory where glibc's dynamic loader and relocations dirty 100
# KiB (PSS per container, 10 containers: 37 KiB against 130 KiB). musl
# brings no kernel headers: those of the build's glibc (linux/, asm/) and
# jsmn.h are searched after musl's own. The test variants use CC (glibc):
# sanitizers and --wrap need it.
CC       ?= cc
CFLAGS   ?= -O2 -Wall -Wextra
MON_CC   ?= musl-gcc
MON_LIBC := -static -idirafter /usr/include -idirafter /usr/include/$(shell $(CC) -print-multiarch)
FUZZ_CC  ?= clang
MON      := cmd/pier-shim-monitor
MON_SRC  := $(addprefix $(MON)/,main.c control.c exit.c output.c podinit.c util.c request.c split.c)
MON_HDR  := $(wildcard $(MON)/*.h) Makefile
MON_WARN := -Wall -Wextra -Werror
MON_SAN  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
MON_WRAP := calloc epoll_ctl close_range kill fsync rename sendmsg
comma    := ,
FUZZ_SECONDS ?= 60

# The monitor prints VERSION (--version): bin/version changes when it does.
bin/pier-shim-monitor: $(MON_SRC) $(MON_HDR) bin/version
	@mkdir -p $(@D)
	$(MON_CC) $(CFLAGS) $(MON_LIBC) -DPIER_VERSION='"$(VERSION)"' $(MON_WARN) -o $@.$$$$.tmp $(MON_SRC) && mv -f $@.$$$$.tmp $@

bin/version: FORCE
	@mkdir -p $(@D)
	@echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' >$@

bin/pier-shim-monitor-asan: $(MON_SRC) $(MON_HDR)
	@mkdir -p $(@D)
	$(CC) $(MON_SAN) -D_FORTIFY_SOURCE=2 $(MON_WARN) -o $@.$$$$.tmp $(MON_SRC) && mv -f $@.$$$$.tmp $@

bin/pier-shim-monitor-fault: $(MON_SRC) $(MON_HDR) $(MON)/test/fault.c
	@mkdir -p $(@D)
	$(CC) $(MON_SAN) $(MON_WARN) -DDELETE_WAIT_MS=1000 $(addprefix -Wl$(comma)--wrap=,$(MON_WRAP)) -o $@.$$$$.tmp $(MON_SRC) $(MON)/test/fault.c && mv -f $@.$$$$.tmp $@

bin/pier-shim-monitor-unit: $(filter-out %/main.c,$(MON_SRC)) $(MON_HDR) $(MON)/test/unit.c
	@mkdir -p $(@D)
	$(CC) $(MON_SAN) $(MON_WARN) -o $@.$$$$.tmp $(filter-out %/main.c,$(MON_SRC)) $(MON)/test/unit.c && mv -f $@.$$$$.tmp $@

bin/fuzz-request: $(MON)/test/fuzz_request.c $(MON)/request.c $(MON)/request.h $(MON)/protocol.h Makefile
	@mkdir -p $(@D)
	$(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined $(MON_WARN) -o $@.$$$$.tmp $(filter %.c,$^) && mv -f $@.$$$$.tmp $@

bin/fuzz-log: $(MON)/test/fuzz_log.c $(MON)/split.c $(MON)/split.h Makefile
	@mkdir -p $(@D)
	$(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined $(MON_WARN) -o $@.$$$$.tmp $(filter %.c,$^) && mv -f $@.$$$$.tmp $@

# fuzz runs each fuzz target, C and Go, for FUZZ_SECONDS; fuzz-request and
# fuzz-log one of the C ones. New inputs go to bin/fuzz-corpus, crashes to
# bin/fuzz-crash-*; the seeds are in cmd/pier-shim-monitor/test/corpus.
fuzz: fuzz-request fuzz-log fuzz-go
fuzz: FUZZ_GO_TIME = $(FUZZ_SECONDS)s
fuzz: FUZZ_CRI_TIME = $(FUZZ_SECONDS)s

fuzz-request fuzz-log: fuzz-%: bin/fuzz-%
	@mkdir -p bin/fuzz-corpus/$*
	./bin/fuzz-$* -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=bin/fuzz-crash-$*- bin/fuzz-corpus/$* $(MON)/test/corpus/$*

# fuzz-go runs each Go fuzz target (func FuzzXxx in a _test.go file) for
# FUZZ_GO_TIME, FuzzCRIServer (a real pierd: slow inputs, not minimised
# long) for FUZZ_CRI_TIME: go test fuzzes one target per run. make test runs
# it with these short budgets. The seeds are the packages'
# testdata/fuzz/FuzzXxx; new interesting inputs stay in Go's cache
# (fuzz/ in go env GOCACHE), not in the repository. An input that fails is
# written to testdata/fuzz/FuzzXxx/<hash> of its package and fails the run
# (the other targets still run); go test then fails on it too until it is
# fixed: reproduce with go test -run 'FuzzXxx/<hash>' -v ./<package>, and
# commit it with the fix as a regression seed. Go 1.26's coordinator may
# fail a run that found nothing with a bare "context deadline exceeded" as
# -fuzztime ends (go.dev/issue/75804, fixed in Go 1.27): such a run, with
# no input written, is reported and not counted as a failure.
FUZZ_GO_TIME  ?= 15s
FUZZ_CRI_TIME ?= 60s

fuzz-go: deps
	@failed=; out=$$(mktemp); trap 'rm -f $$out' EXIT; \
	for file in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
		pkg=$$(dirname $$file); \
		for name in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
			flags="-fuzztime $(FUZZ_GO_TIME)"; \
			if [ $$name = FuzzCRIServer ]; then flags="-fuzztime $(FUZZ_CRI_TIME) -fuzzminimizetime 5x"; fi; \
			echo "fuzz $$name $$pkg ($$flags)"; \
			seeds=$$(ls $$pkg/testdata/fuzz/$$name 2>/dev/null | wc -l); \
			if $(GO) test -run '^$$' -fuzz "^$$name\$$" $$flags $$pkg >$$out 2>&1; then cat $$out; continue; fi; \
			cat $$out; \
			if [ "$$(ls $$pkg/testdata/fuzz/$$name 2>/dev/null | wc -l)" = "$$seeds" ] && \
				[ "$$(sed -n '/^--- FAIL/,/^FAIL/p' $$out | sed '1d;$$d')" = "    context deadline exceeded" ]; then \
				echo "fuzz-go: $$pkg $$name: the coordinator's deadline race (go.dev/issue/75804), no failing input: ignored"; \
			else failed="$$failed $$pkg:$$name"; fi; \
		done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz-go: failed:$$failed (inputs in the packages' testdata/fuzz)"; exit 1; fi

# image builds pier's container image from the Dockerfile with buildah, as
# $(IMAGE). It pulls the base images and Go modules, so it needs the
# network (the Go environment is passed through). IMAGE_FLAGS adds flags of
# buildah build: other base images (--build-arg GO_IMAGE=... BASE_IMAGE=...;
# e2e/dockerfile_test.go builds from replicas it makes), --isolation chroot
# where buildah's OCI runtime cannot make cgroups (hybrid hierarchies). The
# file times and the image's creation time are those of the last commit.
IMAGE             ?= pier:$(VERSION)
REVISION          ?= $(shell git rev-parse HEAD 2>/dev/null)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
GO_ENV            := GOPROXY GOSUMDB GOFLAGS GONOSUMDB GOPRIVATE GOINSECURE

image:
	buildah build --timestamp $(SOURCE_DATE_EPOCH) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
		--build-arg CREATED=$$(date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ) \
		$(foreach v,$(GO_ENV),--build-arg $(v)="$$($(GO) env $(v))") \
		$(IMAGE_FLAGS) -t $(IMAGE) -f Dockerfile .

# deps installs the Debian packages and Go tools (crictl) that are missing;
# test-deps those only the tests use (helm, for deploy/helm/pier). The
# foreign-platform tests (e2e/platform_test.go) run Debian's busybox-static
# for arm64 under qemu-aarch64-static, which they register with binfmt_misc
# themselves and unregister: test-deps adds the arm64 architecture to dpkg
# and unpacks both into FOREIGN_DIR without installing them (qemu-user-static
# ships binfmt.d files that systemd-binfmt would register at every boot, for
# every QEMU target, making this node emulate foreign binaries unasked).
FOREIGN_DIR := /var/cache/pier-e2e/foreign
install-debs = @missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing $$missing"; apt-get update && apt-get install -y $$missing; fi

deps:
	$(call install-debs,$(DEBS))
	@crictl --version 2>/dev/null | grep -q $(CRI_TOOLS) || GOBIN=/usr/local/bin $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@$(CRI_TOOLS)

test-deps:
	$(call install-debs,$(TEST_DEBS))
	@helm version --short 2>/dev/null | grep -q '^$(HELM)' || GOBIN=/usr/local/bin $(GO) install -ldflags "-X helm.sh/helm/v3/internal/version.version=$(HELM)" helm.sh/helm/v3/cmd/helm@$(HELM)
	@test -x $(FOREIGN_DIR)/arm64/bin/busybox -a -x $(FOREIGN_DIR)/qemu/usr/bin/qemu-aarch64-static || { \
		dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64 && apt-get update; }; \
		tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && cd $$tmp && \
		apt-get download busybox-static:arm64 qemu-user-static && \
		mkdir -p $(FOREIGN_DIR) && rm -rf $(FOREIGN_DIR)/arm64 $(FOREIGN_DIR)/qemu && \
		dpkg-deb -x busybox-static_*_arm64.deb $(FOREIGN_DIR)/arm64 && \
		mkdir -p $(FOREIGN_DIR)/qemu && dpkg-deb --fsys-tarfile qemu-user-static_*.deb | tar -x -C $(FOREIGN_DIR)/qemu ./usr/bin/qemu-aarch64-static && \
		echo "unpacked busybox-static:arm64 and qemu-aarch64-static into $(FOREIGN_DIR)"; }

# manifests renders the chart into deploy/manifests, for kubectl apply; a
# test (deploy/chart_test.go) fails when they differ. It needs helm (test-deps).
.PHONY: manifests
manifests:
	$(GO) test -count=1 -run '^TestManifests$$' ./deploy -args -update

# cni-config installs pier's default pod network where the node has none.
cni-config:
	@if [ -z "$$(ls /etc/cni/net.d 2>/dev/null)" ]; then install -D -m 0644 deploy/cni/10-pier.conflist $(DESTDIR)/etc/cni/net.d/10-pier.conflist && echo "installed /etc/cni/net.d/10-pier.conflist"; fi

# run starts pierd in the foreground on unix:///run/pier/pier.sock.
run: deps build cni-config
	./bin/pierd -v 2

test: deps test-deps lint
	$(GO) test -count=1 -timeout 40m ./...
	$(MAKE) fuzz-go

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: deps
	$(GO) test -count=1 -timeout 40m -v ./e2e/...

# e2e-node boots a Debian VM (systemd, cgroup v2) under qemu, installs pier
# in it as a node would and runs the node tests there; see e2e/node/run.sh.
e2e-node: deps build
	e2e/node/run.sh

# bench pulls the benchmark image through a CRI endpoint (a fresh pierd
# unless ENDPOINT=unix:///path is given) and prints the figures.
bench: deps build
	$(GO) run ./e2e/bench -pierd ./bin/pierd $(if $(ENDPOINT),-endpoint $(ENDPOINT))

# bench-compare runs the same benchmark against Debian's containerd 1.6,
# containerd 2.4.2, CRI-O 1.34.0 and pier, each with a private root,
# socket, CNI network and registries, and prints the table the README
# shows, also written to bin/bench-compare.md. e2e/benchcompare/peers.sh
# gets the peers into PEERS_DIR, outside the repository, once (Debian's
# packages unpacked, not installed; the others built from the Go module
# proxy); a peer it cannot get is left out. Not run in CI.
PEERS_DIR ?= /var/cache/pier-bench/peers
bench-compare: deps build
	$(call install-debs,libseccomp-dev jq)
	-PEERS=$(PEERS_DIR) GO=$(GO) e2e/benchcompare/peers.sh
	$(GO) build -o bin/benchcompare ./e2e/benchcompare
	./bin/benchcompare -pierd ./bin/pierd -peers $(PEERS_DIR) -out bin/bench-compare.md

# critest (CRI validation suite) and the ginkgo runner, at the versions
# pinned by the e2e/critest module.
bin/critest: e2e/critest/go.mod e2e/critest/go.sum
	cd e2e/critest && $(GO) test -c -o ../../bin/critest sigs.k8s.io/cri-tools/cmd/critest
	cd e2e/critest && $(GO) build -o ../../bin/ginkgo github.com/onsi/ginkgo/v2/ginkgo

# conformance runs critest against pierd, offline, and fails when a spec in
# e2e/conformance-baseline.txt no longer passes. CONFORMANCE_FLAGS adds
# flags (e.g. -variants runc) and critest arguments (after --).
conformance: deps build bin/critest
	PATH=$(CURDIR)/bin:$$PATH $(GO) run ./e2e/conformance $(CONFORMANCE_FLAGS)

# conformance-update also adds new passes to the baseline: commit them.
conformance-update: deps build bin/critest
	PATH=$(CURDIR)/bin:$$PATH $(GO) run ./e2e/conformance -update $(CONFORMANCE_FLAGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...

install: build cni-config
	# The monitor first: a pier-shim starting while this runs must find a
	# monitor that understands it (each install is a rename).
	install -D -m 0755 bin/pier-shim-monitor $(DESTDIR)$(PREFIX)/bin/pier-shim-monitor
	install -D -m 0755 bin/pier-shim $(DESTDIR)$(PREFIX)/bin/pier-shim
	install -D -m 0755 bin/pierd $(DESTDIR)$(PREFIX)/bin/pierd
	install -D -m 0644 deploy/pier.service $(DESTDIR)/etc/systemd/system/pier.service
	@if [ ! -f $(DESTDIR)/etc/pier/config.toml ]; then install -d $(DESTDIR)/etc/pier && ./bin/pierd config default > $(DESTDIR)/etc/pier/config.toml; fi

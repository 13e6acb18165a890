# pier's container image: the DaemonSet's installer (deploy/helm/pier) and
# what it installs onto a node. Build it with `make image`, or
# `buildah build -t pier .` (docker build works too).
#
# Its layout is a contract with the installer and the chart (docs/DESIGN.md,
# "The container image"):
#   /usr/local/bin/pier-install       the entrypoint
#   /opt/pier/bin/                    pierd, pier-shim, pier-shim-monitor, runc,
#                                     crun (Debian's; the rest are static)
#   /opt/pier/cni/bin/                Debian's CNI plugins
#   /opt/pier/share/pier.service      deploy/pier.service
#   /opt/pier/share/10-pier.conflist  deploy/cni/10-pier.conflist
#
# The defaults of GO_IMAGE and BASE_IMAGE are the published images, pinned by
# digest. The test (e2e/dockerfile_test.go) builds replicas of them with
# debootstrap and overrides both.
ARG GO_IMAGE=docker.io/library/golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

FROM ${GO_IMAGE} AS build
# The Go environment of the build, passed through; empty is Go's default.
ARG GOPROXY=
ARG GOSUMDB=
ARG GOFLAGS=
ARG GONOSUMDB=
ARG GOPRIVATE=
ARG GOINSECURE=
ENV GOTOOLCHAIN=local

# The monitor's JSON tokenizer (a header) and its libc (musl, linked
# statically), the static libseccomp runc links, besides the compiler;
# installed only when missing (a base that has them builds without a
# mirror).
RUN pkgs="gcc libc6-dev musl-tools make pkg-config libjsmn-dev libseccomp-dev ca-certificates"; \
	dpkg -s $pkgs >/dev/null 2>&1 || { \
		apt-get update && apt-get install -y --no-install-recommends $pkgs && rm -rf /var/lib/apt/lists/*; }

# runc, static with seccomp, from the Go module proxy: as runc's own
# `make static`, without libpathrs (a Rust library Debian does not ship).
ARG RUNC_VERSION=v1.5.3
RUN CGO_ENABLED=1 GOBIN=/runc go install -trimpath -buildvcs=false \
	-tags "seccomp urfave_cli_no_docs netgo osusergo" \
	-ldflags "-s -w -extldflags -static" \
	github.com/opencontainers/runc@${RUNC_VERSION}

WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .

# The binaries are copied onto nodes of any glibc: all static (pierd without
# cgo, the monitor linked with -static). The build fails if one is not.
ARG VERSION=dev
ARG SOURCE_DATE_EPOCH=
RUN CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false ${GOFLAGS}" \
	make bin/pierd bin/pier-shim bin/pier-shim-monitor bin/pier-install \
		VERSION="${VERSION}" CFLAGS="-O2 -Wall -Wextra -static" && \
	for b in bin/pierd bin/pier-shim bin/pier-shim-monitor bin/pier-install /runc/runc; do \
		if ldd "$b" >/dev/null 2>&1; then echo "$b is dynamic" >&2; exit 1; fi; \
	done && \
	test "$(bin/pierd --version)" = "pierd ${VERSION}" && \
	install -D -m 0755 -t /out/usr/local/bin bin/pier-install && \
	install -D -m 0755 -t /out/opt/pier/bin bin/pierd bin/pier-shim bin/pier-shim-monitor /runc/runc && \
	install -D -m 0644 -t /out/opt/pier/share deploy/pier.service deploy/cni/10-pier.conflist && \
	if [ -n "${SOURCE_DATE_EPOCH}" ]; then find /out -exec touch -h -d "@${SOURCE_DATE_EPOCH}" {} +; fi

FROM ${BASE_IMAGE}
# crun is Debian's, with the libraries it needs (the package is installed
# for them; its binary moves to /opt/pier/bin). The CNI plugins are only
# unpacked: installing them would bring iptables, which the host has.
# Nothing is installed of the packages' documents but their copyright
# files (as in the slim image), and no apt lists, caches or logs are kept.
RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
		'path-exclude /usr/share/man/*' >/etc/dpkg/dpkg.cfg.d/pier-build && \
	apt-get update && \
	apt-get install -y --no-install-recommends crun && \
	rm /etc/dpkg/dpkg.cfg.d/pier-build && \
	install -d /opt/pier/bin /opt/pier/cni/bin /usr/share/doc/containernetworking-plugins && \
	mv /usr/bin/crun /opt/pier/bin/crun && \
	rm -f /usr/lib/x86_64-linux-gnu/libcrun.a && \
	cd /tmp && apt-get download containernetworking-plugins && \
	dpkg-deb -x containernetworking-plugins_*.deb cni && \
	mv cni/usr/lib/cni/* /opt/pier/cni/bin/ && \
	mv cni/usr/share/doc/containernetworking-plugins/copyright /usr/share/doc/containernetworking-plugins/ && \
	cd / && rm -rf /tmp/* /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
		/var/log/apt /var/log/dpkg.log /var/log/alternatives.log /var/cache/ldconfig/aux-cache \
		/var/cache/debconf/*-old /var/lib/dpkg/*-old
COPY --from=build /out/ /

# REVISION and CREATED: the commit and its time (make image passes them).
# No licenses label: the repository states no licence yet.
ARG VERSION=dev
ARG REVISION=
ARG CREATED=
LABEL org.opencontainers.image.title="pier" \
	org.opencontainers.image.description="pier, a Kubernetes CRI container runtime: its node installer and binaries" \
	org.opencontainers.image.source="https://github.com/pier-runtime/pier" \
	org.opencontainers.image.version="${VERSION}" \
	org.opencontainers.image.revision="${REVISION}" \
	org.opencontainers.image.created="${CREATED}"

# Run casually, the image confers nothing: its user is not root. The chart
# runs the installer as root and privileged, as it must be to write the
# host's /etc and /opt and to talk to the host's systemd.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pier-install"]

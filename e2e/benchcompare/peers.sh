#!/bin/sh
# peers.sh gets the runtimes `make bench-compare` measures pier against and
# keeps them in PEERS (default /var/cache/pier-bench/peers), outside the
# repository; a peer already there is reused. Nothing is installed on the
# host: Debian's packages are unpacked (apt-get download, dpkg-deb -x), so
# no system service is started.
#
#   containerd-1.6/     Debian's containerd (usr/bin/containerd, its shims)
#   containerd-2.4.2/   containerd and containerd-shim-runc-v2, go install
#   crio-1.34.0/        crio (cmd/crio with its Makefile's build tags),
#                       pinns (its C source), Debian's conmon, and
#                       runc-oom, a wrapper of runc (see below; for
#                       benchcompare -crio-runc)
#
# Each peer is got on its own: one that fails is reported and left out, the
# others are still got. It exits non-zero if any failed.
#
# Needs: go, gcc, libseccomp-dev (CRI-O), the Go module proxy and Debian's
# package index (apt-get).
set -u

PEERS=${PEERS:-/var/cache/pier-bench/peers}
GO=${GO:-go}
CONTAINERD2=v2.4.2
CRIO=v1.34.0
mkdir -p "$PEERS" || exit 1
failed=

say() { echo "peers: $*" >&2; }

# unpack PACKAGE DIR: Debian's PACKAGE, unpacked into DIR (not installed).
unpack() {
	tmp=$(mktemp -d) || return 1
	(cd "$tmp" && apt-get -o APT::Sandbox::User=root download "$1" >/dev/null) || { rm -rf "$tmp"; say "apt-get download $1 failed (try apt-get update)"; return 1; }
	rm -rf "$2.tmp" && mkdir -p "$2.tmp" && dpkg-deb -x "$tmp"/"$1"_*.deb "$2.tmp" && rm -rf "$2" && mv "$2.tmp" "$2"
	rc=$?
	rm -rf "$tmp"
	return $rc
}

containerd16() {
	dir=$PEERS/containerd-1.6
	[ -x "$dir/usr/bin/containerd" ] && [ -x "$dir/usr/bin/containerd-shim-runc-v2" ] && return 0
	say "unpacking Debian's containerd into $dir"
	unpack containerd "$dir"
}

containerd2() {
	dir=$PEERS/containerd-${CONTAINERD2#v}
	[ -x "$dir/bin/containerd" ] && [ -x "$dir/bin/containerd-shim-runc-v2" ] && return 0
	say "building containerd $CONTAINERD2 into $dir/bin"
	mkdir -p "$dir/bin" &&
		GOBIN=$dir/bin CGO_ENABLED=1 GOFLAGS=-mod=mod $GO install -tags no_btrfs \
			github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD2 \
			github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD2
}

# runc-oom: CRI-O asks runc to give a pod's infra process oom_score_adj
# -998. Lowering it needs CAP_SYS_RESOURCE, which root in a container may
# lack, and runc then fails the create ("failed to update
# /proc/self/oom_score_adj: Permission denied"). The wrapper raises a
# requested value below the caller's own (which the caller can always set)
# to the caller's own in the bundle's config.json, then runs runc. CRI-O
# makes no infra container for pods whose containers have PID namespaces of
# their own (the benchmark's, as kubelet's by default): benchcompare runs
# plain runc unless -crio-runc names this, which costs a shell per call.
runc_oom() {
	cat >"$1.tmp" <<'EOF'
#!/bin/sh
# runc with process.oomScoreAdj raised to this process's own value when it
# asks for less (lowering it needs CAP_SYS_RESOURCE). Written by peers.sh.
bundle=
prev=
creates=
for a in "$@"; do
	case $prev in --bundle|-b) bundle=$a ;; esac
	case $a in --bundle=*) bundle=${a#--bundle=} ;; create|run) creates=1 ;; esac
	prev=$a
done
cfg=${bundle:-.}/config.json
own=$(cat /proc/self/oom_score_adj)
if [ -n "$creates" ] && [ -f "$cfg" ]; then
	want=$(jq '.process.oomScoreAdj // empty' "$cfg" 2>/dev/null)
	if [ -n "$want" ] && [ "$want" -lt "$own" ]; then
		jq -c --argjson v "$own" '.process.oomScoreAdj = $v' "$cfg" >"$cfg.oom" && mv "$cfg.oom" "$cfg"
	fi
fi
exec /usr/sbin/runc "$@"
EOF
	chmod 755 "$1.tmp" && mv "$1.tmp" "$1"
}

crio() {
	dir=$PEERS/crio-${CRIO#v}
	mkdir -p "$dir" || return 1
	[ -x "$dir/runc-oom" ] || runc_oom "$dir/runc-oom" || return 1
	if [ ! -x "$dir/conmon" ]; then
		say "unpacking Debian's conmon"
		unpack conmon "$dir/conmon-deb" && cp "$dir/conmon-deb/usr/bin/conmon" "$dir/conmon" || return 1
	fi
	[ -x "$dir/crio" ] && [ -x "$dir/pinns" ] && return 0
	say "building CRI-O $CRIO into $dir"
	mod=$(GOFLAGS=-mod=mod $GO mod download -json github.com/cri-o/cri-o@$CRIO | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$mod" ] || { say "go mod download github.com/cri-o/cri-o@$CRIO gave no directory"; return 1; }
	src=$dir/src
	rm -rf "$src" && cp -r "$mod" "$src" && chmod -R u+w "$src" && chmod +x "$src"/hack/*.sh || return 1
	# (module archives keep no exec bits: the Makefile runs hack/*.sh)
	# The build tags are those the Makefile computes on this machine.
	tags=$(cd "$src" && printf '_peers_tags:\n\t@echo $(BUILDTAGS)\n' | make --no-print-directory -f Makefile -f - _peers_tags) || return 1
	# Without gpgme's headers the signature code needs the pure-Go OpenPGP
	# tag, which is what the Makefile picks where gpgme-config exists.
	if ! pkg-config --exists gpgme 2>/dev/null; then
		case " $tags " in *" containers_image_openpgp "*) ;; *) tags="$tags containers_image_openpgp" ;; esac
	fi
	say "CRI-O build tags: $tags"
	(cd "$src" && CGO_ENABLED=1 $GO build -trimpath -tags "$tags" -ldflags '-s -w' -o "$dir/crio.tmp" ./cmd/crio) &&
		mv "$dir/crio.tmp" "$dir/crio" || return 1
	(cd "$src/pinns" && ${CC:-cc} -std=c99 -Os -O3 -Wall -Wextra -static -o "$dir/pinns.tmp" src/*.c) &&
		mv "$dir/pinns.tmp" "$dir/pinns" || return 1
	rm -rf "$src"
}

for peer in containerd16 containerd2 crio; do
	if ! $peer; then
		say "$peer: failed (see above); bench-compare will leave it out"
		failed="$failed $peer"
	fi
done
[ -z "$failed" ] || { say "not got:$failed"; exit 1; }
say "all peers are in $PEERS"

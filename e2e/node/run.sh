#!/bin/bash
# run.sh: pier's node test (make e2e-node). Boots a Debian bookworm VM with
# systemd as PID 1 and cgroup v2 only under qemu, installs this tree's pier
# in it as a node would (systemd unit, /etc/pier/config.toml), and runs the
# smoke test for both cgroup drivers and both runtime handlers, each test
# binary it is given for both drivers, and a power-off with a pod running
# followed by a check of pier's state after the reboot.
#
# The image is built once by build-image.sh and cached in $PIER_E2E_CACHE
# (default /var/cache/pier-e2e/node), keyed by that script's hash. Each run
# boots a qcow2 overlay of it (the cache stays clean) with a second disk, the
# run disk, that carries the binaries in and the results out (read back with
# debugfs: no mount, no loop device). No network device: all traffic stays
# inside the VM.
#
# Environment:
#   PIER_KUBELET=path     the kubelet binary (default _output/kubelet-v1.37.2
#                         of this tree, when it exists)
#   PIER_E2E_NODE_TESTS="./e2e/kubelet ..."  package directories whose test
#                         binaries run in the VM, once per cgroup driver
#                         (default ./e2e/kubelet when it exists)
#   PIER_E2E_KVM=1        use KVM instead of TCG (nested KVM may hang)
#   PIER_E2E_KEEP=1       keep the temporary directory (serial logs, disks)
#   PIER_E2E_POWEROFF_MAX=10  seconds a power-off with pods running may take
#   PIER_E2E_PHASES="suite reboot final deploy"  the boots to run, in order
#                         (deploy alone: the installer and the chart)
#   PIER_E2E_PIER_IMAGE=path  pier's image (an OCI archive) for the deploy
#                         phase, instead of building it from this tree
# Runs as root; expects bin/ built (make build) and crictl installed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export PATH=/usr/local/go/bin:/usr/local/bin:$PATH
T0=$(date +%s)
log() { echo "e2e-node: $*"; }
die() { log "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# Host packages.
missing=""
for p in qemu-system-x86 qemu-utils debootstrap e2fsprogs; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	log "installing$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The image, built once per version of build-image.sh.
cache=${PIER_E2E_CACHE:-/var/cache/pier-e2e/node}
key=$(sha256sum "$here/build-image.sh" | cut -c1-16)
img=$cache/$key
mkdir -p "$cache"
t=$(date +%s)
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$img/rootfs.img" ]; then
	log "building the node image (cache $img)"
	"$here/build-image.sh" "$img"
	# Images of older build scripts.
	for d in "$cache"/*/; do
		[ "${d%/}" = "$img" ] || rm -rf "$d"
	done
	image_note="built"
else
	image_note="cached"
fi
flock -u 9
image_s=$(( $(date +%s) - t ))
log "node image $image_note in ${image_s} s: $img"

tmp=$(mktemp -d /var/tmp/pier-e2e-node.XXXXXX)
qemu_pid=""
cleanup() {
	if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
		kill -9 "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
	fi
	if [ -n "${PIER_E2E_KEEP:-}" ]; then
		log "kept $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The run disk: binaries, pier's unit and CNI config, the in-VM script.
run=$tmp/run
mkdir -p "$run/bin" "$run/deploy/cni" "$run/results"
for b in pierd pier-shim pier-shim-monitor; do
	[ -x "bin/$b" ] || die "bin/$b missing: run make build"
	cp "bin/$b" "$run/bin/"
done
crictl=$(command -v crictl || true)
[ -n "$crictl" ] || die "crictl missing: run make deps"
cp "$crictl" "$run/bin/crictl"
cp deploy/pier.service "$run/deploy/"
cp deploy/cni/10-pier.conflist "$run/deploy/cni/"
cp "$here/vm/node-test.sh" "$run/"
mkdir -p "$run/fakebin"
cp "$here/vm/prebuilt" "$run/fakebin/prebuilt"
ln -s prebuilt "$run/fakebin/go"
ln -s prebuilt "$run/fakebin/make"
go build -o "$run/bin/registry" ./e2e/node/registry
tests=${PIER_E2E_NODE_TESTS:-}
if [ -z "$tests" ] && [ -d e2e/kubelet ]; then
	tests=./e2e/kubelet
fi
# The kubelet: $PIER_KUBELET, else the one the kubelet suite caches, built
# by its script when missing (about 6 minutes).
kubelet=${PIER_KUBELET:-/var/cache/pier-e2e/kubelet-v1.37.2}
if [ ! -x "$kubelet" ] && [ -x "$repo/_output/kubelet-v1.37.2" ]; then
	kubelet=$repo/_output/kubelet-v1.37.2
fi
if [ ! -x "$kubelet" ] && [ -f e2e/kubelet/build-kubelet.sh ]; then
	log "building the kubelet into $kubelet"
	OUT=$kubelet bash e2e/kubelet/build-kubelet.sh
fi
if [ -x "$kubelet" ]; then
	cp "$kubelet" "$run/bin/kubelet"
else
	log "no kubelet binary (PIER_KUBELET): tests that need one cannot run"
fi
for p in $tests; do
	n=$(basename "$p")
	log "go test -c $p"
	# A package of this tree (./e2e/kubelet), or a directory of another
	# checkout of the module (to try a suite not merged yet).
	(cd "$p" && go test -c -o "$run/bin/$n.test" .)
	# The test binary finds files by their path in the source tree
	# (testenv's deploy/cni, its package's own files): the VM gets them at
	# the same absolute paths.
	root=$(cd "$p" && dirname "$(go env GOMOD)")
	mkdir -p "$run/src/$n/tree/e2e"
	echo "$root" >"$run/src/$n/root"
	cp -a "$root/deploy" "$run/src/$n/tree/"
	cp -a "$p" "$run/src/$n/tree/e2e/$n"
	rm -f "$run/src/$n/tree/e2e/$n"/*.go
done
phases=${PIER_E2E_PHASES:-suite reboot final deploy}
# The deploy phase: pier's image (the Dockerfile, built with buildah from
# local bases) as a docker archive, and the chart rendered into static pods.
if [[ " $phases " == *" deploy "* ]]; then
	mkdir -p "$run/images" "$run/deploy-pods"
	t=$(date +%s)
	if [ -n "${PIER_E2E_PIER_IMAGE:-}" ]; then
		cp "$PIER_E2E_PIER_IMAGE" "$run/images/pier.tar"
	else
		log "building pier's image"
		go run ./e2e/node/pierimage -out "$run/images/pier.tar"
	fi
	log "pier's image in $(( $(date +%s) - t )) s: $(du -sh "$run/images/pier.tar" | cut -f1)"
	helm template pier deploy/helm/pier --namespace kube-system --kube-version 1.37.0 \
		--set kubelet.switch=true --set image.repository=pier-e2e.invalid/pier \
		--set image.tag=e2e --set image.pullPolicy=IfNotPresent >"$tmp/chart.yaml"
	go run ./e2e/node/staticpods -rendered "$tmp/chart.yaml" -out "$run/deploy-pods"
fi
size=$(( $(du -sm "$run" | cut -f1) + 256 ))
mkfs.ext4 -q -F -L pier-run -d "$run" "$tmp/run.img" "${size}M"
qemu-img create -q -f qcow2 -b "$img/rootfs.img" -F raw "$tmp/root.qcow2"

accel=(-accel tcg)
if [ -n "${PIER_E2E_KVM:-}" ]; then
	accel=(-accel kvm -cpu host)
fi

# boot PHASE TIMEOUT: boots the VM into PHASE and waits until it powers off
# (killed after TIMEOUT seconds). Prints the VM's PIER-E2E lines as they
# come; sets BOOT_S (start to the phase's first line), POWEROFF_S (the
# VM's power-off request to qemu's exit, "" when there was none) and RUN_S.
boot() {
	local phase=$1 timeout=$2 serial=$tmp/serial-$1.log start seen=0 n line
	local t_phase="" t_off="" t_end
	: >"$serial"
	start=$(date +%s.%N)
	qemu-system-x86_64 "${accel[@]}" -smp 2 -m 2048 -nodefaults -no-reboot \
		-display none -serial "file:$serial" -monitor none -nic none \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
		-append "console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1 pier.e2e=$phase" \
		-drive "file=$tmp/root.qcow2,if=virtio,format=qcow2" \
		-drive "file=$tmp/run.img,if=virtio,format=raw" &
	qemu_pid=$!
	while kill -0 "$qemu_pid" 2>/dev/null; do
		n=$(wc -l <"$serial")
		if [ "$n" -gt "$seen" ]; then
			while IFS= read -r line; do
				line=${line//$'\r'/}
				case "$line" in
				*"PIER-E2E POWEROFF"*) t_off=$(date +%s.%N); log "[$phase] power-off requested" ;;
				*"PIER-E2E phase"*) t_phase=$(date +%s.%N); log "[$phase] ${line#*PIER-E2E }" ;;
				*"PIER-E2E "*) log "[$phase] ${line#*PIER-E2E }" ;;
				esac
			done < <(sed -n "$((seen + 1)),${n}p" "$serial")
			seen=$n
		fi
		if awk -v s="$start" -v n="$(date +%s.%N)" -v t="$timeout" 'BEGIN { exit !(n - s > t) }'; then
			log "[$phase] timed out after $timeout s: killing the VM"
			kill -9 "$qemu_pid"
			echo "FAIL	vm/$phase	$timeout	timed out" >>"$tmp/host.tsv"
			break
		fi
		sleep 0.2
	done
	wait "$qemu_pid" || true
	qemu_pid=""
	t_end=$(date +%s.%N)
	BOOT_S=$([ -n "$t_phase" ] && awk -v a="$start" -v b="$t_phase" 'BEGIN { printf "%.1f", b - a }' || echo "")
	POWEROFF_S=$([ -n "$t_off" ] && awk -v a="$t_off" -v b="$t_end" 'BEGIN { printf "%.1f", b - a }' || echo "")
	RUN_S=$(awk -v a="$start" -v b="$t_end" 'BEGIN { printf "%.1f", b - a }')
	log "[$phase] boot ${BOOT_S:-?} s, whole ${RUN_S} s, power-off ${POWEROFF_S:-none} s"
	printf 'INFO\tboot/%s\t%s\tto the test unit\n' "$phase" "${BOOT_S:-0}" >>"$tmp/host.tsv"
	if [ -z "$t_phase" ]; then
		printf 'FAIL\tvm/%s\t%s\tthe test unit never started (see serial-%s.log)\n' "$phase" "$RUN_S" "$phase" >>"$tmp/host.tsv"
	fi
	if [ -n "$POWEROFF_S" ]; then
		# What systemd-shutdown waited for, from its console lines.
		local waited
		waited=$(tr -d '\r' <"$serial" | sed -n 's/.*systemd-shutdown.*\(Waiting for process: .*\)/\1/p' | sort -u | tr '\n' ';')
		# With pods running and pier's own unit, a node powers off within a
		# few seconds (suite: systemd driver, reboot: cgroupfs); the other
		# boots' figures are for information.
		local st=INFO name=$phase
		case "$phase" in
		suite) name=systemd-driver ;;
		reboot) name=cgroupfs-driver ;;
		esac
		if [ "$name" != "$phase" ]; then
			st=PASS
			awk -v s="$POWEROFF_S" -v m="$POWEROFF_MAX" 'BEGIN { exit !(s > m) }' && st=FAIL
		fi
		printf '%s\tpoweroff/%s\t%s\tsystemctl poweroff to qemu exit (at most %s s)%s\n' "$st" "$name" "$POWEROFF_S" "$POWEROFF_MAX" "${waited:+; $waited}" >>"$tmp/host.tsv"
	elif [ "$phase" = suite ] || [ "$phase" = reboot ]; then
		printf 'FAIL\tpoweroff/%s\t%s\tthe VM never asked to power off\n' "$phase" "$RUN_S" >>"$tmp/host.tsv"
	fi
}

POWEROFF_MAX=${PIER_E2E_POWEROFF_MAX:-10}
: >"$tmp/host.tsv"
for p in $phases; do
	case $p in
	suite) boot suite 2400 ;;
	deploy) boot deploy 1500 ;;
	*) boot "$p" 400 ;;
	esac
done

# Results out of the run disk.
out=${PIER_E2E_OUT:-$repo/_output/e2e-node}
rm -rf "$out"
mkdir -p "$out"
debugfs -R "rdump /results $out" "$tmp/run.img" >/dev/null 2>&1 || true
mv "$out/results"/* "$out/" 2>/dev/null || true
rmdir "$out/results" 2>/dev/null || true
cp "$tmp"/serial-*.log "$out/" 2>/dev/null || true
cat "$tmp/host.tsv" >>"$out/summary.tsv"

echo
echo "== e2e-node summary (logs in $out)"
printf '%-6s %-36s %8s  %s\n' STATUS CHECK SECONDS NOTE
printf 'INFO\timage/%s\t%s\t%s\n' "$image_note" "$image_s" "$img" | cat - "$out/summary.tsv" |
	awk -F'\t' '{ printf "%-6s %-36s %8s  %s\n", $1, $2, $3, substr($4, 1, 160) }'
pass=$(grep -c '^PASS' "$out/summary.tsv" || true)
fail=$(grep -c '^FAIL' "$out/summary.tsv" || true)
if [ -s "$out/cases.tsv" ]; then
	echo "== test cases (top level) per package and driver"
	grep -v $'\t[^\t]*/[^\t]*/[^\t]*/[^\t]*/[^\t]*/' "$out/cases.tsv" |
		awk -F'\t' '{ printf "%-6s %-60s %8s\n", $1, $2, $3 }'
	echo "== cases: $(grep -c '^PASS' "$out/cases.tsv" || true) passed, $(grep -c '^FAIL' "$out/cases.tsv" || true) failed (subtests included)"
fi
echo "== $pass passed, $fail failed, $(( $(date +%s) - T0 )) s in all"
[ "$pass" -gt 0 ] && [ "$fail" -eq 0 ]

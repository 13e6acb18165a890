#!/bin/bash
# build-image.sh OUTDIR: builds the e2e node image (Debian bookworm, systemd
# as PID 1, cgroup v2, runc, crun, CNI plugins) into OUTDIR as
#   rootfs.img  a raw ext4 disk (the whole disk is the filesystem)
#   vmlinuz, initrd.img  the cloud kernel and its initramfs, for qemu -kernel
# No loop device or mount is used: debootstrap writes a directory and
# mkfs.ext4 -d turns it into the disk. Runs as root. The packages come from
# the mirror the host's apt already uses.
set -euo pipefail

out=${1:?usage: build-image.sh OUTDIR}
suite=bookworm
# Packages of the node. busybox (the dynamic one) is the test images' base:
# e2e/testenv finds it in its cache directory. containerd is the runtime the
# deploy phase starts the kubelet on before pier's installer switches it
# (disabled here: the other phases run pier alone). criu: the kubelet
# suite's checkpoint test dumps a container for real on the VM's kernel
# (Debian 12's CRIU 3.17 cannot on kernels from 6.13 on, such as the host's).
packages=systemd-sysv,udev,kmod,linux-image-cloud-amd64,initramfs-tools,runc,crun,containernetworking-plugins,iptables,dbus,iproute2,procps,ca-certificates,util-linux,busybox,jq,less,apparmor,containerd,criu

url=$("$(dirname "$0")/debian-mirror.sh" "$suite" | head -n1)
[ -n "$url" ] || { echo "build-image: no $suite mirror in /etc/apt/sources.list*" >&2; exit 1; }

mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
# debootstrap mounts /proc and /sys in the root while it installs: never
# remove through a mount left by a failed run.
cleanup() {
	local m
	for m in $(findmnt -rn -o TARGET | grep -F "$work/" | sort -r); do
		umount -l "$m" || true
	done
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT
root=$work/root

t0=$(date +%s)
echo "build-image: debootstrap $suite from the host's mirror"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$url" >"$work/debootstrap.log" 2>&1 || {
	tail -n 30 "$work/debootstrap.log" >&2
	tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
	exit 1
}
t1=$(date +%s)

# Node configuration.
echo pier-node >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tpier-node\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf '/dev/vda\t/\text4\terrors=remount-ro\t0\t1\n' >"$root/etc/fstab"
: >"$root/etc/machine-id" # systemd makes one at first boot
chroot "$root" passwd -d root >/dev/null
# A persistent journal: the next boot reads the previous boot's shutdown.
mkdir -p "$root/var/log/journal"
# containerd runs only when the deploy phase starts it.
rm -f "$root/etc/systemd/system/multi-user.target.wants/containerd.service"
# No network but loopback: nothing waits for one.
ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd-wait-online.service"
# A root shell on the serial console for whoever watches it.
mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,38400,9600 %%I $TERM\n' \
	>"$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"
# pier-e2e.service: at every boot, mount the run disk the host hands in
# (label pier-run) on /e2e and run its node-test.sh; without one, do nothing.
cat >"$root/usr/local/sbin/pier-e2e" <<'SH'
#!/bin/sh
for i in $(seq 60); do [ -e /dev/disk/by-label/pier-run ] && break; sleep 0.5; done
[ -e /dev/disk/by-label/pier-run ] || { echo "pier-e2e: no run disk"; exit 0; }
mkdir -p /e2e && mount /dev/disk/by-label/pier-run /e2e && exec /e2e/node-test.sh
SH
chmod 0755 "$root/usr/local/sbin/pier-e2e"
cat >"$root/etc/systemd/system/pier-e2e.service" <<'UNIT'
[Unit]
Description=pier e2e tests from the run disk
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/pier-e2e
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/pier-e2e.service "$root/etc/systemd/system/multi-user.target.wants/pier-e2e.service"
# testenv's busybox cache (Debian's dynamic busybox, as on a host with apt).
mkdir -p "$root/var/cache/pier-e2e/busybox/root/bin"
cp "$root/bin/busybox" "$root/var/cache/pier-e2e/busybox/root/bin/busybox"
# Less to keep: docs, man pages, apt lists.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/debootstrap

cp "$(readlink -f "$root/vmlinuz")" "$work/vmlinuz"
cp "$(readlink -f "$root/initrd.img")" "$work/initrd.img"
# 2 GiB more than the root needs: images, layers and containers.
size=$(( $(du -sm "$root" | cut -f1) + 2048 ))
mkfs.ext4 -q -F -L pier-root -d "$root" "$work/rootfs.img" "${size}M"
t2=$(date +%s)

mv "$work/vmlinuz" "$work/initrd.img" "$work/rootfs.img" "$out/"
echo "build-image: debootstrap $((t1 - t0)) s, image $((t2 - t1)) s, $(du -sh "$out/rootfs.img" | cut -f1) in $out"

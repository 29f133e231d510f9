#!/usr/bin/env bash
# Build cloudctl's tiny test guest from Debian packages only.
#
#   guest/build.sh OUTDIR
#
# Produces:
#   OUTDIR/vmlinuz      Debian's cloud kernel (the version linux-image-cloud-amd64 depends on)
#   OUTDIR/initrd.img   busybox-static + guest/init as /init + the virtio/iso9660/ACPI-button modules
#   OUTDIR/root.qcow2   a small ext4 disk (label "cloudroot"), to be used as a backing file for overlays
#   OUTDIR/build-info   what was built (kernel package + version, busybox version, input hashes)
#
# The only downloads are `apt-get download` of the versioned kernel package and busybox-static
# (nothing is installed). Idempotent and cached: if OUTDIR holds a complete build for the same
# kernel/busybox versions and the same guest/init + build.sh, it exits at once. If apt's package
# index cannot be read (offline) but a complete build exists, that build is kept.
#
# Environment:
#   CLOUDCTL_GUEST_KERNEL_PKG  force a kernel package (e.g. linux-image-6.1.0-56-cloud-amd64)
#   CLOUDCTL_GUEST_ROOT_MB     size of the ext4 root disk (default 64)
#   CLOUDCTL_GUEST_FORCE=1     rebuild even if the cache is valid
set -euo pipefail

usage() { echo "usage: $0 OUTDIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
OUT=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INIT_SRC=$HERE/init
ROOT_MB=${CLOUDCTL_GUEST_ROOT_MB:-64}
# Modules /init loads (dependencies are added and ordered automatically from each .ko's modinfo).
# virtio_scsi + sr_mod: a config drive attached as a CD-ROM (<disk device='cdrom'> on bus='scsi';
# this kernel has no AHCI, so a SATA CD-ROM on q35 is invisible to the guest).
WANT_MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
cdrom isofs failover net_failover virtio_net button evdev scsi_common scsi_mod virtio_scsi sr_mod sd_mod"

log() { echo "guest/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ -f "$INIT_SRC" ] || die "missing $INIT_SRC"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# One build at a time per OUTDIR.
exec 9>"$OUT/.lock"
flock 9

sha() { sha256sum "$1" | cut -d' ' -f1; }

# One apt-cache call (~0.7 s here) gives the metapackage's versioned dependency and busybox's version:
#   Package: linux-image-cloud-amd64 / Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
#   Package: busybox-static / Version: 1:1.35.0-4+deb12u1+b1
resolve() {  # prints "KPKG KVERSION BBVERSION" (KVERSION may be "-")
    apt-cache show --no-all-versions linux-image-cloud-amd64 busybox-static 2>/dev/null | awk '
        /^Package: /  { pkg = $2 }
        /^Version: / && pkg == "busybox-static" { bb = $2 }
        /^Depends: / && pkg == "linux-image-cloud-amd64" {
            n = split(substr($0, 10), deps, ",")
            for (i = 1; i <= n; i++) {
                d = deps[i]; gsub(/^ +| +$/, "", d)
                if (d ~ /^linux-image-[0-9]/) {
                    split(d, w, " "); kp = w[1]; kv = "-"
                    if (d ~ /\(= /) { kv = d; sub(/.*\(= */, "", kv); sub(/\).*/, "", kv) }
                    break
                }
            }
        }
        END { if (kp != "" && bb != "") print kp, kv, bb }'
}

RES=$(resolve || true)
if [ -z "$RES" ] && [ "$(id -u)" = 0 ]; then
    log "apt-cache does not know linux-image-cloud-amd64 / busybox-static; running apt-get update"
    apt-get update -q >&2 || true
    RES=$(resolve || true)
fi
if [ -z "$RES" ]; then
    if [ -f "$OUT/build-info" ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/root.qcow2" ]; then
        log "cannot resolve the kernel package (no apt index); keeping the existing build in $OUT"
        exit 0
    fi
    die "cannot resolve the kernel from 'apt-cache show linux-image-cloud-amd64' (run apt-get update?)"
fi
read -r KPKG KVER_PKG BBVER <<<"$RES"
if [ -n "${CLOUDCTL_GUEST_KERNEL_PKG:-}" ]; then
    KPKG=$CLOUDCTL_GUEST_KERNEL_PKG; KVER_PKG=-
fi
if [ "$KVER_PKG" = - ]; then
    KVER_PKG=$(apt-cache policy "$KPKG" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -n1)
    [ -n "$KVER_PKG" ] && [ "$KVER_PKG" != "(none)" ] || die "no installable version of $KPKG"
fi

INFO="kernel_pkg=$KPKG
kernel_pkg_version=$KVER_PKG
busybox_version=$BBVER
init_sha256=$(sha "$INIT_SRC")
build_sh_sha256=$(sha "${BASH_SOURCE[0]}")
root_mb=$ROOT_MB"

if [ "${CLOUDCTL_GUEST_FORCE:-0}" != 1 ] && [ -f "$OUT/build-info" ] \
   && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/root.qcow2" ] \
   && [ "$(grep -v '^kernel_release=' "$OUT/build-info")" = "$INFO" ]; then
    log "cached: $OUT ($KPKG $KVER_PKG)"
    exit 0
fi

T0=$(date +%s.%N)
rm -f "$OUT/build-info"
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- download (cache the .debs in OUTDIR/debs so an init-only change does not re-download) ------
DEBS=$OUT/debs
mkdir -p "$DEBS"
deb_for() {  # PKG VERSION -> path of the cached .deb or empty
    local f
    for f in "$DEBS/$1"_*.deb; do
        [ -f "$f" ] || continue
        if [ "$(dpkg-deb -f "$f" Version)" = "$2" ]; then echo "$f"; return 0; fi
    done
    return 0
}
need=""
[ -n "$(deb_for "$KPKG" "$KVER_PKG")" ] || need="$need $KPKG=$KVER_PKG"
[ -n "$(deb_for busybox-static "$BBVER")" ] || need="$need busybox-static=$BBVER"
if [ -n "$need" ]; then
    log "apt-get download$need"
    sandbox=()
    [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
    # shellcheck disable=SC2086
    (cd "$WORK" && apt-get download -q "${sandbox[@]}" $need >&2)
    # keep only the versions we use
    for p in "$KPKG" busybox-static; do rm -f "$DEBS/$p"_*.deb; done
    mv "$WORK"/*.deb "$DEBS/"
fi
KDEB=$(deb_for "$KPKG" "$KVER_PKG")
BBDEB=$(deb_for busybox-static "$BBVER")
[ -n "$KDEB" ] && [ -n "$BBDEB" ] || die "download failed"

dpkg -x "$KDEB" "$WORK/kpkg"
dpkg -x "$BBDEB" "$WORK/bb"
BB=$WORK/bb/bin/busybox
[ -x "$BB" ] || die "busybox-static package has no /bin/busybox"

KREL=$(ls "$WORK/kpkg/lib/modules" | head -n1)
[ -n "$KREL" ] || die "no /lib/modules in $KDEB"
MODDIR=$WORK/kpkg/lib/modules/$KREL
[ -f "$WORK/kpkg/boot/vmlinuz-$KREL" ] || die "no /boot/vmlinuz-$KREL in $KDEB"

# --- initramfs tree ------------------------------------------------------------------------------
R=$WORK/initrd
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,mnt/config,mnt/root,root,var/log,lib/modules}
cp "$BB" "$R/bin/busybox"
for applet in $("$BB" --list); do
    [ "$applet" = busybox ] && continue
    ln -sf busybox "$R/bin/$applet"
done
cp "$INIT_SRC" "$R/init"
chmod 0755 "$R/init"
echo "root:x:0:0:root:/root:/bin/sh" > "$R/etc/passwd"
echo "root:x:0:" > "$R/etc/group"
echo "$KREL" > "$R/etc/cloudctl-kernel"
if [ "$(id -u)" = 0 ]; then  # the kernel's built-in initramfs has /dev/console anyway; /init also mounts devtmpfs
    mknod -m 0600 "$R/dev/console" c 5 1 2>/dev/null || true
fi

# Modules: resolve dependencies from each module's .modinfo "depends=" and emit a load order.
declare -A MODPATH=() SEEN=()
while IFS= read -r -d '' f; do
    b=${f##*/}; b=${b%%.ko*}
    MODPATH[$b]=$f
done < <(find "$MODDIR/kernel" -name '*.ko*' -print0)
ORDER=()
add_mod() {
    local m=$1 dep deps f
    [ -n "${SEEN[$m]:-}" ] && return 0
    SEEN[$m]=1
    f=${MODPATH[$m]:-}
    if [ -z "$f" ]; then
        # built into this kernel? then there is nothing to load
        if grep -q "/$m.ko\$" "$MODDIR/modules.builtin" 2>/dev/null; then return 0; fi
        die "module $m not found in $KPKG"
    fi
    case $f in
        *.ko) cp "$f" "$R/lib/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$f" > "$R/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" > "$R/lib/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$f" > "$R/lib/modules/$m.ko" ;;
        *) die "unknown module format: $f" ;;
    esac
    deps=$(tr '\0' '\n' < "$R/lib/modules/$m.ko" | sed -n 's/^depends=//p' | head -n1)
    for dep in ${deps//,/ }; do add_mod "$dep"; done
    ORDER+=("$m")
}
for m in $WANT_MODULES; do add_mod "$m"; done
printf '%s\n' "${ORDER[@]}" > "$R/etc/cloudctl-modules"

(cd "$R" && find . | LC_ALL=C sort | "$BB" cpio -o -H newc 2>/dev/null | gzip -6 > "$WORK/initrd.img")

# --- root disk -----------------------------------------------------------------------------------
RF=$WORK/rootfs
mkdir -p "$RF/etc"
echo "hello-from-cloudctl-root" > "$RF/hello.txt"
echo "cloudctl test guest root disk ($KPKG)" > "$RF/etc/cloudctl-root"
truncate -s "${ROOT_MB}M" "$WORK/root.raw"
mkfs.ext4 -q -F -L cloudroot -d "$RF" "$WORK/root.raw"
qemu-img convert -q -f raw -O qcow2 "$WORK/root.raw" "$WORK/root.qcow2"

# --- publish -------------------------------------------------------------------------------------
cp "$WORK/kpkg/boot/vmlinuz-$KREL" "$WORK/vmlinuz"
for f in vmlinuz initrd.img root.qcow2; do
    chmod 0644 "$WORK/$f"
    mv -f "$WORK/$f" "$OUT/$f"
done
printf '%s\nkernel_release=%s\n' "$INFO" "$KREL" > "$OUT/build-info.tmp"
mv -f "$OUT/build-info.tmp" "$OUT/build-info"
T1=$(date +%s.%N)
log "built $OUT ($KREL, modules: ${ORDER[*]}) in $(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.1f", b-a}') s"

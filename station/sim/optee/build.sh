#!/bin/sh
# build.sh - build the OP-TEE board that `station sim up --kind optee` boots under QEMU (TCG, no KVM):
#   TF-A (PLAT=qemu, SPD=opteed) + OP-TEE OS (vexpress-qemu_armv8a, PKCS#11 TA built in as early TA)
#   + Debian's u-boot (qemu_arm64, BL33)                      -> OUT/flash.bin
#   + optee_client (tee-supplicant, libteec, libckteec) cross-built from the pinned release
#   + Debian bookworm arm64 kernel (OP-TEE driver as module)   -> OUT/Image
#   + Debian bookworm arm64 userland (mmdebstrap) + init.sh    -> OUT/rootfs.cpio
# Ported from the kit in shared/optee-qemu (build.sh there); driven by station/sim/optee_build.py,
# which checks the host first and keys the output directory by the checksums of the inputs.
# Usage: build.sh WORK OUT        WORK keeps sources, downloads and the userland between builds;
#                                 OUT receives flash.bin, Image, rootfs.cpio, then a "complete" stamp.
# Env:   OPTEE_SOURCES (directory of the pinned release tarballs; else git clones of the pinned tags)
#        OPTEE_REF=4.10.0  TFA_REF=lts-v2.14.6  JOBS=2
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK=$1; OUT=$2
mkdir -p "$WORK" "$OUT" "$WORK/debs"; WORK="$(cd "$WORK" && pwd)"; OUT="$(cd "$OUT" && pwd)"
DEBS=$WORK/debs
OPTEE_OS_GIT=${OPTEE_OS_GIT:-https://github.com/OP-TEE/optee_os.git}
OPTEE_CLIENT_GIT=${OPTEE_CLIENT_GIT:-https://github.com/OP-TEE/optee_client.git}
TFA_GIT=${TFA_GIT:-https://github.com/ARM-software/arm-trusted-firmware.git}
OPTEE_REF=${OPTEE_REF:-4.10.0}; TFA_REF=${TFA_REF:-lts-v2.14.6}; JOBS=${JOBS:-2}
KPKG=linux-image-arm64
export PATH=/usr/sbin:/usr/bin:/sbin:/bin   # Debian's python3 (pyelftools), not a venv's
NICE="nice -n 19"
log() { echo "[optee build $(date -u +%H:%M:%S)] $*"; }
fail() { echo "optee build: $*" >&2; exit 1; }
# Sources: the pinned release tarballs in $OPTEE_SOURCES when present, else a git clone of the pinned tag.
src() { # src <git> <ref> <dir>
  [ -f "$WORK/$3/.extracted" ] && return 0
  rm -rf "$WORK/$3"
  case $3 in optee_os) t=optee_os-$2;; optee_client) t=optee_client-$2;; tfa) t=trusted-firmware-a-$2;; esac
  if [ -n "${OPTEE_SOURCES:-}" ] && [ -f "$OPTEE_SOURCES/$t.tar.xz" ]; then
    mkdir -p "$WORK/$3" && tar -xJf "$OPTEE_SOURCES/$t.tar.xz" -C "$WORK/$3" --strip-components=1
  else
    log "no $t.tar.xz in OPTEE_SOURCES=${OPTEE_SOURCES:-}: cloning $1 at $2"
    git clone -q --depth 1 --branch "$2" "$1" "$WORK/$3" || fail "could not clone $1 at $2"
  fi
  touch "$WORK/$3/.extracted"
}
debs() {
  [ -f $DEBS/.done ] && return 0
  log "Debian packages: u-boot-qemu, $KPKG:arm64"
  cd $DEBS; rm -rf ./*
  apt-get download u-boot-qemu "$KPKG:arm64" >$WORK/debs.log 2>&1 || {
    apt-get update -qq >>$WORK/debs.log 2>&1 && apt-get download u-boot-qemu "$KPKG:arm64" >>$WORK/debs.log 2>&1; } \
    || fail "apt-get download u-boot-qemu $KPKG:arm64 failed (see $WORK/debs.log); run: dpkg --add-architecture arm64 && apt-get update"
  KDEB=$(dpkg-deb -f ${KPKG}_*_arm64.deb Depends | sed 's/ (.*//')   # linux-image-6.1.0-NN-arm64
  apt-get download "$KDEB:arm64" >>$WORK/debs.log 2>&1 || fail "apt-get download $KDEB:arm64 failed (see $WORK/debs.log)"
  dpkg-deb -x u-boot-qemu_*_all.deb uboot
  dpkg-deb -x ${KDEB}_*_arm64.deb kernel
  touch .done
}
firmware() {
  debs
  src "$OPTEE_OS_GIT" "$OPTEE_REF" optee_os
  src "$TFA_GIT" "$TFA_REF" tfa
  log "OP-TEE OS $OPTEE_REF + PKCS#11 TA"; cd $WORK/optee_os
  $NICE make -j$JOBS CROSS_COMPILE=aarch64-linux-gnu- CROSS_COMPILE_core=aarch64-linux-gnu- \
    CROSS_COMPILE_ta_arm64=aarch64-linux-gnu- PLATFORM=vexpress-qemu_armv8a CFG_ARM64_core=y \
    CFG_USER_TA_TARGETS=ta_arm64 CFG_ARM_GICV3=y CFG_TEE_CORE_NB_CORE=2 \
    CFG_PKCS11_TA=y \
    CFG_CORE_RESERVED_SHM=n CFG_DT=y DEBUG=0 CFG_TEE_CORE_LOG_LEVEL=2 CFG_TEE_TA_LOG_LEVEL=1 \
    O=out/arm all >$WORK/optee_os.log 2>&1 || fail "OP-TEE OS build failed; see $WORK/optee_os.log"
  # CFG_CORE_RESERVED_SHM=n: the default reserved SHM at 0x42000000 overlaps the ~33 MB Debian
  # kernel that u-boot loads at 0x40400000; dynamic SHM is used instead.
  O=$WORK/optee_os/out/arm/core
  log "TF-A $TFA_REF"; cd $WORK/tfa
  $NICE make -j$JOBS CROSS_COMPILE=aarch64-linux-gnu- PLAT=qemu DEBUG=0 LOG_LEVEL=30 \
    QEMU_USE_GIC_DRIVER=QEMU_GICV3 BL32_RAM_LOCATION=tdram SPD=opteed \
    BL32=$O/tee-header_v2.bin BL32_EXTRA1=$O/tee-pager_v2.bin BL32_EXTRA2=$O/tee-pageable_v2.bin \
    BL33=$DEBS/uboot/usr/lib/u-boot/qemu_arm64/u-boot.bin all fip >$WORK/tfa.log 2>&1 \
    || fail "TF-A build failed; see $WORK/tfa.log"
  B=build/qemu/release; rm -f $OUT/flash.bin
  dd if=$B/bl1.bin of=$OUT/flash.bin bs=4096 conv=notrunc status=none
  dd if=$B/fip.bin of=$OUT/flash.bin seek=64 bs=4096 conv=notrunc status=none
  cp $WORK/optee_os/out/arm/ta/pkcs11/fd02c9da-306c-48c7-a49c-bbd827ae86ee.ta $WORK/
}
client() {
  src "$OPTEE_CLIENT_GIT" "$OPTEE_REF" optee_client
  log "optee_client $OPTEE_REF"; cd $WORK/optee_client; rm -rf build; mkdir build; cd build
  { $NICE cmake .. -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_SYSTEM_NAME=Linux \
    -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON -DWITH_TEEACL=OFF -DRPMB_EMU=OFF -DCFG_TEE_FS_PARENT_PATH=/var/lib/tee \
    && $NICE make -j$JOBS && rm -rf $WORK/optee-client && make DESTDIR=$WORK/optee-client install; } \
    >$WORK/optee_client.log 2>&1 || fail "optee_client build failed; see $WORK/optee_client.log"
}
kernel() {
  debs
  cp $DEBS/kernel/boot/vmlinuz-* $OUT/Image    # Debian's arm64 vmlinuz is an uncompressed Image
}
rootfs() {
  [ -f $WORK/rootfs/.complete ] && return 0
  log "Debian bookworm arm64 userland (mmdebstrap, 1.5-2 min)"
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 2>/dev/null || true
  rm -rf $WORK/rootfs
  $NICE mmdebstrap --arch=arm64 --variant=minbase \
    --include=opensc,libengine-pkcs11-openssl,openssl,kmod,iproute2,openssh-server,openssh-sftp-server,procps \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' bookworm $WORK/rootfs >$WORK/rootfs.log 2>&1 \
    || fail "mmdebstrap failed; see $WORK/rootfs.log"
  touch $WORK/rootfs/.complete
}
initramfs() {
  log "initramfs"
  R=$WORK/stage; rm -rf $R; cp -a $WORK/rootfs $R; rm -f $R/.complete
  cp -a $WORK/optee-client/usr/lib/lib*.so* $R/usr/lib/        # -> /usr/lib/libckteec.so.0
  cp -a $WORK/optee-client/usr/sbin/tee-supplicant $R/usr/sbin/
  # The PKCS#11 TA is loaded by tee-supplicant from /lib/optee_armtz, as on a Yocto image (not an
  # early TA built into OP-TEE OS): a board booted with welma.no_ta=1 hides it -> the real "TA not found".
  mkdir -p $R/lib/optee_armtz; cp $WORK/*.ta $R/lib/optee_armtz/
  KVER=$(ls $DEBS/kernel/lib/modules); K=$DEBS/kernel/lib/modules/$KVER
  for m in kernel/drivers/tee kernel/drivers/char/hw_random/optee-rng.ko \
           kernel/drivers/net/virtio_net.ko kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
           kernel/drivers/virtio/virtio_mmio.ko kernel/drivers/block/virtio_blk.ko \
           kernel/fs/ext4 kernel/fs/jbd2 kernel/fs/overlayfs kernel/fs/mbcache.ko kernel/lib/crc16.ko kernel/crypto/crc32c_generic.ko; do
    mkdir -p $R/lib/modules/$KVER/$(dirname $m); cp -a $K/$m $R/lib/modules/$KVER/$(dirname $m)/
  done
  cp $K/modules.builtin* $K/modules.order $R/lib/modules/$KVER/ 2>/dev/null || true
  chroot $R /sbin/depmod $KVER
  cp $HERE/init.sh $R/init; chmod 755 $R/init
  cp $HERE/reboot.sh $R/usr/sbin/reboot; chmod 755 $R/usr/sbin/reboot   # minbase has no init system
  # A development image: root logs in on the console without a password (as the SoftHSM2 boards).
  sed -i 's/^root:[^:]*:/root::/' $R/etc/shadow
  rm -f $R/etc/ssh/ssh_host_*     # each board's own host key comes from its board disk
  mkdir -p $R/root/.ssh; chmod 700 $R/root/.ssh
  # What a board never runs goes (perl, charset converters, time zones, apt): under TCG, u-boot loading
  # the initramfs over fw_cfg and the kernel unpacking it are most of the boot, so it is kept small and
  # compressed with lz4 (inflating gzip in an emulated CPU took longer than the whole rest of the boot).
  rm -rf $R/var/cache/apt/* $R/var/lib/apt/lists/* $R/usr/share/perl $R/usr/share/perl5 \
    $R/usr/lib/aarch64-linux-gnu/perl $R/usr/lib/aarch64-linux-gnu/perl-base $R/usr/bin/perl* \
    $R/usr/lib/aarch64-linux-gnu/gconv $R/usr/share/zoneinfo $R/usr/share/info $R/usr/share/bash-completion \
    $R/usr/share/common-licenses $R/usr/lib/apt $R/usr/bin/apt* $R/usr/lib/aarch64-linux-gnu/libapt-* \
    $R/var/lib/dpkg/info/*.md5sums
  (cd $R && find . | cpio -o -H newc --quiet | lz4 -l -9 -q -c > $OUT/rootfs.cpio.tmp) && mv $OUT/rootfs.cpio.tmp $OUT/rootfs.cpio
  rm -rf $R
}
T0=$(date +%s)
firmware; client; kernel; rootfs; initramfs
log "done in $(( $(date +%s) - T0 ))s"
touch $OUT/complete

#!/bin/sh
# PID 1 of a simulated OP-TEE board (`station sim up --kind optee`), installed as /init of the initramfs.
# The board's identity comes from its read-only board disk (label welma-board: hostname, SSH host key,
# authorized_keys); its /var/lib (secure storage /var/lib/tee, certificates) from its persistent disk (label welma-tee).
# Faults (faults disk, or the kernel argument welma.no_ta=1): no-ta boots without the PKCS#11 TA (OP-TEE's
# real "TA not found"); abrupt-reset is read by reboot.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo "welma-init: uptime $(cut -d' ' -f1 /proc/uptime)"
for m in optee optee-rng virtio_mmio virtio_net virtio_blk ext4 overlay; do modprobe $m 2>/dev/null; done
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
  ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
fi
# udev is not running: wait for the virtio disks to appear (they probe asynchronously).
i=0; while [ $i -lt 50 ] && ! { blkid -L welma-board >/dev/null 2>&1 && blkid -L welma-tee >/dev/null 2>&1; }; do sleep 0.1; i=$((i+1)); done
# The faults disk (raw, starts with "welma-faults"): what `station sim fault` arms, read with O_DIRECT
# so a change made by the host while the board runs is seen at once.
for d in /dev/vd?; do
  [ "$(dd if=$d bs=512 count=1 iflag=direct 2>/dev/null | head -c 12)" = welma-faults ] && ln -sf $d /run/welma-faults
done
faults() { [ -e /run/welma-faults ] && dd if=/run/welma-faults bs=4096 count=1 iflag=direct 2>/dev/null | tr -d '\000' | sed 1d; }
mkdir -p /run/board /run/persist
mount -o ro -L welma-board /run/board || echo "welma-init: no board disk (label welma-board)"
# /var/lib persists as on a real board's data partition (the token store /var/lib/tee, the certificates
# /var/lib/*.cert): an overlay whose upper layer is on the persistent disk (label welma-tee).
if mount -t ext4 -L welma-tee /run/persist; then
  mkdir -p /run/persist/var-lib /run/persist/.work
  mount -t overlay overlay -o lowerdir=/var/lib,upperdir=/run/persist/var-lib,workdir=/run/persist/.work /var/lib \
    && echo "welma-init: /var/lib on $(blkid -L welma-tee)"
fi
mkdir -p /var/lib/tee
[ -s /run/board/hostname ] && hostname "$(cat /run/board/hostname)"
if [ -s /run/board/ssh_host_ed25519_key ]; then
  install -m 600 /run/board/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
  install -m 644 /run/board/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub
fi
[ -s /run/board/authorized_keys ] && install -m 600 /run/board/authorized_keys /root/.ssh/authorized_keys
printf '%s\n' 'HostKey /etc/ssh/ssh_host_ed25519_key' 'PermitRootLogin prohibit-password' \
  'PasswordAuthentication no' 'KbdInteractiveAuthentication no' 'UseDNS no' >/etc/ssh/sshd_config.d/welma.conf
if grep -qw welma.no_ta=1 /proc/cmdline || faults | grep -qx no-ta; then
  rm -f /lib/optee_armtz/*.ta; echo "welma-init: booting WITHOUT the PKCS#11 TA (fault no-ta)"
fi
tee-supplicant -d
mkdir -p /run/sshd
/usr/sbin/sshd
echo "welma-init: ready, uptime $(cut -d' ' -f1 /proc/uptime)"
# The console: a real getty and login, again after every logout.
while :; do
  /sbin/agetty -L 115200 ttyAMA0 vt100
  sleep 0.2
done

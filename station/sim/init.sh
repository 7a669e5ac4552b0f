#!/bin/bash
# PID 1 of one simulated Welma board, started by power.sh through `unshare` in fresh mount, PID
# and UTS namespaces.  It builds the board's view of the filesystem, starts sshd (and the serial
# console's getty), then waits for `reboot`.  Every mount below is private to the namespace and
# disappears with it; nothing is written to the host's system directories.
# Usage: init.sh DEVICE_ENV  (the file written by station/sim/layout.py).
set -euo pipefail
# shellcheck source=/dev/null
. "$1"

log() { printf '%s init: %s\n' "$(date '+%H:%M:%S.%3N')" "$*"; }

hostname "$SIM_HOSTNAME"

# The station home may live below /tmp or /root, which get their own tmpfs further down: resolve
# or mount everything that is read from the home before those are hidden.
console_tty=
if [ -n "$SIM_CONSOLE_DEVICE_LINK" ]; then
    console_tty=$(readlink -e "$SIM_CONSOLE_DEVICE_LINK")
fi

mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/sim/board /run/ssh /run/sshd
# The farm's control files (faults, keygen delay, the PKCS#11 module link) for the board's tools.
mount --bind "$SIM_BOARD_DIR" /run/sim/board

# Persistent per-board /var/lib: the secure-storage token (/var/lib/tee) and the certificates.
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$SIM_VARLIB_UPPER,workdir=$SIM_VARLIB_WORK" /var/lib
mkdir -p /var/lib/tee
chmod 0700 /var/lib/tee

# /usr/lib/libckteec.so.0 (the OP-TEE PKCS#11 client library) is SoftHSM2 here.  A tmpfs over
# /usr/lib is impossible (libc lives there), so the one extra symlink comes in as a read-only
# overlay layer.  It points into /run/sim/board so the no-module fault can remove it at runtime.
mount -t overlay overlay -o "ro,lowerdir=$SIM_USRLIB_LAYER:/usr/lib" /usr/lib
# /usr/sbin/reboot links to systemctl on Debian: a bind-mount over it would hide systemctl, so
# our reboot comes in as a read-only overlay layer too.
mount -t overlay overlay -o "ro,lowerdir=$SIM_USRSBIN_LAYER:/usr/sbin" /usr/sbin
mount --bind -o ro "$SIM_SOFTHSM_CONF" /etc/softhsm/softhsm2.conf

# pkcs11-tool as the board runs it: the wrapper adds the keygen delay and the drop-ssh fault, then
# runs the real binary, which it finds here because /usr/bin/pkcs11-tool is the wrapper.
touch /run/sim/pkcs11-tool.real
mount --bind /usr/bin/pkcs11-tool /run/sim/pkcs11-tool.real
mount --bind -o ro "$SIM_PKCS11_WRAPPER" /usr/bin/pkcs11-tool

cp "$SIM_CONSOLE_SCRIPT" /run/sim/console
# Every SSH session goes through the gate (sshd's ForceCommand), where command faults strike.
install -m 0755 "$SIM_GATE_SCRIPT" /run/sim/gate
install -m 0600 "$SIM_HOST_KEY" /run/ssh/ssh_host_ed25519_key
install -m 0644 "$SIM_HOST_KEY.pub" /run/ssh/ssh_host_ed25519_key.pub
# sshd's StrictModes rejects an authorized_keys file below a world-writable directory such as
# /tmp, so sshd reads root-owned copies on the board's own /run.
install -m 0600 "$SIM_AUTHORIZED_KEYS" /run/ssh/authorized_keys
install -m 0644 "$SIM_SSHD_CONFIG" /run/ssh/sshd_config

# The SoC unique id, as a real board's device tree shows it (a NUL-terminated string, read-only).
# /sys/firmware holds only ACPI/DMI tables on this PC, which no board program reads.
mount -t tmpfs -o mode=0755,size=64k,nosuid,nodev,noexec tmpfs /sys/firmware
mkdir -p /sys/firmware/devicetree/base
printf '%s\0' "$(tr -d '[:space:]' <"$SIM_SOC_ID_FILE")" >/sys/firmware/devicetree/base/serial-number
chmod 0444 /sys/firmware/devicetree/base/serial-number
mount -o remount,ro /sys/firmware

# A fresh boot id per boot, as the kernel gives a real board at every boot (the boards share the
# host's kernel, whose own boot id never changes): what tells "rebooted" from "reconnected".
cat /proc/sys/kernel/random/uuid >/run/boot_id
mount --bind -o ro /run/boot_id /proc/sys/kernel/random/boot_id

# Volatile directories of a board, fresh at every boot.  /root and /var/log keep sessions (shell
# history, wtmp, lastlog) from writing to the host.
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mount -t tmpfs -o mode=0700 tmpfs /root
mount -t tmpfs -o mode=0755 tmpfs /var/log

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
cd /

/usr/sbin/sshd -D -e -f /run/ssh/sshd_config &
sshd_pid=$!
if [ -n "$console_tty" ]; then
    /bin/bash /run/sim/console "$console_tty" &
fi
log "up"

going_down() {
    log "reboot requested"
    if [ -n "$console_tty" ]; then
        printf '[%5d.%06d] reboot: Restarting system\n' "$SECONDS" 0 >"$console_tty" 2>/dev/null &
        sleep 0.05
    fi
    # PID 1 exiting makes the kernel kill every process of the namespace: sshd, sessions, console.
    exit 0
}
trap going_down TERM

# PID 1 also reaps orphans: bash collects any child that exits while it waits.  A board without
# its sshd is useless to the station: crash (the power loop reboots it) rather than hang.
wait "$sshd_pid" || true
log "sshd exited: the board goes down"
exit 1

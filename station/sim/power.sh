#!/bin/bash
# The power supply of one simulated Welma board (runs on the host, detached from `station sim up`).
#
# Boots the board (init.sh as PID 1 of fresh mount + PID + UTS namespaces), waits for it to go down
# (`reboot`, a power cut from `station sim reset`), waits the boot delay and boots it again, until
# the power-off flag exists.  It also owns the serial console's pty pair, so the console outlives
# every reboot.  Usage: power.sh DEVICE_ENV  (the file written by station/sim/layout.py).
#
# Everything it starts is its child and is recorded by PID; `station sim down` signals it with
# SIGTERM and it stops them by PID, never by name.
set -u
device_env=$1
# shellcheck source=/dev/null
. "$device_env"

run=$SIM_RUN_DIR
child=         # the process the loop is waiting for: the board (unshare) or the boot-delay sleep
socat_pid=
holder_pid=
stopping=

log() { printf '%s power: %s\n' "$(date '+%H:%M:%S.%3N')" "$*"; }

# Files the farm reads while we run: replace atomically so a reader never sees half a line.
put() { printf '%s\n' "$2" >"$run/$1.tmp" && mv -f "$run/$1.tmp" "$run/$1"; }

on_term() {
    stopping=1
    # A power cut: SIGKILL to unshare, and its --kill-child takes the whole namespace with it.
    [ -n "$child" ] && kill -KILL "$child" 2>/dev/null
}
trap on_term TERM INT HUP

# `wait` returns early when a trapped signal arrives; wait until the child has really gone.
wait_child() {
    while [ -n "$child" ] && kill -0 "$child" 2>/dev/null; do
        wait "$child" 2>/dev/null
    done
    child=
}

# A SIGTERM that lands between the loop's power-off check and the start of a child finds no child
# to kill: check again once the child runs.
watch_child() {
    child=$1
    powered_off && kill -KILL "$child" 2>/dev/null
    wait_child
}

nap() {
    sleep "$1" &
    watch_child "$!"
}

powered_off() { [ -n "$stopping" ] || [ -e "$run/poweroff" ]; }

# Factory reset (`station sim reset`): between two boots nothing has the overlay mounted, so its
# upper and work directories can be emptied safely.
factory_reset() {
    log "factory reset: wiping /var/lib"
    find "$SIM_VARLIB_UPPER" "$SIM_VARLIB_WORK" -mindepth 1 -delete
    rm -f "$run/reset"
}

start_console() {
    rm -f "$SIM_CONSOLE_LINK" "$SIM_CONSOLE_DEVICE_LINK"
    socat PTY,link="$SIM_CONSOLE_LINK",raw,echo=0 PTY,link="$SIM_CONSOLE_DEVICE_LINK",raw,echo=0 &
    socat_pid=$!
    put socat.pid "$socat_pid"
    local tries=0
    until [ -L "$SIM_CONSOLE_LINK" ] && [ -L "$SIM_CONSOLE_DEVICE_LINK" ]; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ]; then
            log "socat did not create the console ptys within 5 s"
            return 1
        fi
        sleep 0.05
    done
    # socat exits when the last holder of the device-side pty closes it, which every reboot does;
    # this sleeper keeps it open.  The redirection happens in the child, so this loop (a session
    # leader) never makes the pty its controlling terminal.
    sleep infinity 3<>"$SIM_CONSOLE_DEVICE_LINK" &
    holder_pid=$!
    put holder.pid "$holder_pid"
}

stop_console() {
    local pid
    for pid in $holder_pid $socat_pid; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -f "$SIM_CONSOLE_LINK" "$SIM_CONSOLE_DEVICE_LINK" "$run/socat.pid" "$run/holder.pid"
}

put power.pid "$$"
log "power on ($SIM_NAME)"
if [ -n "$SIM_CONSOLE_LINK" ] && ! start_console; then
    stop_console
    put state off
    exit 1
fi

boots=0
while ! powered_off; do
    [ -e "$run/reset" ] && factory_reset
    # no-boot: the board stays dark after a reboot until the fault is cleared (the first boot of a
    # power-on always succeeds, so `station sim up --fault sim-02=no-boot` arms it for later).
    if [ "$boots" -gt 0 ] && [ -e "$SIM_BOARD_DIR/faults/no-boot" ]; then
        put state halted
        nap 0.2
        continue
    fi
    boots=$((boots + 1))
    put state booting
    log "boot $boots"
    unshare --mount --pid --uts --fork --kill-child --mount-proc --propagation private \
        /bin/bash "$SIM_INIT" "$device_env" &
    board=$!
    put unshare.pid "$board"
    watch_child "$board"
    rm -f "$run/unshare.pid"
    log "board went down"
    powered_off && break
    put state rebooting
    nap "$SIM_BOOT_DELAY"
done

stop_console
rm -f "$run/power.pid" "$run/poweroff"
put state off
log "power off"

#!/bin/bash
# pkcs11-tool as a simulated Welma board runs it (bind-mounted over /usr/bin/pkcs11-tool).
#
# Same command line, same output; it only adds what a real OP-TEE board does differently from
# SoftHSM2: key generation takes longer (the farm's keygen delay), and the drop-ssh fault cuts the
# SSH connection in the middle of the next key generation, which then never completes.
board=/run/sim/board
real=/run/sim/pkcs11-tool.real

keygen=
for arg in "$@"; do
    case $arg in
        --keypairgen | -k) keygen=1 ;;
    esac
done

if [ -n "$keygen" ]; then
    delay=$(cat "$board/keygen-delay" 2>/dev/null || echo 0)

    if [ -e "$board/faults/drop-ssh" ]; then
        # Find this session's sshd processes: walk up the parents until the listening sshd.
        listener=$(cat /run/sshd.pid 2>/dev/null || echo 0)
        session=()
        pid=$PPID
        while [ "$pid" -gt 1 ] && [ "$pid" != "$listener" ]; do
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sshd ] && session+=("$pid")
            stat=$(cat "/proc/$pid/stat" 2>/dev/null) || break
            stat=${stat##*) }   # the fields after "pid (comm) ": state ppid ...
            read -r _ pid _ <<<"$stat"
        done
        # Only over SSH (not on the serial console); `rm` succeeding claims the fault, so it
        # fires once even when two key generations race.
        if [ "$pid" = "$listener" ] && [ "${#session[@]}" -gt 0 ] && rm "$board/faults/drop-ssh" 2>/dev/null; then
            sleep "$(awk -v d="$delay" 'BEGIN { print d / 2 }')"
            kill -KILL "${session[@]}"
            exit 255
        fi
    fi

    sleep "$delay"
fi
exec "$real" "$@"

#!/bin/bash
# The serial console of a simulated Welma board, run inside the board by init.sh: prints the
# kernel's boot lines, then behaves like getty + login on a Welma development image (user root,
# no password) and respawns the shell after every logout, as getty does.
# Usage: console.sh TTY  (the device side of the pty pair that power.sh owns).
set -u
tty=$1
exec </dev/null

# A shell killed by a reboot can leave the line in raw mode; start every boot from sane settings,
# which also give a real console's behaviour: input echo and CRLF line ends on output.
stty -F "$tty" sane

rcfile=/run/sim/console.bashrc
cat >"$rcfile" <<'EOF'
# Interactive shell of the simulated board's console: a Welma-like prompt.
PS1='\h:\w\$ '
cd
EOF

uptime_stamp() { printf '[%5d.%06d]' "$SECONDS" "$((RANDOM * 30))"; }

{
    printf '\n'
    printf '[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd034]\n'
    printf '[    0.000000] Linux version 6.1.55-welma (oe-user@oe-host) #1 SMP PREEMPT\n'
    printf '[    0.000000] Machine model: SMARC sm2s-imx8plus-mbep5\n'
    printf '[    0.000000] OF: reserved mem: initialized node optee_core@fe000000\n'
    printf '[    0.412805] optee: revision 3.21 (d7e7e4a9)\n'
    printf '[    0.413262] optee: initialized driver\n'
    printf '%s Run /sbin/init as init process\n' "$(uptime_stamp)"
    printf '\nWelma development image %s ttymxc1\n' "$(hostname)"
} >"$tty"

export HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=vt100
while :; do
    printf '\n%s login: ' "$(hostname)" >"$tty"
    if ! IFS= read -r user <"$tty"; then
        sleep 0.2
        continue
    fi
    user=${user%$'\r'}
    case $user in
        root)
            # The shell gets the console as its controlling terminal, like a login shell on ttymxc1.
            setsid --ctty --wait bash --noprofile --rcfile "$rcfile" -i <"$tty" >"$tty" 2>&1
            ;;
        '') ;;
        *)
            sleep 1
            printf '\nLogin incorrect\n' >"$tty"
            ;;
    esac
done

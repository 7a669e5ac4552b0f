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

# Command faults (`station sim fault sim-01 ACTION:PATTERN`, see gate.sh) strike console commands
# too.  A DEBUG trap sees each simple command before it runs ($BASH_COMMAND, as typed); with
# extdebug, a trap that returns 1 skips the command.  The station wraps each command in
# `echo __BEGIN_n__; { CMD ; } ...; echo __RC_n_$?__`: a skipped command leaves $? as it was, so
# for `fail` the trap also answers the status marker itself.
#   drop     the console session dies (the shell is killed; the login prompt comes back)
#   hang     the command never finishes (until the station presses Ctrl-C)
#   fail     the command does not run; an error naming it, exit status 2
#   garbage  the command does not run; binary noise and a long line, exit status 0
#   stream   the command does not run; /dev/zero streams in its place until the station presses Ctrl-C
__sim_status=
__sim_gate() {
    local fault=/run/sim/board/faults/command action pattern
    if [ -n "$__sim_status" ] && [[ $BASH_COMMAND =~ ^echo\ __RC_([0-9a-f]+)_ ]]; then
        printf '__RC_%s_%s__\n' "${BASH_REMATCH[1]}" "$__sim_status"
        __sim_status=
        return 1
    fi
    [ -r "$fault" ] || return 0
    { IFS= read -r action; IFS= read -r pattern; } <"$fault"
    [ -n "$pattern" ] && [[ $BASH_COMMAND =~ $pattern ]] || return 0
    case $action in
        drop) kill -KILL $$ ;;
        hang) sleep infinity ;;
        fail)
            echo "sim: $BASH_COMMAND: Input/output error"
            __sim_status=2
            return 1
            ;;
        garbage)
            printf '\000\000\000\005\376junk\377\376\300\033[2J\033]0;pwned\007\000\r\n'
            printf -- '-----BEGIN CERTIFICATE REQUEST-----\n!!not base64!!\n'
            head -c 65536 /dev/zero | tr '\000' 'A'
            printf '\n'
            return 1
            ;;
        stream)
            cat /dev/zero
            return 1
            ;;
    esac
    return 0
}
shopt -s extdebug
trap __sim_gate DEBUG
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
            # Started in the background by non-interactive shells, this script inherits SIGINT and
            # SIGQUIT ignored; a login shell on a real console has them, so Ctrl-C stops a command.
            setsid --ctty --wait env --default-signal=INT,QUIT \
                bash --noprofile --rcfile "$rcfile" -i <"$tty" >"$tty" 2>&1
            ;;
        '') ;;
        *)
            sleep 1
            printf '\nLogin incorrect\n' >"$tty"
            ;;
    esac
done

#!/bin/bash
# The door an SSH session of a simulated Welma board goes through while a command fault is armed
# (copied to /run/sim/gate by init.sh; sshd's ForceCommand, see layout.FORCE_COMMAND, execs it then
# and otherwise runs the command itself).  A command that does not match runs exactly as sshd would
# have run it (`bash -c "$SSH_ORIGINAL_COMMAND"`), so its exit status and output are unchanged.  The
# sftp subsystem comes through here too, as the sftp-server path.
#
# A command fault (`station sim fault sim-01 hang:--keypairgen`) is the file
# /run/sim/board/faults/command: line 1 the action, line 2 a POSIX extended regular expression
# (bash's =~) matched against the command line as the board received it.  It is read afresh for
# every command, so arming and clearing take effect at once.  Actions:
#   drop     the SSH connection dies (its sshd processes are killed); the command never runs
#   hang     the command never finishes and never answers (no output, no exit status)
#   fail     the command does not run; it exits 2 with an error naming the command on stderr
#   garbage  the command does not run; it prints binary noise and a very long line, and exits 0
#   stream   the command does not run; /dev/zero streams in its place until the station hangs up
board=/run/sim/board
fault=$board/faults/command

if [ -z "${SSH_ORIGINAL_COMMAND+set}" ]; then
    exec -l /bin/bash  # an interactive login: nothing to match
fi
cmd=$SSH_ORIGINAL_COMMAND

# Kill this session's sshd processes (not the listener): the client sees the connection drop,
# as when a cable is pulled or the board's network stack dies.
drop_session() {
    local listener pid stat session=()
    listener=$(cat /run/sshd.pid 2>/dev/null || echo 0)
    pid=$PPID
    while [ "$pid" -gt 1 ] && [ "$pid" != "$listener" ]; do
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sshd ] && session+=("$pid")
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || break
        stat=${stat##*) }  # the fields after "pid (comm) ": state ppid ...
        read -r _ pid _ <<<"$stat"
    done
    [ "${#session[@]}" -gt 0 ] && kill -KILL "${session[@]}"
    exit 255
}

# What a confused board might print: a frame that is no protocol (the sftp client reads it as a
# 5-byte packet of unknown type), bytes that are not UTF-8, terminal escapes, a NUL, a CR, a
# half PEM block and one line of 64 KiB.
garbage() {
    printf '\000\000\000\005\376junk\377\376\300\033[2J\033]0;pwned\007\000\r\n'
    printf -- '-----BEGIN CERTIFICATE REQUEST-----\n!!not base64!!\n'
    head -c 65536 /dev/zero | tr '\000' 'A'
    printf '\n'
    printf 'sim: \377\376 garbage on stderr\n' >&2
}

if [ -r "$fault" ]; then
    { IFS= read -r action; IFS= read -r pattern; } <"$fault"
    if [ -n "${pattern:-}" ] && [[ $cmd =~ $pattern ]]; then
        case $action in
            drop) drop_session ;;
            hang) exec sleep infinity ;;
            fail)
                # As a shell reports a failing command: naming it, arguments (and any PIN) included.
                echo "sim: $cmd: Input/output error" >&2
                exit 2
                ;;
            garbage)
                garbage
                exit 0
                ;;
            stream) exec cat /dev/zero ;;
        esac
    fi
fi
exec /bin/bash -c "$cmd"

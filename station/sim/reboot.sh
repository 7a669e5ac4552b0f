#!/bin/bash
# `reboot` on a simulated Welma board (installed as /usr/sbin/reboot by a read-only overlay).
# The board's init (PID 1 of its PID namespace) exits on SIGTERM; the kernel then kills every
# process of the board (sshd, this session, the console) and the power loop boots it again.
kill -TERM 1
# Like a real reboot, do not come back to the caller: the teardown kills this process first.
sleep 30

"""The station service's wire format and role table, on a real socketpair (no service, no board)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from station.roles import Role, allowed
from station.service import frames
from station.service.ops import CONTENT_ARGS, OPS, SECRET_ARGS, op_for_command, refusal


def test_a_frame_round_trips_and_the_kernel_names_the_peer() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        frames.send(left, {"op": "whoami", "args": {"serial": "2026"}})
        assert frames.receive(right, wait_s=5) == {"op": "whoami", "args": {"serial": "2026"}}
        pid, uid, _gid = frames.peer_credentials(right)
        assert (pid, uid) == (os.getpid(), os.geteuid())


def test_an_oversized_frame_is_refused_before_its_body_is_read() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        left.sendall(struct.pack(">I", frames.MAX_FRAME_BYTES + 1))
        with pytest.raises(frames.FrameError, match="over the"):
            frames.receive(right, wait_s=5)
        with pytest.raises(frames.FrameError, match="frame limit"):
            frames.encode({"blob": "x" * (frames.MAX_FRAME_BYTES + 1)})


def test_a_peer_that_stops_mid_frame_costs_at_most_the_deadline() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        left.sendall(struct.pack(">I", 100) + b'{"op"')  # then nothing
        began = time.monotonic()
        with pytest.raises(frames.FrameError, match="stopped in the middle"):
            frames.receive(right, wait_s=5, deadline_s=0.3)
        assert time.monotonic() - began < 3


def test_no_frame_within_the_wait_is_a_timeout_and_a_closed_peer_is_said() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with right:
        with pytest.raises(TimeoutError):
            frames.receive(right, wait_s=0.1)
        left.close()
        with pytest.raises(frames.PeerGone):
            frames.receive(right, wait_s=1)


def test_a_reader_that_never_reads_stops_the_writer_at_its_deadline() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        big = {"blob": "x" * (frames.MAX_FRAME_BYTES // 2)}
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for _ in range(20):
                    frames.send(left, big, deadline_s=0.5)
            except frames.FrameError as exc:
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(15)
        assert not writer.is_alive() and errors and "did not take a frame" in str(errors[0])


def test_not_json_is_a_frame_error() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        left.sendall(struct.pack(">I", 3) + b"\xff\xfe[")
        with pytest.raises(frames.FrameError, match="not JSON"):
            frames.receive(right, wait_s=5)


# The role table as the issue states it (technician ⊂ quality lead ⊂ administrator; root is an administrator).
TECHNICIAN_OPS = {"provision", "batch", "retry", "abort", "labels", "units", "follow", "fixtures_list"}
TECHNICIAN_OPS |= {"recent_units", "recent_unit"}  # the audit tab's "this station's recent units"
TECHNICIAN_OPS |= {"label_prints"}  # the label history beside "Reprint label"
# What the window shows (station/service/window_ops.py): read-only, for the window on a line PC.
TECHNICIAN_OPS |= {"window", "window_orders", "window_plan"}
QUALITY_OPS = {
    "audit_units",  # the audit tab's reads of the log at large (station.service.audit_reads)
    "audit_count",
    "audit_unit",
    "audit_yield",
    "audit_view",
    "audit_export",
    "audit_verify",
    "audit_checkpoint",
    "report",
    "backup",
    "revoke",
    "crl",
}
ADMIN_OPS = {"settings", "profiles", "fixtures", "ca", "ca_unlock", "production_mode", "admin_set_pin"}


def test_each_op_needs_the_role_the_issue_gives_it() -> None:
    assert {name for name, op in OPS.items() if op.role == Role.TECHNICIAN} == TECHNICIAN_OPS
    assert {name for name, op in OPS.items() if op.role == Role.QUALITY} == QUALITY_OPS
    assert {name for name, op in OPS.items() if op.role == Role.ADMIN} == ADMIN_OPS
    technician = frozenset({Role.TECHNICIAN})
    assert all(allowed(technician, OPS[name].role) for name in TECHNICIAN_OPS)  # type: ignore[arg-type]
    assert not any(allowed(technician, OPS[name].role) for name in QUALITY_OPS | ADMIN_OPS)  # type: ignore[arg-type]
    quality = frozenset({Role.QUALITY})
    assert all(allowed(quality, OPS[name].role) for name in TECHNICIAN_OPS | QUALITY_OPS)  # type: ignore[arg-type]
    assert not any(allowed(quality, OPS[name].role) for name in ADMIN_OPS)  # type: ignore[arg-type]


def test_commands_map_to_ops_and_a_refusal_names_the_role_and_its_group() -> None:
    assert op_for_command("audit", "export") is OPS["audit_export"]
    assert op_for_command("ca", "crl") is OPS["crl"] and op_for_command("ca", "init") is OPS["ca"]
    assert op_for_command("admin", "set-pin") is OPS["admin_set_pin"]
    assert op_for_command("sim", "up") is None
    words = refusal(OPS["revoke"], "dana")
    assert (
        "dana may not revoke a certificate" in words and "quality lead" in words and "welma-quality" in words
    )


def test_secrets_are_never_recorded_and_file_contents_only_as_their_digest() -> None:
    # A new CA passphrase, a token PIN, a key file's password and the key itself (station ca init/import).
    assert {"secret", "pin", "key_pem", "key_password", "old_secret", "new_secret", "session"} <= SECRET_ARGS
    # A certificate, a chain, a profile: their size and SHA-256 in service_requests, not their text.
    assert {"cert_pem", "chain_pem", "profile_text"} <= CONTENT_ARGS and not CONTENT_ARGS & SECRET_ARGS
    assert op_for_command("profiles", "install") is OPS["profiles"] and OPS["profiles"].role == Role.ADMIN
    assert op_for_command("ca", "import-chain") is OPS["ca"] and OPS["ca"].role == Role.ADMIN

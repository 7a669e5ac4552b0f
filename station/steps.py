"""The enrollment steps of the Welma tutorial, one small function each.

Each step takes the unit's context and a deadline, talks to the board only through its
:class:`~station.transport.DeviceLink`, and returns the text it wants recorded (its digest goes to
the audit log).  The executor in :mod:`station.flow` owns deadlines, retries and recording.  Where
the tutorial is naive we are not: the CSR is checked against the scanned serial and the token's
own public key, and the certificate issued is an end-entity certificate.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from station.attestation import AttestationFailed, load_vendor_root, verify_x509_chain
from station.errors import StationError
from station.identity import Basis
from station.pki import CertificateAuthority, CsrPolicy, check_csr, device_subject
from station.shell import ShellCommand, command

# Moved to station.step_context, re-exported here so every existing import keeps working:
from station.step_context import FleetChecks as FleetChecks
from station.step_context import StationSigner as StationSigner
from station.step_context import StepFailed as StepFailed
from station.step_context import StepFunction as StepFunction
from station.step_context import StepSkipped as StepSkipped
from station.step_context import StepSpec as StepSpec
from station.step_context import TlsProofServer as TlsProofServer
from station.step_context import UnitContext as UnitContext
from station.step_context import UnitIssuance as UnitIssuance
from station.step_context import UnitRecorder as UnitRecorder
from station.step_context import UnitRefused as UnitRefused
from station.step_context import UnitSigner as UnitSigner

# Moved to station.steps_identity, re-exported here so every existing import keeps working:
from station.steps_identity import _check_host_key as _check_host_key
from station.steps_identity import _identity_guard as _identity_guard
from station.steps_identity import _read_soc_id as _read_soc_id
from station.steps_identity import _set_aside as _set_aside
from station.tls_proof import TLS_PORT_BUSY, TlsProofListener
from station.transport import Deadline, LinkLost

TLS_ACCEPT_TIMEOUT_S = 20.0
# With a fixed TLS-proof port, a unit finding it taken (another unit's proof) tries again this often.
TLS_PORT_WAIT_S = 0.2
# Linux gives every boot a new random id: what tells a board that restarted from one that only
# dropped its connection.
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

# -- test hook -------------------------------------------------------------------------------------
# The crash-safety tests (tests/integration/test_crash_*.py) kill the station at each commit point of
# a unit, as a power cut would: with STATION_TEST_KILL_AT=<point> in its environment the process
# SIGKILLs itself right after the audit write named <point> has committed.  Points: unit_started,
# host_key_pinned, step:<step> (after a step's record), certificate_recorded, device_certificate_pushed,
# unit_finished.  Without the variable (production) it does nothing.
KILL_AT_ENV = "STATION_TEST_KILL_AT"


_test_hooks = {"enabled": True}
# Set in a unit's worker process (station.engine.worker): the station is its parent process.
STATION_PID_ENV = "STATION_ENGINE_PARENT_PID"


def station_is_ancestor(station_pid: int) -> bool:
    """Whether ``station_pid`` is this process's parent, or its parent's parent: a unit's worker is started by
    the station (spawn) or forked by the station's fork server, the station's own child (forkserver)."""
    parent = os.getppid()
    if parent == station_pid:
        return True
    try:
        stat = Path(f"/proc/{parent}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (name) ": state, ppid, …
    return len(fields) > 1 and fields[1] == str(station_pid)


def disable_test_hooks() -> None:
    """Production mode: the test hook is ignored for the rest of this process, whatever the environment says."""
    _test_hooks["enabled"] = False


def crash_point(point: str) -> None:
    """Test hook: die here, without any cleanup, if the crash-safety tests asked for ``point``.

    In a unit's worker process the whole station dies, as in a power cut: the parent (which holds the
    audit log and the CA) first, then the worker itself.  Ignored in production mode
    (:func:`disable_test_hooks`, in the station and in every worker)."""
    if _test_hooks["enabled"] and os.environ.get(KILL_AT_ENV) == point:
        parent = os.environ.get(STATION_PID_ENV)
        if parent and parent.isdigit() and station_is_ancestor(int(parent)):
            os.kill(int(parent), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


# -- identify and guard -----------------------------------------------------------------------


def expected_subject(ctx: UnitContext) -> x509.Name:
    """The device certificate's subject: the profile's template and the scanned serial (never the CSR's)."""
    return device_subject(ctx.profile.settings["subject"], serial=ctx.profile.validate_serial(ctx.serial))


# What identify and keygen look for in a board's answers, as plain string tests rather than regular expressions
# built from the profile's values: each unit's worker would compile its own (a fresh process starts with an
# empty pattern cache) — a few milliseconds of a unit's CPU.


def _tool_listed(found: str, tool: str) -> bool:
    """Whether `command -v`'s answer has a line naming ``tool``: the name alone or a path ending in it."""
    for line in found.split("\n"):
        line = line.rstrip()
        if line == tool or line.endswith("/" + tool):
            return True
    return False


def _labelled(block: str, label: str) -> bool:
    """Whether a pkcs11-tool object listing has a line ``label: <label>`` (blanks around the label allowed)."""
    for line in block.split("\n"):
        line = line.rstrip()
        if line.endswith(label) and line[: len(line) - len(label)].rstrip().endswith("label:"):
            return True
    return False


def identify(ctx: UnitContext, deadline: Deadline) -> str:
    ctx.link.open(deadline)
    key = ctx.link.host_key()
    lines = [_check_host_key(ctx, key)]
    ctx.output(lines[0])
    hostname = ctx.link.run(command("uname", "-n"), deadline).stdout.strip()
    found = ctx.link.run(command("command", "-v", *ctx.profile.tools), deadline, check=False).stdout
    missing = [tool for tool in ctx.profile.tools if not _tool_listed(found, tool)]
    if missing:
        raise StepFailed(
            f"the board {hostname} lacks {', '.join(missing)} — it is not running an image with the tools "
            f"profile {ctx.profile.name} needs; flash the right image and press Retry"
        )
    module = ctx.profile.module
    if ctx.link.run(command("test", "-e", module), deadline, check=False).exit_status != 0:
        raise StepFailed(
            f"the board {hostname} has no PKCS#11 module at {module} (OP-TEE's PKCS#11 TA or libckteec is "
            'missing: "TA not found") — flash an image with secure storage enabled, then press Retry'
        )
    if "pkcs11-tool" in ctx.profile.tools:
        # The module file can be there while OP-TEE's PKCS#11 TA is not (or tee-supplicant is not
        # running): libckteec then fails at C_Initialize/C_OpenSession with "TA not found".
        slots = ctx.link.run(
            command("pkcs11-tool", "--module", module, "--list-slots"), deadline, check=False
        )
        if slots.exit_status != 0:
            # pkcs11-tool ends with "Aborting."; the line naming the failed call is the one that helps.
            said_lines = [line.strip() for line in slots.output.splitlines() if line.strip()]
            said = (
                [line for line in said_lines if "CKR_" in line or "error" in line.lower()][:1]
                or said_lines[-1:]
                or ["no output"]
            )
            raise StepFailed(
                f"the board {hostname} has {module}, but it cannot reach a PKCS#11 token (`pkcs11-tool "
                f"--list-slots` exited {slots.exit_status}: {said[0][:200]}) — OP-TEE's PKCS#11 TA is missing "
                '("TA not found") or tee-supplicant is not running; flash an image with the PKCS#11 TA, then press Retry'
            )
    lines.insert(0, f"hostname {hostname}; tools {', '.join(ctx.profile.tools)}; module {module}")
    lines.append(_read_soc_id(ctx, deadline))
    return "\n".join(lines)


def guard(ctx: UnitContext, deadline: Deadline) -> str:
    """Refuse a board that is not this serial's: its SoC id or host key belongs to another serial's enrolled
    unit, this serial was enrolled on another SoC, or the board carries another serial's certificate."""
    lines = [f"serial {ctx.serial} matches {ctx.profile.serial_pattern.pattern}"]
    lines += work_order_check(ctx)
    if ctx.unit.reprovision_reason:
        lines.append(f"re-provisioning asked for: {ctx.unit.reprovision_reason}")
    lines += _identity_guard(ctx)
    path = ctx.profile.cert_path
    status = ctx.link.run(command("test", "-s", path), deadline, check=False).exit_status
    if status not in (0, 1):
        # 1 is "no such (non-empty) file"; anything else is an error, and a board that cannot be
        # looked at must not be wiped on the assumption that it holds nothing.
        raise StepFailed(
            f"the board could not tell whether it holds a device certificate (`test -s {path}` exited {status}) "
            "— its storage may be failing; press Retry, and set the board aside if it happens again"
        )
    if status == 0:
        try:
            existing = x509.load_pem_x509_certificate(ctx.link.get(path, deadline))
            # The serialNumber attribute is the SoC id the station adds itself (profile [identity]).
            subject = x509.Name(
                [rdn for rdn in existing.subject.rdns if all(a.oid != NameOID.SERIAL_NUMBER for a in rdn)]
            ).rfc4514_string()
        except ValueError:
            subject = "(unreadable)"
        expected = expected_subject(ctx).rfc4514_string()
        if subject != expected and not ctx.unit.reprovision_reason:
            raise UnitRefused(
                f"this board already holds a device certificate for {subject}, but the scanned serial is "
                f"{ctx.serial} — check the label matches the board: {_set_aside(subject)}"
            )
        lines.append(f"board already holds a certificate for {subject}; it will be replaced")
    # The board is accepted for this serial: from here on it must keep showing this key.  (Pinned only
    # now, so a refused board leaves nothing that a later unit of this serial would inherit.)
    key = ctx.link.host_key()
    if key is not None:
        ctx.audit.pin_host_key(ctx.unit.id, key_type=key[0], fingerprint=key[1])
        crash_point("host_key_pinned")
        ctx.output(f"host key {key[0]} {key[1]} pinned for this unit")
    # The fleet (other stations) is asked last, with the host key this unit has just pinned.
    if ctx.config.fleet is not None:
        lines.append(_fleet_guard(ctx))
    return "\n".join(lines)


def work_order_check(ctx: UnitContext) -> list[str]:
    """The unit's work order (its place was taken when the unit started): still open on a resumed attempt?"""
    status = ctx.audit.unit_work_order(ctx.unit.id)
    if status is None:
        return [
            "no work order required"
            if not ctx.config.orders_required
            else "no work order (unit started before orders were required)"
        ]
    order_id = status.order_id
    if status.state == "closed":
        raise StepFailed(
            f"work order {order_id} was closed ({status.close_reason or 'no reason given'}) while this board was "
            "unfinished: it is not enrolled — set the board aside and abort its unit (station provision --restart "
            "refuses it too)"
        )
    return [f"work order {order_id}: {status.progress_text()}"]


def _fleet(ctx: UnitContext) -> FleetChecks:
    """The fleet's checks: in a unit's worker the engine's proxy (the station's process asks the fleet over its
    one connection), in-process this process's own guard."""
    if ctx.fleet is not None:
        return ctx.fleet
    from station.fleet.guard import fleet_guard

    assert ctx.config.fleet is not None
    return fleet_guard(ctx.config.fleet)


def _fleet_guard(ctx: UnitContext) -> str:
    """Ask the fleet (other stations) before the board is touched; see station.fleet.guard."""
    from station.fleet.guard import FleetRefusal

    unit = ctx.audit.unit(ctx.unit.id)
    try:
        verdict = _fleet(ctx).check_unit(
            serial=ctx.serial,
            unit_id=unit.id,
            reprovision=bool(unit.reprovision_reason),
            host_key=unit.host_key_fingerprint,
        )
    except FleetRefusal as exc:
        raise StepFailed(str(exc)) from None
    ctx.output(verdict.text)
    return verdict.text


def _fleet_public_key_holder(ctx: UnitContext, token_key_der: bytes) -> None:
    from station.fleet.guard import FleetRefusal

    spki = hashlib.sha256(token_key_der).hexdigest()
    try:
        holder = _fleet(ctx).public_key_holder(spki)
    except FleetRefusal as exc:
        raise StepFailed(str(exc)) from None
    if holder is not None:
        raise StepFailed(
            f"the token's public key was already certified in the fleet for {holder} — a key must never be "
            "certified twice (a cloned token?); set the board aside and tell quality assurance"
        )


# -- secure storage on the board -----------------------------------------------------------


def wipe(ctx: UnitContext, deadline: Deadline) -> str:
    # On SoftHSM the tutorial's find/rm prints "Is a directory" for token directories and still
    # exits 0; OP-TEE's flat store prints nothing.  Only the exit status counts.
    return ctx.run("wipe", deadline).output


def _boot_id(ctx: UnitContext, deadline: Deadline) -> str:
    result = ctx.link.run(command("cat", BOOT_ID_PATH), deadline, check=False)
    return result.stdout.strip() if result.exit_status == 0 else ""


def _boot_id_once_back(ctx: UnitContext, deadline: Deadline) -> str:
    """The boot id once the board is back from `reboot`.

    The connection the link reopened may still drop before the id is read: a link that took the board for down
    (its liveness probes unanswered, e.g. on a line PC too loaded to run the unit's worker in time) can reach
    the old system before `reboot` has taken it down — which then goes, and comes back.  That drop is waited
    through once more, within the step's deadline; the boot ids are compared all the same, so a board that did
    not restart cannot pass."""
    try:
        return _boot_id(ctx, deadline)
    except LinkLost:
        if deadline.expired():
            raise
    ctx.output("the connection dropped again after `reboot`: waiting for the board to come back")
    ctx.link.wait_until_back(deadline)
    return _boot_id(ctx, deadline)


def reboot(ctx: UnitContext, deadline: Deadline) -> str:
    before = _boot_id(ctx, deadline)
    ctx.output("$ reboot")
    ctx.link.reboot(deadline)
    after = _boot_id_once_back(ctx, deadline)
    if before and not after:
        # The id was readable before `reboot` and is not now: nothing shows the board restarted.
        raise StepFailed(
            f"the board answered again after `reboot` but its boot id ({BOOT_ID_PATH}) could not be read, so "
            "the restart is not proven — power-cycle it and press Retry"
        )
    if before and after == before:
        # The connection dropped and came back, but the board never restarted: the wiped secure
        # storage would not be re-read.
        raise StepFailed(
            f"the board answered again after `reboot` but did not restart (boot id {before} unchanged) — "
            "power-cycle it and press Retry"
        )
    ctx.output("board is back")
    return f"rebooted and reconnected (boot id {before or 'unknown'} -> {after or 'unknown'})"


def init_token(ctx: UnitContext, deadline: Deadline) -> str:
    return ctx.run("init_token", deadline).output


def init_pin(ctx: UnitContext, deadline: Deadline) -> str:
    return ctx.run("init_pin", deadline).output


_ACCESS = re.compile(r"Access:\s*(.+)")


def keygen(ctx: UnitContext, deadline: Deadline) -> str:
    generated = ctx.run("keygen", deadline).output
    listing = ctx.run("list_private_key", deadline).output
    label = ctx.profile.key_label
    blocks = ["Private Key Object" + block for block in listing.split("Private Key Object")[1:]]
    ours = [block for block in blocks if _labelled(block, label)]
    if len(ours) != 1:
        raise StepFailed(
            f"the token holds {len(ours)} private keys labelled {label} after key generation (expected 1) — "
            "press Retry to re-initialise the token and generate the key again"
        )
    access = _ACCESS.search(ours[0])
    flags = {flag.strip() for flag in access.group(1).split(",")} if access else set()
    needed = {"sensitive", "always sensitive", "never extractable", "local"}
    if not needed <= flags:
        raise StepFailed(
            f"the private key {label} is not protected as it must be (Access: {', '.join(sorted(flags)) or 'none'}; "
            f"needed: {', '.join(sorted(needed))}) — this secure storage cannot be trusted; set the board aside"
        )
    # The station cannot look inside the token: these flags are what the board prints (README "What the
    # station can and cannot prove"); only an attestation ([attestation] in the profile) would prove them.
    return f"{Basis.REPORTED}: key flags {', '.join(sorted(flags))}\n{generated}\n{listing}"


def csr(ctx: UnitContext, deadline: Deadline) -> str:
    # openssl prints 'Engine "pkcs11" set.' on stderr: stderr text is not a failure.
    return ctx.run("csr", deadline).output


def fetch_csr(ctx: UnitContext, deadline: Deadline) -> str:
    # Both reads are capped (station.toml [limits] file_bytes): a CSR path that is a symlink to
    # /dev/zero fails the unit with "the board sent more than …", it is not read for ever.
    cap = ctx.config.limits.file_bytes
    ctx.csr_pem = ctx.link.get(ctx.profile.csr_path, deadline, max_bytes=cap)
    ctx.run("read_public_key", deadline)
    ctx.token_public_key_der = ctx.link.get(ctx.profile.pubkey_path, deadline, max_bytes=cap)
    ctx.output(ctx.csr_pem.decode("ascii", "replace").rstrip())
    return ctx.csr_pem.decode("ascii", "replace") + hashlib.sha256(ctx.token_public_key_der).hexdigest()


def check_csr_step(ctx: UnitContext, deadline: Deadline) -> str:
    if ctx.csr_pem is None or ctx.token_public_key_der is None:
        raise StepFailed("no CSR was fetched from the board — press Retry")
    try:
        token_key = serialization.load_der_public_key(ctx.token_public_key_der)
    except ValueError as exc:
        raise StepFailed(
            "the token's public key read back from the board is not a valid key — press Retry to generate it again"
        ) from exc
    if ctx.config.fleet is not None:
        _fleet_public_key_holder(
            ctx,
            token_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    request = check_csr(
        ctx.csr_pem,
        expected_subject=expected_subject(ctx),
        policy=CsrPolicy.for_key_type(ctx.profile.key_type),
        token_public_key=token_key,
        public_key_seen=ctx.audit.public_key_seen,
    )
    lines = [
        f"{Basis.VERIFIED}: CSR signature, subject {request.subject.rfc4514_string()}, key never certified before, "
        f"key equal to the token's key {ctx.profile.key_label}",
        _attest(ctx, token_key, deadline),
    ]
    ctx.output(lines[-1])
    return "\n".join(lines)


def _attest(ctx: UnitContext, token_key: object, deadline: Deadline) -> str:
    """Verify the board's key attestation when the profile declares one; otherwise say what stays unproven."""
    settings = ctx.profile.attestation
    if settings.format == "none":
        return (
            f"{Basis.REPORTED}: the token's public key and its flags (no attestation: profile "
            f"{ctx.profile.name} declares none)"
        )
    statement = ctx.link.run(ShellCommand(settings.command), deadline).stdout
    spki = token_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        proved = verify_x509_chain(
            statement.encode("utf-8", "replace"),
            vendor_root=load_vendor_root(settings.vendor_root),
            token_public_key_der=spki,
        )
    except AttestationFailed as exc:
        raise UnitRefused(
            f"{exc} — nothing was signed; set the board aside and call the quality lead"
        ) from None
    ctx.attested = True
    return f"{Basis.VERIFIED}: {proved}"


def sign(ctx: UnitContext, deadline: Deadline) -> str:
    assert ctx.csr_pem is not None
    in_subject = ctx.profile.identity.soc_id_in_certificate == "subject-serialNumber"
    if in_subject and not ctx.soc_id:
        raise StepFailed(
            "the profile puts the SoC id in the certificate, but none was read from this board — press Retry "
            "(identify reads it again); set the board aside if it happens again"
        )
    # The station adds the SoC id this unit recorded at identify (StationSigner), never one the worker names.
    issuance = ctx.ca.issue_for_unit(
        unit_id=ctx.unit.id, csr_pem=ctx.csr_pem, profile=ctx.profile, serial=ctx.serial
    )
    crash_point("certificate_recorded")
    certificate = x509.load_pem_x509_certificate(issuance.certificate_pem)
    ctx.certificate = certificate
    ctx.output(f"issued certificate serial {issuance.serial_hex} for {certificate.subject.rfc4514_string()}")
    pem = issuance.certificate_pem.decode("ascii")
    if issuance.quota is not None:
        ctx.output(f"station CA quota: {issuance.quota}")
        return f"station CA quota: {issuance.quota}\n{pem}"
    return pem


def _issued_certificate(ctx: UnitContext) -> x509.Certificate:
    if ctx.certificate is None:
        record = ctx.audit.certificate_for_unit(ctx.unit.id)
        if record is None:
            raise StepFailed("no certificate was issued for this unit yet — press Retry")
        ctx.certificate = x509.load_pem_x509_certificate(record.pem.encode("ascii"))
    return ctx.certificate


def push(ctx: UnitContext, deadline: Deadline) -> str:
    device_pem = _issued_certificate(ctx).public_bytes(serialization.Encoding.PEM)
    ca_pem = ctx.ca.certificate_pem
    ctx.link.put(device_pem, ctx.profile.cert_path, deadline)
    crash_point("device_certificate_pushed")
    ctx.link.put(ca_pem, ctx.profile.ca_cert_path, deadline)
    readback = ctx.link.run(
        command("sha256sum", ctx.profile.cert_path, ctx.profile.ca_cert_path), deadline
    ).stdout
    expected = {
        ctx.profile.cert_path: hashlib.sha256(device_pem).hexdigest(),
        ctx.profile.ca_cert_path: hashlib.sha256(ca_pem).hexdigest(),
    }
    seen: dict[str, str] = {}
    for line in readback.strip().splitlines():
        digest, _, path = line.partition("  ")
        seen[path.strip()] = digest.strip()
    for path, digest in expected.items():
        if seen.get(path) != digest:
            raise StepFailed(
                f"{path} on the board does not read back as written (sha256 {seen.get(path, 'missing')}) — "
                "the board's storage may be failing; press Retry, and set the board aside if it happens again"
            )
        ctx.output(f"{path}: sha256 {digest} verified")
    return f"{Basis.VERIFIED}: certificates read back with the digests written\n{readback}"


def tls_proof(ctx: UnitContext, deadline: Deadline) -> str:
    """The tutorial's step 5: the board connects with its token key; we check it shows our certificate."""
    if not ctx.profile.device_has_network:
        raise StepSkipped(
            "skipped (serial only): the profile says this board has no network path to the station"
        )
    issued = _issued_certificate(ctx)
    host = ctx.config.tls_listen_address or ctx.link.local_address() or "127.0.0.1"
    # The board may reach us under another address (NAT, QEMU's 10.0.2.100): [tls_proof] dial_address.
    dial = ctx.config.tls_dial_address or host
    if ctx.tls is not None:
        listener = ctx.tls
    elif isinstance(ctx.ca, CertificateAuthority | StationSigner):
        # In one process (Provisioner.provision): the station's own CA, wrapped by run_admitted in a StationSigner.
        listener = TlsProofListener(ctx.ca if isinstance(ctx.ca, CertificateAuthority) else ctx.ca.ca)
    else:
        raise StepFailed("the station has no TLS listener for the proof — report this; press Retry")
    port = _listen(listener, host, ctx.config.tls_port, deadline)
    client_failed = True
    try:
        result = ctx.link.run(
            ctx.profile.command("tls_client", serial=ctx.serial, server=f"{dial}:{port}"),
            deadline,
            check=False,
        )
        client_failed = result.exit_status != 0
    finally:
        # A client that failed will not connect any more: do not wait for it.
        presented, failure = listener.result(
            port, 0.0 if client_failed else deadline.cap(TLS_ACCEPT_TIMEOUT_S)
        )
    tail = ctx.masker(result.output)
    ctx.output(tail.rstrip()[-2000:])
    issued_der = issued.public_bytes(serialization.Encoding.DER)
    if client_failed or failure or presented is None:
        last = [line for line in tail.splitlines() if line.strip()][-1:] or ["no output"]
        # The board's own words first: they say why it did not connect.
        reason = (
            f"openssl s_client exited {result.exit_status}: {last[0][:200]}"
            if client_failed
            else "; ".join(failure) or "the board presented no certificate"
        )
        raise StepFailed(
            f"the board could not prove its identity over mutual TLS ({reason}) — check the board reaches "
            f"{dial}:{port} (station.toml [tls_proof] dial_address, port), then press Retry"
        )
    if presented != issued_der:
        raise StepFailed(
            "the board presented a certificate other than the one just issued — the certificate on the "
            "board is not ours; press Retry to push it again"
        )
    return (
        f"{Basis.VERIFIED}: the board holds the certified key — mutual TLS with {host}:{port} (dialled as "
        f"{dial}:{port}), it presented certificate {issued.serial_number:x}\n{tail}"
    )


def _listen(listener: TlsProofServer, host: str, port: int, deadline: Deadline) -> int:
    """The proof's port; a fixed one ([tls_proof] port) is shared by units one at a time."""
    while True:
        try:
            return listener.listen(host, deadline.cap(TLS_ACCEPT_TIMEOUT_S), port=port)
        except StationError as exc:
            if not str(exc).startswith(TLS_PORT_BUSY):
                raise StepFailed(str(exc)) from exc
            if deadline.remaining() < TLS_PORT_WAIT_S:
                raise StepFailed(
                    f"the TLS-proof port {host}:{port} stayed in use (another unit or program holds it) — "
                    "press Retry, or choose another [tls_proof] port in station.toml"
                ) from exc
            time.sleep(TLS_PORT_WAIT_S)


STEPS: dict[str, StepSpec] = {
    spec.name: spec
    for spec in (
        StepSpec("identify", "Identify board", identify, "identify"),
        StepSpec("guard", "Check serial", guard, "identify"),
        StepSpec("wipe", "Wipe secure storage", wipe, "wipe"),
        StepSpec("reboot", "Reboot", reboot, "reboot"),
        StepSpec("init_token", "Initialise token", init_token, "init_token"),
        # A user PIN that cannot be set may mean a token that was never initialised (init_token
        # said yes without doing it): start again from the token, which is cheap and harmless here.
        StepSpec("init_pin", "Set user PIN", init_pin, "init_token"),
        # A key generation cut off halfway may leave a half-made object: start again from a fresh token.
        StepSpec("keygen", "Generate key", keygen, "init_token"),
        StepSpec("csr", "Create CSR", csr, "csr"),
        # /tmp does not survive a reboot, and the checks need the CSR in hand: fetch it again.
        StepSpec("fetch_csr", "Fetch CSR", fetch_csr, "csr"),
        StepSpec("check_csr", "Check CSR", check_csr_step, "csr"),
        StepSpec("sign", "Sign certificate", sign, "csr"),
        # A unit that fails after signing has its certificate revoked as it ends (AuditLog.finish_unit): a
        # resume makes a new key and certificate instead of pushing a revoked one.
        StepSpec("push", "Push certificates", push, "init_token"),
        StepSpec("tls_proof", "Mutual TLS proof", tls_proof, "init_token"),
    )
}

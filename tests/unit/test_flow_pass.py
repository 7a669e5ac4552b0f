"""A recorded board goes through every step of the welma-optee flow and ends PASS — the baseline the other
flow tests change one thing in."""

from __future__ import annotations

from cryptography import x509

from station.profiles import STEP_NAMES


def test_a_recorded_board_passes_every_step_in_order(flow):
    result = flow.provision()
    assert result.passed, result.message
    assert flow.started_steps() == list(flow.profile.step_names())
    assert [record.step for record in flow.steps(result.unit)] == list(STEP_NAMES)
    assert {record.outcome for record in flow.steps(result.unit)} == {"passed"}
    assert flow.audit.find_unit(flow.serial).state == "passed"


def test_the_board_holds_the_certificate_recorded_for_the_unit(flow):
    result = flow.provision()
    record = flow.audit.certificate_for_unit(result.unit.id)
    on_board = x509.load_pem_x509_certificate(flow.board.files[flow.profile.cert_path])
    assert on_board == x509.load_pem_x509_certificate(record.pem.encode())
    assert on_board.subject.rfc4514_string() == f"CN=serial:{flow.serial}"
    assert flow.board.files[flow.profile.ca_cert_path] == flow.ca.certificate_pem


def test_the_unit_pins_the_host_key_the_board_showed(flow):
    result = flow.provision()
    assert result.unit.host_key_fingerprint == flow.board.host_key()[1]

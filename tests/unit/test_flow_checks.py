"""What the station checks of what the board says: the key's flags as pkcs11-tool lists them, the certificates
read back after the push, the certificate the board presents in the TLS proof — and the operator's Cancel."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from tests.helpers.transcripts import Exchange


@pytest.fixture
def recorded_listing(flow) -> Exchange:
    from tests.helpers.transcripts import Transcript

    (exchange,) = Transcript.load("welma-optee-unit-a").runs("--list-objects")
    return exchange


def test_the_recorded_key_flags_are_reported_not_claimed_as_proven(flow):
    result = flow.provision()
    (keygen,) = [r for r in flow.steps(result.unit) if r.step == "keygen"]
    assert (
        "reported by the board: key flags always sensitive, local, never extractable, sensitive"
        in keygen.excerpt
    )


@pytest.mark.parametrize("flag", ["sensitive", "always sensitive", "never extractable", "local"])
def test_a_key_missing_a_protection_flag_fails_keygen_and_the_board_is_set_aside(
    flow, recorded_listing, flag
):
    access = "sensitive, always sensitive, never extractable, local"
    weaker = ", ".join(f for f in access.split(", ") if f != flag)
    flow.board.fail(
        "--list-objects",
        answer=replace(recorded_listing, stdout=recorded_listing.stdout.replace(access, weaker)),
    )
    result = flow.provision()
    assert not result.passed and result.failed_step == "keygen"
    assert "is not protected as it must be" in result.message and "set the board aside" in result.message
    assert flow.outcomes(result.unit, "keygen") == ["failed"]


def test_two_keys_with_the_units_label_fail_keygen(flow, refusals):
    (doubled,) = refusals.runs("--list-objects")
    flow.board.fail("--list-objects", answer=doubled)
    result = flow.provision()
    assert not result.passed and result.failed_step == "keygen"
    assert "holds 2 private keys labelled key0" in result.message


def test_a_key_under_another_label_is_not_taken_for_the_units_key(flow, recorded_listing):
    flow.board.fail(
        "--list-objects",
        answer=replace(recorded_listing, stdout=recorded_listing.stdout.replace("key0", "key1")),
    )
    result = flow.provision()
    assert not result.passed and result.failed_step == "keygen"
    assert "holds 0 private keys labelled key0" in result.message


def test_a_wrong_user_pin_at_keygen_is_the_tokens_refusal_in_words(flow, refusals):
    (wrong,) = refusals.runs("--keypairgen --label key0 --key-type rsa:2048 --login --pin 9999")
    flow.board.fail("--keypairgen", answer=wrong)
    result = flow.provision()
    assert result.failed_step == "keygen" and "CKR_PIN_INCORRECT" in result.message
    assert "--pin 9999" not in result.message


def test_a_csr_for_a_key_the_token_lacks_fails_csr_with_the_boards_last_words(flow, refusals):
    (missing,) = refusals.runs("pkcs11:object=nokey")
    flow.board.fail("openssl req", answer=missing)
    result = flow.provision()
    assert not result.passed and result.failed_step == "csr"
    assert "exit status 139" in result.message


def test_a_certificate_that_does_not_read_back_as_written_fails_the_push(flow):
    cert_path = flow.profile.cert_path
    flow.board.fail("run sha256sum", action=lambda: flow.board.corrupt(cert_path))
    result = flow.provision()
    assert not result.passed and result.failed_step == "push"
    assert f"{cert_path} on the board does not read back as written" in result.message
    # A storage fault is not a lost link: not retried, though push may be retried once.
    assert flow.outcomes(result.unit, "push") == ["failed"]
    # The certificate that left the station is recorded and, the unit having failed, revoked.
    assert flow.audit.certificate_for_unit(result.unit.id).revoked_at is not None


def test_the_ca_certificate_is_read_back_too(flow):
    ca_path = flow.profile.ca_cert_path
    flow.board.fail("run sha256sum", action=lambda: flow.board.corrupt(ca_path))
    result = flow.provision()
    assert result.failed_step == "push" and f"{ca_path} on the board does not read back" in result.message


def test_a_board_presenting_another_certificate_fails_the_tls_proof(flow, flow_ca):
    flow.tls.presented = flow_ca.certificate_pem
    result = flow.provision()
    assert not result.passed and result.failed_step == "tls_proof"
    assert "presented a certificate other than the one just issued" in result.message


def test_cancel_before_the_unit_starts_touches_nothing(flow):
    cancel = threading.Event()
    cancel.set()
    result = flow.provision(cancel=cancel)
    assert not result.passed and result.failed_step == "identify"
    assert "cancelled by the operator" in result.message and "Retry" in result.message
    assert flow.board.calls == ["close"]


def test_cancel_during_a_step_stops_at_the_boards_next_call(flow):
    cancel = threading.Event()
    flow.board.fail("--init-token", action=cancel.set)
    result = flow.provision(cancel=cancel)
    assert not result.passed
    # init_token's command had started and finishes; the executor starts no further step.
    assert result.failed_step == "init_pin"
    assert flow.started_steps()[-1] == "init_token"
    assert flow.outcomes(result.unit, "init_token") == ["passed"]
    assert not flow.board.runs("--init-pin")


def test_cancel_between_two_calls_of_a_step_fails_that_step(flow):
    cancel = threading.Event()
    flow.board.fail("--keypairgen", action=cancel.set)
    result = flow.provision(cancel=cancel)
    assert result.failed_step == "keygen" and "cancelled by the operator" in result.message
    assert flow.outcomes(result.unit, "keygen") == ["failed"]
    assert not flow.board.runs("--list-objects")


def test_a_csr_for_another_key_than_the_profiles_key_type_is_refused_before_signing(flow, recorded_keygen):
    # The profile asks for RSA-3072; the board's token made (the recorded) RSA-2048 key.
    flow.profile = replace(flow.profile, settings={**flow.profile.settings, "key_type": "rsa:3072"})
    flow.board.fail("--keypairgen", answer=recorded_keygen)
    result = flow.provision()
    assert not result.passed and result.failed_step == "check_csr"
    assert "RSA-2048" in result.message and "certifies RSA 3072 —" in result.message
    assert flow.audit.certificate_for_unit(result.unit.id) is None


@pytest.fixture
def recorded_keygen() -> Exchange:
    from tests.helpers.transcripts import Transcript

    (exchange,) = Transcript.load("welma-optee-unit-a").runs("--keypairgen")
    return exchange

"""Every resume point: a unit that failed in a step starts again (``--resume``) where that step's work is safe to
redo — identify and guard always run again (a resumed unit must prove it is the same board)."""

from __future__ import annotations

import pytest

from station.errors import StationError
from station.transport import LinkLost
from tests.helpers.flow_faults import LINK_CALL_IN_STEP
from tests.helpers.transcripts import Exchange

# The contract (README "Resume"): the step a failed step's unit starts again from.
RESUMES_FROM = {
    "identify": "identify",
    "guard": "identify",
    "wipe": "wipe",
    "reboot": "reboot",
    "init_token": "init_token",
    # A user PIN that cannot be set may mean a token that was never initialised.
    "init_pin": "init_token",
    # A key generation cut off halfway may leave a half-made object.
    "keygen": "init_token",
    "csr": "csr",
    # /tmp does not survive a reboot: the CSR is made again.
    "fetch_csr": "csr",
    "check_csr": "csr",
    "sign": "csr",
    # The certificate of a unit that failed after signing is revoked: a new key and certificate.
    "push": "init_token",
    "tls_proof": "init_token",
}


def fail_in(flow, step: str) -> None:
    """Make the next unit fail in ``step`` (a lost board that stays lost beyond the step's retries)."""
    if step == "check_csr":
        flow.board.fail("get /tmp/key0.pub", answer=Exchange("get", data=b"not a DER public key"))
    elif step == "sign":
        issue = flow.ca.issue_device_certificate

        def refuse_once(*args: object, **kwargs: object) -> object:
            flow.ca.issue_device_certificate = issue  # type: ignore[method-assign]  # the resumed unit signs
            raise StationError("the CA refused to sign (test)")

        flow.ca.issue_device_certificate = refuse_once  # type: ignore[method-assign]
    else:
        retries = flow.profile.policy(step).retries
        flow.board.fail(
            LINK_CALL_IN_STEP[step], raises=LinkLost("connection reset by peer"), times=retries + 1
        )


def test_the_resume_map_covers_every_step(flow):
    assert set(RESUMES_FROM) == set(flow.profile.step_names())


@pytest.mark.parametrize("step", list(RESUMES_FROM))
def test_a_failed_unit_resumes_from_its_steps_resume_point(flow, step):
    fail_in(flow, step)
    failed = flow.provision()
    assert not failed.passed and failed.failed_step == step

    resumed = flow.provision(resume=True)
    assert resumed.passed, resumed.message
    assert resumed.unit.id == failed.unit.id and resumed.unit.attempt == failed.unit.attempt + 1
    steps = list(flow.profile.step_names())
    again = steps[steps.index(RESUMES_FROM[step]) :]
    assert flow.started_steps() == ["identify", "guard"] + [
        s for s in again if s not in ("identify", "guard")
    ]


def test_a_unit_that_failed_after_signing_resumes_with_a_new_key_and_its_certificate_revoked(flow):
    fail_in(flow, "push")
    failed = flow.provision()
    first = flow.audit.certificate_for_unit(failed.unit.id)
    assert first is not None and first.revoked_at is not None

    resumed = flow.provision(resume=True)
    assert resumed.passed, resumed.message
    second = flow.audit.certificate_for_unit(resumed.unit.id)
    assert second.spki_sha256 != first.spki_sha256
    assert len(flow.board.runs("--keypairgen")) == 2


def test_a_unit_resumed_after_its_csr_keeps_the_key_it_generated(flow):
    fail_in(flow, "fetch_csr")
    failed = flow.provision()
    assert failed.failed_step == "fetch_csr"
    resumed = flow.provision(resume=True)
    assert resumed.passed, resumed.message
    assert len(flow.board.runs("--keypairgen")) == 1


def test_a_passed_unit_cannot_be_resumed(flow):
    assert flow.provision().passed
    with pytest.raises(StationError, match="nothing to resume"):
        flow.provision(resume=True)


def test_a_unit_cancelled_by_the_operator_resumes_from_the_step_it_stopped_in(flow):
    import threading

    cancel = threading.Event()
    flow.board.fail("--keypairgen", action=cancel.set)
    cancelled = flow.provision(cancel=cancel)
    assert not cancelled.passed and cancelled.failed_step == "keygen"
    assert "cancelled by the operator" in cancelled.message
    resumed = flow.provision(resume=True)
    assert resumed.passed, resumed.message
    assert flow.started_steps()[2] == RESUMES_FROM["keygen"]

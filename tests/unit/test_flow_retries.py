"""Retry vs fail, step by step: a lost link or a deadline is tried again as often as the profile allows, a
board that says no (a command exiting non-zero, a check that fails) is not — Retry is the person's decision."""

from __future__ import annotations

import pytest

from station.transport import CommandTimedOut, LinkLost
from tests.helpers.flow_faults import LINK_CALL_IN_STEP
from tests.helpers.transcripts import Exchange

STEPS = sorted(LINK_CALL_IN_STEP)


@pytest.mark.parametrize(
    "error",
    [LinkLost("connection reset by peer"), CommandTimedOut("no answer within 5 s")],
    ids=["link-lost", "timed-out"],
)
@pytest.mark.parametrize("step", STEPS)
def test_a_transient_failure_is_retried_when_the_profile_allows_it(flow, step, error):
    flow.board.fail(LINK_CALL_IN_STEP[step], raises=error)
    result = flow.provision()
    if flow.profile.policy(step).retries > 0:
        assert result.passed, result.message
        assert flow.outcomes(result.unit, step) == ["retrying", "passed"]
    else:
        assert not result.passed and result.failed_step == step
        assert flow.outcomes(result.unit, step) == ["failed"]
        assert str(error) in result.message


@pytest.mark.parametrize("step", [s for s in STEPS if s != "identify"])
def test_a_step_that_keeps_losing_the_board_fails_after_its_last_retry(flow, step):
    retries = flow.profile.policy(step).retries
    flow.board.fail(LINK_CALL_IN_STEP[step], raises=LinkLost("connection reset by peer"), times=retries + 1)
    result = flow.provision()
    assert not result.passed and result.failed_step == step
    assert flow.outcomes(result.unit, step) == ["retrying"] * retries + ["failed"]
    assert flow.audit.find_unit(flow.serial).state == "failed"


def test_the_link_is_reopened_after_a_lost_connection_before_the_step_is_tried_again(flow):
    flow.board.fail("put /var/lib/key0.cert", raises=LinkLost("connection reset by peer"))
    result = flow.provision()
    assert result.passed, result.message
    calls = flow.board.calls
    lost = calls.index("put /var/lib/key0.cert")
    assert calls[lost + 1 : lost + 3] == ["close", "open"]


def test_a_command_the_board_refuses_fails_at_once_even_where_retries_are_allowed(flow, refusals):
    # push may be retried once for a lost link; a read-back the board refuses is not retried.
    assert flow.profile.policy("push").retries > 0
    (missing,) = refusals.runs("sha256sum")
    flow.board.fail("run sha256sum", answer=missing)
    result = flow.provision()
    assert not result.passed and result.failed_step == "push"
    assert flow.outcomes(result.unit, "push") == ["failed"]
    assert "No such file or directory" in result.message and "press Retry" in result.message


def test_a_wrong_so_pin_says_so_in_words_and_what_to_do(flow, refusals):
    (wrong_pin,) = refusals.runs("--init-pin")
    flow.board.fail("--init-pin", answer=wrong_pin)
    result = flow.provision()
    assert not result.passed and result.failed_step == "init_pin"
    assert "CKR_PIN_INCORRECT: the token refused the PIN" in result.message
    assert "press Retry" in result.message
    # The PIN never reaches the record.
    assert flow.profile.settings["so_pin"] not in result.message


def test_identify_retries_a_board_that_does_not_answer_yet(flow):
    retries = flow.profile.policy("identify").retries
    flow.board.fail("open", raises=LinkLost("no route to host"), times=retries)
    result = flow.provision()
    assert result.passed, result.message
    assert flow.outcomes(result.unit, "identify") == ["retrying"] * retries + ["passed"]


def test_an_unexpected_error_in_a_step_is_recorded_as_a_failure_not_lost(flow):
    flow.board.fail("--list-slots", answer=Exchange("run", stdout="Available slots:\n", exit_status=0))
    flow.board.fail("run uname -n", raises=None, action=lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    result = flow.provision()
    assert not result.passed and result.failed_step == "identify"
    assert "failed unexpectedly" in result.message and "boom" in result.message
    assert flow.outcomes(result.unit, "identify") == ["failed"]


BOOT_ID = "run cat /proc/sys/kernel/random/boot_id"


def test_a_connection_that_drops_again_after_reboot_is_waited_through_and_the_boot_ids_still_compared(flow):
    """A link that took a slow board for down reconnects to the old system, which then goes: the reboot step
    waits for the board once more (no second `reboot`) and reads the new boot id, within the step's deadline."""

    def dropped_after_reconnect() -> None:
        flow.board.fail(BOOT_ID, raises=LinkLost("connection reset by peer"))

    flow.board.fail("reboot", action=dropped_after_reconnect)
    result = flow.provision()
    assert result.passed, result.message
    assert flow.outcomes(result.unit, "reboot") == ["passed"]
    after_reboot = flow.board.calls[flow.board.calls.index("reboot") :]
    assert after_reboot[:4] == ["reboot", BOOT_ID, "wait_until_back", BOOT_ID]
    assert flow.board.calls.count("reboot") == 1


def test_a_board_that_comes_back_unrestarted_after_a_second_drop_still_fails_the_reboot(flow):
    def dropped_then_old_system() -> None:
        flow.board.fail(BOOT_ID, raises=LinkLost("connection reset by peer"))
        flow.board.fail(BOOT_ID, answer=Exchange("run", command=BOOT_ID[4:], stdout="boot-0000\n"))

    flow.board.fail("reboot", action=dropped_then_old_system)
    result = flow.provision()
    assert not result.passed and result.failed_step == "reboot"
    assert "did not restart (boot id" in result.message  # the id itself is masked: "0000" is the demo PIN


def test_a_board_that_stays_gone_after_the_second_drop_fails_the_reboot_with_the_links_words(flow):
    def dropped_for_good() -> None:
        flow.board.fail(BOOT_ID, raises=LinkLost("connection reset by peer"))
        flow.board.fail("wait_until_back", raises=LinkLost("the device did not come back within 90 s"))

    flow.board.fail("reboot", action=dropped_for_good)
    result = flow.provision()
    assert not result.passed and result.failed_step == "reboot"
    assert "did not come back within 90 s" in result.message


def test_a_board_whose_boot_id_cannot_be_read_after_reboot_does_not_pass_it(flow):
    # Readable before `reboot`, unreadable after: "rebooted (boot id … -> unknown)" would claim a restart
    # nothing showed.
    def unreadable_after() -> None:
        flow.board.fail(
            BOOT_ID,
            answer=Exchange(
                "run", command=BOOT_ID[4:], stderr="cat: No such file or directory\n", exit_status=1
            ),
        )

    flow.board.fail("reboot", action=unreadable_after)
    result = flow.provision()
    assert not result.passed and result.failed_step == "reboot"
    assert "boot id (/proc/sys/kernel/random/boot_id) could not be read" in result.message
    assert "restart is not proven" in result.message

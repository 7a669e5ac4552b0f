"""Host keys: a unit pins the key its board showed; a changed key aborts the unit; a new unit of a board whose
last unit was aborted inherits that unit's pinned key, until the board is re-onboarded with a reason."""

from __future__ import annotations

from station.transport import LinkLost

OTHER_KEY = "SHA256:someoneElseAnsweringAtThisAddress000000000"
# A call in a step the profile retries after a lost link (fetch_csr): the link is reopened for the retry.
DROPS = "get /tmp/key0.csr"


def test_a_board_that_changes_its_key_mid_unit_aborts_the_unit(flow):
    # The link drops while the CSR is fetched; when it is reopened another machine answers at the address.
    flow.board.fail(
        DROPS, raises=LinkLost("connection reset by peer"), action=lambda: flow.board.rekey(OTHER_KEY)
    )
    result = flow.provision()
    assert not result.passed and result.failed_step == "fetch_csr"
    assert flow.audit.unit(result.unit.id).state == "aborted"
    assert OTHER_KEY in result.message and "pinned" in result.message
    # Nothing more ran on the board after the key changed.
    assert flow.board.calls[-3:] == ["close", "open", "close"]


def test_the_next_unit_of_an_aborted_board_inherits_its_pinned_key(flow):
    pinned = flow.board.host_key()[1]
    flow.board.fail(
        DROPS, raises=LinkLost("connection reset by peer"), action=lambda: flow.board.rekey(OTHER_KEY)
    )
    aborted = flow.provision()
    assert aborted.unit.state == "aborted"

    again = flow.provision()
    assert not again.passed and again.failed_step == "identify"
    assert again.unit.state == "aborted" and again.unit.id != aborted.unit.id
    assert f"pinned by unit {aborted.unit.id} of this board, which was aborted" in again.message
    assert "--reprovision" in again.message
    assert pinned in again.message
    # The board was only connected to: nothing ran on it.
    assert flow.board.calls[-2:] == ["open", "close"]


def test_an_explicit_re_onboarding_pins_the_boards_new_key(flow):
    flow.board.fail(
        DROPS, raises=LinkLost("connection reset by peer"), action=lambda: flow.board.rekey(OTHER_KEY)
    )
    flow.provision()
    result = flow.provision(reprovision_reason="board re-imaged by repair (ticket 4711)")
    assert result.passed, result.message
    assert result.unit.host_key_fingerprint == OTHER_KEY


def test_a_restart_from_the_first_step_still_expects_the_key_the_failed_unit_pinned(flow):
    # --restart closes the failed unit as aborted: the new unit inherits its pinned key.
    retries = flow.profile.policy("wipe").retries
    flow.board.fail("run find", raises=LinkLost("connection reset by peer"), times=retries + 1)
    failed = flow.provision()
    assert failed.unit.state == "failed"
    flow.board.rekey(OTHER_KEY)
    restarted = flow.provision(restart=True)
    assert not restarted.passed and restarted.failed_step == "identify"
    assert f"pinned by unit {failed.unit.id}" in restarted.message


def test_a_resumed_unit_must_show_the_key_it_pinned(flow):
    retries = flow.profile.policy("wipe").retries
    flow.board.fail("run find", raises=LinkLost("connection reset by peer"), times=retries + 1)
    flow.provision()
    flow.board.rekey(OTHER_KEY)
    resumed = flow.provision(resume=True)
    assert not resumed.passed and resumed.failed_step == "identify"
    assert resumed.unit.state == "aborted"

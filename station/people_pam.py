"""Checking a person's OS account password through PAM, for people enrolled with their own OS account (the
store keeps only the login name).  Moved out of :mod:`station.people`, which re-exports every name.
"""

from __future__ import annotations

import threading

from station.people_model import PeopleError

# PAM may ask a directory server (sssd, LDAP): a sign-in waits this long for its answer, then is refused.
PAM_TIMEOUT_S = 15.0


def os_password_matches(
    login: str, password: str, *, service: str = "login", timeout_s: float = PAM_TIMEOUT_S
) -> bool:
    """Whether ``password`` is OS account ``login``'s, asked through PAM (``/etc/pam.d/SERVICE``).

    pam_unix reads /etc/shadow: the checking process must be root or in the ``shadow`` group (the station
    service's account on a line PC).  A PAM stack that does not answer within ``timeout_s`` counts as a
    refusal (the thread is left to finish by itself; PAM calls cannot be interrupted).
    """
    import pam

    answer: list[bool] = []

    def ask() -> None:
        answer.append(bool(pam.pam().authenticate(login, password, service=service, resetcreds=False)))

    worker = threading.Thread(target=ask, name="pam-check", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive() or not answer:
        if worker.is_alive():
            raise PeopleError(
                f"the operating system did not answer within {timeout_s:g} s whether the password of "
                f"{login} is right — try again; if it repeats, check the PC's login service (PAM)"
            )
        return False
    return answer[0]

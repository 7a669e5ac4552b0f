"""`station people …` — who may sign in at the station's window as quality lead or administrator.

Each person has their own credential (a PIN or a badge code), read from a prompt or from standard
input — never from the command line, where any user could read it in the process list.  Enrolling,
resetting, removing and unlocking need an administrator: root, a member of the welma-admin group, or an
enrolled administrator who proves it with ``--as NAME`` (their credential is asked first).  On a new
station the owner of the station home enrols the first administrator.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time

from station.audit import AuditLog
from station.config import load_config
from station.errors import StationError
from station.home import StationHome
from station.people import (
    ROLE_WORDS,
    Actor,
    CredentialKind,
    People,
    PeopleError,
    bootstrap_actor,
    check_new_secret,
    clock_text,
)
from station.roles import Role, account_name

EXAMPLE = """\
examples:
  station people add "Quinn Lee" --role quality     asks for Quinn's PIN twice
  station people add Ada --role admin --badge        asks for Ada's badge code (scan it twice)
  echo 482916 | station people add Quinn --role quality      the PIN from standard input (scripted set-up)
  station people list
  station people change Quinn                        asks for the old PIN, then the new one
  station people reset Quinn                         an administrator gives a new PIN (ends a lockout)
  station people unlock Quinn                        ends a lockout early
  station people remove Quinn
  station people reset Quinn --as Ada                Ada (an enrolled administrator) types her credential first
  station people add "Quinn Lee" --role quality --os-account qlee   Quinn signs in with qlee's OS password (PAM)

Enrolling, resetting, removing and unlocking need an administrator: root, a member of the welma-admin
group, or --as NAME of an enrolled administrator.  Credentials are stored hashed (PBKDF2-HMAC-SHA256,
salted) in HOME/people.db (mode 0600); every change is recorded in the audit log, never the secret.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "people",
        help="quality leads and administrators: their own credentials for the window",
        description="Enrol, list, change, reset, unlock and remove the people who sign in at the window "
        "as quality lead or administrator.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="people_command", metavar="ACTION", required=True)

    def command(
        name: str,
        help_text: str,
        handler: object,
        *,
        person: bool = True,
        acting: bool = True,
        badge: bool = False,
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        if person:
            sub.add_argument("name", metavar="NAME", help="the person's name as they type it at the window")
        if badge:
            sub.add_argument(
                "--badge",
                action="store_true",
                help="the credential is a badge code (scanned) rather than a PIN",
            )
        if acting:
            sub.add_argument(
                "--as",
                dest="acting_as",
                metavar="NAME",
                help="act as this enrolled administrator (their credential is asked first)",
            )
        sub.set_defaults(handler=handler)
        return sub

    add = command("add", "enrol a person with a role and a credential", run_add, badge=True)
    add.add_argument("--role", required=True, choices=list(ROLE_WORDS), help="what the person may do")
    add.add_argument(
        "--os-account",
        metavar="LOGIN",
        help="the person signs in with the password of this OS account (checked through PAM); no PIN "
        "is stored",
    )
    command("list", "list the people enrolled (no credentials)", run_list, person=False, acting=False)
    command(
        "change",
        "change a person's credential (needs their old one, or an administrator)",
        run_change,
        badge=True,
    )
    command("reset", "give a person a new credential (administrator; ends a lockout)", run_reset, badge=True)
    command("unlock", "end a person's lockout after wrong credentials (administrator)", run_unlock)
    command("remove", "remove a person: they can no longer sign in (administrator)", run_remove)


# -- reading secrets ----------------------------------------------------------------------------------


class SecretReader:
    """Secrets from a terminal prompt (not echoed), or one per line from standard input when it is not a
    terminal (scripted set-up) — never from argv or the environment."""

    def __init__(self) -> None:
        self.interactive = sys.stdin.isatty()

    def read(
        self, prompt: str, *, confirm: bool = False, check: tuple[CredentialKind, str] | None = None
    ) -> str:
        if not self.interactive:
            line = sys.stdin.readline()
            if not line:
                raise StationError(
                    f"{prompt.rstrip(': ')} is needed — type it at the prompt (run the command in a "
                    "terminal) or give it on standard input, one per line"
                )
            return line.rstrip("\r\n")
        first = getpass.getpass(prompt)
        if check is not None:
            check_new_secret(first, check[0], name=check[1])  # say what is wrong before asking again
        if confirm and getpass.getpass(f"{prompt.rstrip(': ')} (again): ") != first:
            raise StationError("the two entries differ — run the command again")
        return first


def _open(args: argparse.Namespace) -> tuple[StationHome, People]:
    home = StationHome.resolve(args.home).create()
    config = load_config(home.config_file)
    return home, People(home, AuditLog(home.audit_db), settings=config.people)


def _actor(
    args: argparse.Namespace,
    home: StationHome,
    people: People,
    reader: SecretReader,
    what: str,
    *,
    bootstrap_role: Role | None = None,
) -> Actor:
    """Who this command acts as: the OS account if it is an administrator, an enrolled administrator
    proven by ``--as``, or (the first administrator only) the home's owner."""
    uid = os.getuid()
    account = account_name(uid)
    acting_as = getattr(args, "acting_as", None)
    if acting_as:
        secret = reader.read(f"Credential of {acting_as}: ")
        session = people.verify(acting_as, secret, account=account)
        actor = Actor.for_person(session, account=account)
        if not actor.administrator:
            raise PeopleError(
                f"{what} needs an administrator — {session.person} is enrolled as {session.role.words}"
            )
        return actor
    actor = Actor.for_account(uid)
    if actor.administrator:
        return actor
    if bootstrap_role is Role.ADMIN:
        first = bootstrap_actor(home, people, uid)
        if first is not None:
            return first
    raise PeopleError(
        f"{what} needs an administrator — {account} is not one: run it as root or as a member of the "
        f"{Role.ADMIN.value} group, or add --as NAME with an enrolled administrator's name"
    )


def _kind(args: argparse.Namespace) -> CredentialKind | None:
    return CredentialKind.BADGE if getattr(args, "badge", False) else None


def _words(kind: CredentialKind) -> str:
    return {CredentialKind.BADGE: "badge code", CredentialKind.PAM: "OS password"}.get(kind, "PIN")


def _refuse_os_password(name: str, kind: CredentialKind) -> None:
    if kind is CredentialKind.PAM:
        raise PeopleError(f"{name} signs in with their OS account's password — they change it with `passwd`")


# -- the commands --------------------------------------------------------------------------------------


def run_add(args: argparse.Namespace) -> int:
    home, people = _open(args)
    reader = SecretReader()
    role = ROLE_WORDS[args.role]
    actor = _actor(args, home, people, reader, "enrolling a person", bootstrap_role=role)
    if args.os_account:
        if args.badge:
            raise StationError("--os-account and --badge exclude each other: choose one way to sign in")
        person = people.enrol_os_account(args.os_account, role, by=actor, name=args.name)
        print(
            f"{person.name} enrolled as {person.role.words} (signs in with the password of OS account "
            f"{args.os_account}); recorded by {actor.name}"
        )
        return 0
    kind = _kind(args) or CredentialKind.PIN
    secret = reader.read(
        f"{_words(kind).capitalize()} for {args.name}: ", confirm=True, check=(kind, args.name)
    )
    person = people.enrol(args.name, role, secret, by=actor, kind=kind)
    print(
        f"{person.name} enrolled as {person.role.words} (signs in with a {_words(person.kind)}); "
        f"recorded by {actor.name}"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    _home, people = _open(args)
    everyone = people.everyone()
    if not everyone:
        print(
            "nobody is enrolled yet — an administrator enrols people with "
            "`station people add NAME --role quality|admin|technician`"
        )
        return 0
    now = time.time()
    width = max(len(person.name) for person in everyone)
    print(f"{'NAME':<{width}}  {'ROLE':<13}  {'CREDENTIAL':<10}  {'STATE':<26}  ENROLLED BY")
    for person in everyone:
        if person.locked(now):
            assert person.locked_until is not None
            state = f"locked until {clock_text(person.locked_until)}"
        elif person.failed_attempts:
            state = f"{person.failed_attempts} wrong attempt(s)"
        else:
            state = "can sign in"
        print(
            f"{person.name:<{width}}  {person.role.words:<13}  {_words(person.kind):<10}  {state:<26}  "
            f"{person.enrolled_by}"
        )
    return 0


def run_change(args: argparse.Namespace) -> int:
    home, people = _open(args)
    reader = SecretReader()
    current = people.get(args.name)
    if current is None:
        raise PeopleError(f"{args.name} is not enrolled at this station — see `station people list`")
    _refuse_os_password(current.name, current.kind)
    account = account_name(os.getuid())
    os_admin = Actor.for_account(os.getuid())
    if args.acting_as or os_admin.administrator:
        actor, old = _actor(args, home, people, reader, "changing someone's credential"), None
    else:
        actor = Actor(name=current.name, account=account, administrator=False)
        old = reader.read(f"Current {_words(current.kind)} of {current.name}: ")
    kind = _kind(args) or current.kind
    new = reader.read(f"New {_words(kind)} for {current.name}: ", confirm=True, check=(kind, current.name))
    people.change(args.name, new, by=actor, old_secret=old, kind=kind)
    print(f"credential of {current.name} changed; recorded by {actor.name}")
    return 0


def run_reset(args: argparse.Namespace) -> int:
    home, people = _open(args)
    reader = SecretReader()
    actor = _actor(args, home, people, reader, "resetting a credential")
    current = people.get(args.name)
    if current is None:
        raise PeopleError(f"{args.name} is not enrolled at this station — see `station people list`")
    _refuse_os_password(current.name, current.kind)
    kind = _kind(args) or current.kind
    new = reader.read(f"New {_words(kind)} for {current.name}: ", confirm=True, check=(kind, current.name))
    people.reset(args.name, new, by=actor, kind=kind)
    print(f"credential of {current.name} reset (any lockout ended); recorded by {actor.name}")
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    home, people = _open(args)
    actor = _actor(args, home, people, SecretReader(), "unlocking a person")
    person = people.unlock(args.name, by=actor)
    print(f"{person.name} can sign in again; recorded by {actor.name}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    home, people = _open(args)
    actor = _actor(args, home, people, SecretReader(), "removing a person")
    people.remove(args.name, by=actor)
    print(
        f"{args.name} removed: they can no longer sign in (their records stay in the audit log); "
        f"recorded by {actor.name}"
    )
    return 0

"""The entry point of the PyInstaller bundle: ``station`` and ``station-gui`` are two executables built from
this one script (packaging/station.spec), and the name it was started by says which program runs.

``station gui`` re-executes the interpreter as ``sys.executable -m ui.app``; in the bundle ``sys.executable``
is the ``station`` executable itself, so ``-m ui.app`` (and ``-m station``) are understood here too.
"""

from __future__ import annotations

import os
import sys


def _restore_library_path() -> None:
    """Give programs the station starts (openssl, bash, sshd, pkcs11-tool …) the machine's own libraries.

    PyInstaller's bootloader puts the bundle's folder first on LD_LIBRARY_PATH so that the bundled Python finds
    its libraries; children would inherit it and load the bundle's libssl or libsqlite instead of the system's
    (a version mismatch that breaks them). This process has already read the variable at start-up, so
    changing it now affects only children.
    """
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


def _gui(argv: list[str]) -> int:
    from ui.app import main

    return main(argv)


def _cli(argv: list[str]) -> int:
    from station.cli import main

    return main(argv)


def main() -> int:
    if getattr(sys, "frozen", False):
        _restore_library_path()
    args = sys.argv[1:]
    if args[:2] == ["-m", "ui.app"]:
        return _gui(args[2:])
    if args[:2] == ["-m", "station"]:
        return _cli(args[2:])
    if os.path.basename(sys.argv[0]).startswith("station-gui"):
        return _gui(args)
    return _cli(args)


if __name__ == "__main__":
    # Each unit runs in a worker process started with multiprocessing's spawn method: in the bundle the
    # worker is this executable again, and freeze_support() turns it into the worker (then exits).
    import multiprocessing

    multiprocessing.freeze_support()
    sys.exit(main())

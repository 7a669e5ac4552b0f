"""`station gui` — start the technician's window (the Qt application in the ``ui`` package).

The core must not import Qt or the UI (an import-linter contract), so this command only checks
that there is a display to open a window on and then replaces itself with ``python -m ui.app``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

HEADLESS_HELP = """\
error: there is no display to open the station's window on (DISPLAY and WAYLAND_DISPLAY are unset).
To run the GUI on a machine without a screen:
  xvfb-run -a station-gui                   a virtual X display (Debian package xvfb)
  QT_QPA_PLATFORM=offscreen station-gui     no window at all (tests, screenshots)
On a line PC, start it from the desktop session, or over SSH with `ssh -X`."""


def display_available(environ: Mapping[str, str] | None = None) -> bool:
    """Whether Qt can start: an X or Wayland display, or a Qt platform that needs none (offscreen…).

    Without one Qt aborts the whole process, so the station says what to do instead.
    """
    env = os.environ if environ is None else environ
    platform = env.get("QT_QPA_PLATFORM", "").split(":")[0]
    if platform == "xcb":
        return bool(env.get("DISPLAY"))
    if platform.startswith("wayland"):
        return bool(env.get("WAYLAND_DISPLAY"))
    if platform:
        return True  # offscreen, minimal, vnc, eglfs, linuxfb: no display server needed
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gui",
        help="open the technician's window (sign in, scan, provision, label)",
        description="Open the provisioning station's window.",
        epilog="examples:\n  station gui\n  station --home /srv/station gui --fixtures /srv/station/fixtures.toml\n"
        "Without a display: xvfb-run -a station gui, or QT_QPA_PLATFORM=offscreen station gui.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--fixtures",
        metavar="FILE",
        help="fixtures file with [[fixture]] tables (default: station.toml's, else the sim's)",
    )
    parser.set_defaults(handler=run)


def gui_argv(args: argparse.Namespace) -> list[str]:
    """The command line that starts the window with the same station home."""
    argv = [sys.executable, "-m", "ui.app"]
    if args.home:
        argv += ["--home", str(args.home)]
    if getattr(args, "fixtures", None):
        argv += ["--fixtures", str(args.fixtures)]
    return argv


def run(args: argparse.Namespace) -> int:
    if not display_available():
        print(HEADLESS_HELP, file=sys.stderr)
        return 2
    argv = gui_argv(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # only returns by raising
    return 0  # pragma: no cover

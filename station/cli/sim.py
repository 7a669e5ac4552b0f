"""`station sim …` — run the simulated Welma device farm (demos, training, tests).

station sim up --count 4 [--keygen-delay S] [--boot-delay S] [--serial-console] [--port P]
               [--fault sim-02=no-boot]
station sim up --kind optee [--count N] [--tls-proof-port P] [--fault optee-01=no-ta]
station sim status
station sim reset sim-02
station sim swap sim-02
station sim fault sim-02 drop-ssh   |   station sim fault sim-02 hang:--keypairgen
station sim fault sim-02 --clear
station sim down
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from station.errors import StationError
from station.home import StationHome
from station.sim.farm import KINDS, Farm, SimDevice
from station.sim.layout import DEFAULT_PORT
from station.sim.optee_farm import DEFAULT_TLS_PROOF_PORT, GUEST_STATION_ADDRESS, HOST_STATION_ADDRESS

FAULT_HELP = (
    "no-boot: the device never comes back after its next reboot; "
    "drop-ssh: the next key generation drops its SSH connection midway (once); "
    "no-module: the PKCS#11 module /usr/lib/libckteec.so.0 is missing; "
    "ACTION:PATTERN: a command fault on every SSH command whose line matches the extended regular "
    "expression PATTERN (the sftp subsystem shows as sftp-server), until cleared — ACTION is drop (the "
    "connection dies), hang (no answer, ever), fail (exit 2), garbage (binary noise, exit 0) or stream (/dev/zero without end), "
    "e.g. hang:--keypairgen or drop:sftp-server. "
    "OP-TEE boards (optee-NN): no-ta: from the next boot the PKCS#11 TA is missing (OP-TEE's real \"TA not "
    'found"); abrupt-reset: `reboot` resets the VM without closing any connection (as a watchdog or reboot -f)'
)


# long: argparse: the command's subcommands and their options, one block each, nothing else
def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = subparsers.add_parser(
        "sim",
        help="simulated Welma devices (namespaces, sshd, SoftHSM2) for demos, training and tests",
        description="Simulated Welma devices: each is its own namespaces with a real sshd and SoftHSM2 as "
        "/usr/lib/libckteec.so.0, reachable as root@127.0.0.N. Needs root.",
    )
    commands = sim.add_subparsers(dest="sim_command", metavar="SIM_COMMAND", required=True)

    up = commands.add_parser("up", help="boot N simulated devices in the background")
    up.add_argument(
        "--kind",
        choices=KINDS,
        default="softhsm",
        help="softhsm: namespaces with sshd and SoftHSM2 (fast, the default); optee: QEMU virtual machines running "
        "TF-A, OP-TEE OS 4.10.0 with its PKCS#11 TA and Debian (real timing; built once, ~2.5 min, then cached)",
    )
    up.add_argument(
        "--count", type=int, default=None, help="number of devices (default: 2; 1 for --kind optee)"
    )
    up.add_argument(
        "--tls-proof-port",
        type=int,
        default=DEFAULT_TLS_PROOF_PORT,
        metavar="P",
        help="--kind optee: the station's TLS-proof port the boards are forwarded to, as 10.0.2.100:P "
        f"(default: {DEFAULT_TLS_PROOF_PORT}; set [tls_proof] port, dial_address in station.toml to match)",
    )
    up.add_argument(
        "--keygen-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="extra seconds each key generation takes, like OP-TEE on a real board (default: 0)",
    )
    up.add_argument(
        "--boot-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds a device stays off during a reboot (default: 1)",
    )
    up.add_argument("--serial-console", action="store_true", help="give each device a serial console (a pty)")
    up.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"SSH port of every device (default: {DEFAULT_PORT})"
    )
    up.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=FAULT",
        help=f"arm a fault from the start, e.g. sim-02=no-boot (repeatable). {FAULT_HELP}",
    )
    up.set_defaults(handler=_up)

    status = commands.add_parser("status", help="list the simulated devices and their state")
    status.set_defaults(handler=_status)

    reset = commands.add_parser(
        "reset", help="make a device factory-fresh (empty token store, no certificates) and reboot it"
    )
    reset.add_argument("name", help="device name, e.g. sim-01")
    reset.set_defaults(handler=_reset)

    swap = commands.add_parser(
        "swap",
        help="put a factory-fresh board on a fixture (new SoC id, new host key, empty storage)",
        description="Take the board off a fixture and put a factory-fresh one there: a new SoC unique id, "
        "a new SSH host key (written to the fixtures file) and empty secure storage. `reset` keeps the "
        "board (its SoC id and host key, like fuses); `swap` replaces it, so the next serial can be "
        "enrolled on the same fixture.",
    )
    swap.add_argument("name", help="device name, e.g. sim-01")
    swap.set_defaults(handler=_swap)

    fault = commands.add_parser("fault", help="arm or clear a fault on a device", description=FAULT_HELP)
    fault.add_argument("name", help="device name, e.g. sim-02")
    fault.add_argument(
        "fault",
        nargs="?",
        help="the fault to arm: no-boot, drop-ssh, no-module or ACTION:PATTERN; OP-TEE boards: no-ta, abrupt-reset",
    )
    fault.add_argument("--clear", action="store_true", help="clear the device's fault")
    fault.set_defaults(handler=_fault)

    down = commands.add_parser("down", help="stop every simulated device and everything it started")
    down.set_defaults(handler=_down)


def _farm(args: argparse.Namespace) -> Farm:
    return Farm(StationHome.resolve(args.home))


def _parse_fault_options(values: Sequence[str]) -> dict[str, str]:
    faults: dict[str, str] = {}
    for value in values:
        name, sep, fault = value.partition("=")
        if not sep or not name or not fault:
            raise StationError(f"--fault {value!r}: write it as NAME=FAULT, e.g. --fault sim-02=no-boot")
        faults[name] = fault
    return faults


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _ssh_address(device: SimDevice) -> str:
    return f"root@{device.address}:{device.port}"


def _up(args: argparse.Namespace) -> int:
    farm = _farm(args)
    if args.kind == "optee" and (args.keygen_delay or args.boot_delay != 1.0):
        raise StationError(
            "--keygen-delay and --boot-delay are for SoftHSM2 boards; an OP-TEE board's timing is real"
        )
    count = args.count if args.count is not None else (1 if args.kind == "optee" else 2)
    devices = farm.up(
        count,
        kind=args.kind,
        tls_proof_port=args.tls_proof_port,
        keygen_delay=args.keygen_delay,
        boot_delay=args.boot_delay,
        serial_console=args.serial_console,
        port=args.port,
        faults=_parse_fault_options(args.fault),
    )
    rows = [["NAME", "SSH", "CONSOLE", "HOST KEY"]]
    rows += [
        [d.name, _ssh_address(d), str(d.console_path) if d.console_path else "-", d.host_key_fingerprint]
        for d in devices
    ]
    print(_table(rows))
    armed = [f"{d.name}={d.fault}" for d in devices if d.fault]
    if armed:
        print(f"faults armed: {', '.join(armed)}")
    print(f"fixtures: {farm.layout.fixtures_file}")
    if args.kind == "optee":
        print(
            "TLS proof: the boards reach the station only through a forward; put in station.toml:\n"
            f'  [tls_proof]\n  listen_address = "{HOST_STATION_ADDRESS}"\n  dial_address = "{GUEST_STATION_ADDRESS}"\n'
            f"  port = {args.tls_proof_port}"
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    farm = _farm(args)
    devices = farm.status()
    if not devices:
        print(f"no simulated devices in {farm.home.root} (start some with `station sim up`)")
        return 0
    rows = [["NAME", "STATE", "SSH", "HOSTNAME", "CONSOLE", "FAULT", "SOC ID", "HOST KEY"]]
    rows += [
        [
            d.name,
            d.state,
            _ssh_address(d),
            d.hostname,
            str(d.console_path) if d.console_path else "-",
            d.fault or "-",
            d.soc_id or "-",
            d.host_key_fingerprint,
        ]
        for d in devices
    ]
    print(_table(rows))
    return 0


def _reset(args: argparse.Namespace) -> int:
    farm = _farm(args)
    farm.reset(args.name)
    device = next((d for d in farm.status() if d.name == args.name), None)
    if device is None or device.state == "down":
        print(
            f"{args.name}: factory-fresh (empty token store, no certificates); it is down, so the reset "
            "applies when it boots"
        )
    else:
        print(f"{args.name}: factory-fresh (empty token store, no certificates) and rebooted")
    return 0


def _swap(args: argparse.Namespace) -> int:
    device = _farm(args).swap(args.name)
    where = "" if device.state == "up" else f" (it is {device.state}; it boots with them)"
    print(
        f"{args.name}: factory-fresh board — SoC id {device.soc_id}, host key {device.host_key_fingerprint}{where}"
    )
    return 0


def _fault(args: argparse.Namespace) -> int:
    if args.clear == (args.fault is not None):
        raise StationError("give either a FAULT to arm or --clear, e.g. `station sim fault sim-02 drop-ssh`")
    _farm(args).set_fault(args.name, None if args.clear else args.fault)
    print(f"{args.name}: fault cleared" if args.clear else f"{args.name}: {args.fault} armed")
    return 0


def _down(args: argparse.Namespace) -> int:
    farm = _farm(args)
    running = [d.name for d in farm.status() if d.state != "down"]
    farm.down()
    print(f"stopped {len(running)} simulated device(s)" if running else "no simulated devices were running")
    return 0

"""`station ca crl` — the signed list of the revoked device certificates, published to a file, a folder or a URL.

Next to a station service the service signs it (it holds the CA and checks the caller is a quality lead) and this
command writes and publishes it; without one, the command unlocks the CA itself, as before the service.
"""

from __future__ import annotations

import argparse
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509

from station.cli.ca import _RAW, _positive_int, load_station_ca, revoked_from_audit
from station.config import load_ca_settings
from station.errors import StationError
from station.home import StationHome
from station.pki import CertificateAuthority, write_file_atomically

CRL_EPILOG = """\
examples:
  station ca crl --out /srv/pki/crl.pem --next-update-days 7
  station ca crl --publish /srv/www/pki --every 60
  station ca crl --publish https://pki.example.com/crl/line-3.crl

Lists every device certificate revoked in the audit log — only after `station audit verify` passes (hash
chain and, for a token CA, its signed checkpoints): a CRL from a rewritten log could leave a revoked board
valid. Publish a new CRL before the "next update" time printed, or devices and servers that check it will
refuse all certificates. --publish DIR writes DIR/crl.pem and DIR/crl.der; --publish URL PUTs the DER CRL.
--every N repeats every N minutes until stopped (Ctrl-C). Defaults come from [ca] in station.toml.
"""


def register_crl(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `station ca crl`."""
    crl = commands.add_parser(
        "crl",
        help="write a signed CRL of the revoked device certificates",
        description="Write a CRL signed by the CA listing the certificates revoked in the audit log.",
        epilog=CRL_EPILOG,
        formatter_class=_RAW,
    )
    crl.add_argument("--out", type=Path, metavar="FILE", help="where to write the PEM CRL")
    crl.add_argument(
        "--next-update-days",
        type=_positive_int,
        default=None,
        metavar="N",
        help="days until the CRL's next update (default: [ca] crl_next_update_days, else 7)",
    )
    crl.add_argument("--publish", metavar="DIR|URL", help="publish to a directory or PUT to an http(s) URL")
    crl.add_argument("--every", type=_positive_int, metavar="MINUTES", help="publish again every MINUTES")
    crl.set_defaults(handler=run_crl)


def run_crl(args: argparse.Namespace) -> int:
    from station.service.client import connect

    client = connect(args.home, getattr(args, "socket", None), start=False)
    if client is not None:
        with client:
            return _served_crl(client, args)
    home = StationHome.resolve(args.home)
    settings = load_ca_settings(home.config_file)
    publish = args.publish or settings.crl_publish
    every = args.every or (settings.crl_publish_every_minutes if args.publish is None and publish else None)
    if args.out is None and not publish:
        raise StationError(
            "Say where the CRL goes: --out FILE, --publish DIR|URL, or [ca] crl_publish in station.toml."
        )
    next_update_days = args.next_update_days or settings.crl_next_update_days
    # Refuse before unlocking the CA: nothing is signed from a log that does not verify.
    revoked_from_audit(home)
    ca = load_station_ca(home)
    try:
        while True:
            _write_crl(home, ca, args.out, publish, next_update_days)
            if every is None:
                return 0
            print(f"Next publication in {every} minute(s); Ctrl-C stops.", flush=True)
            time.sleep(every * 60)
    except KeyboardInterrupt:
        print("Stopped publishing.")
        return 0
    finally:
        ca.close()


def _served_crl(client: Any, args: argparse.Namespace) -> int:
    """The CRL signed by the station service (which holds the CA, and checks the caller is a quality lead),
    written and published here, by this user."""
    try:
        while True:
            answer = client.call("crl", {"next_update_days": args.next_update_days})
            publish = args.publish or answer["publish"] or ""
            if args.out is None and not publish:
                raise StationError(
                    "Say where the CRL goes: --out FILE, --publish DIR|URL, or [ca] crl_publish in "
                    "station.toml."
                )
            _deliver_crl(answer["pem"].encode("ascii"), args.out, publish)
            every = args.every or (answer["every"] if args.publish is None and publish else None)
            if every is None:
                return 0
            print(f"Next publication in {every} minute(s); Ctrl-C stops.", flush=True)
            time.sleep(every * 60)
    except KeyboardInterrupt:
        print("Stopped publishing.")
        return 0


def _write_crl(
    home: StationHome, ca: CertificateAuthority, out: Path | None, publish: str, next_update_days: int
) -> None:
    _deliver_crl(ca.crl(revoked_from_audit(home), next_update_days=next_update_days), out, publish)


def _deliver_crl(pem: bytes, out: Path | None, publish: str) -> None:
    crl = x509.load_pem_x509_crl(pem)
    places = []
    if out is not None:
        _write_or_explain(out, pem)
        places.append(str(out))
    if publish:
        places.append(_publish(publish, crl))
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    print(
        f"Wrote CRL number {number} with {len(crl)} revoked certificate(s) to {', '.join(places)}.\n"
        f"Its next update is due {crl.next_update_utc:%Y-%m-%d %H:%M} UTC — publish again before then.",
        flush=True,
    )


CRL_PUBLISH_TIMEOUT_S = 30.0


def _publish(destination: str, crl: x509.CertificateRevocationList) -> str:
    from cryptography.hazmat.primitives import serialization

    der = crl.public_bytes(serialization.Encoding.DER)
    if destination.startswith(("http://", "https://")):
        request = urllib.request.Request(
            destination, data=der, method="PUT", headers={"Content-Type": "application/pkix-crl"}
        )
        try:
            with urllib.request.urlopen(request, timeout=CRL_PUBLISH_TIMEOUT_S) as response:
                status = response.status
        except (urllib.error.URLError, OSError) as exc:
            raise StationError(
                f"Could not publish the CRL to {destination} ({exc}) — check the URL and that the server accepts "
                "PUT, then run again. The CRL was not published there."
            ) from None
        if status >= 300:
            raise StationError(f"{destination} answered HTTP {status} to the CRL upload — check the server.")
        return destination
    folder = Path(destination)
    _write_or_explain(folder / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
    _write_or_explain(folder / "crl.der", der)
    return f"{folder}/crl.pem (+ crl.der)"


def _write_or_explain(path: Path, data: bytes) -> None:
    try:
        write_file_atomically(path, data, mode=0o644, replace=True)
    except OSError as exc:
        raise StationError(
            f"Could not write the CRL to {path} ({exc.strerror}) — check that the directory exists "
            "and is writable, then run again."
        ) from None

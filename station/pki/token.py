"""CA keys in a PKCS#11 token (SoftHSM2 in tests and demos; YubiHSM 2, Nitrokey HSM or SmartCard-HSM in a plant).

The key is generated inside the token, sensitive and never extractable: the station only ever asks the token
to sign.  Everything here goes through python-pkcs11; the token PIN is passed in by the caller (a prompt or the
``[ca] pin_file`` of station.toml) and never read from the environment or written anywhere.

``token.toml`` in a CA directory says which module, token and key hold that CA's key (nothing secret).  For
SoftHSM2 it may name a ``softhsm2.conf`` private to the station home: SoftHSM reads ``SOFTHSM2_CONF`` once,
when the module is initialised, so the variable is set only around that moment and the process environment
(inherited by every program the station starts) is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from station.errors import StationError
from station.pki.der import ECDSA_SHA256, RSA_SHA256, ecdsa_signature

TOKEN_FILE: Final = "token.toml"
TOKEN_KEY_TYPES: Final = ("ec-p256", "ec-p384", "rsa-3072")
DEFAULT_KEY_LABEL: Final = "station-ca"
_SOFTHSM_ENV: Final = "SOFTHSM2_CONF"
# python-pkcs11 keeps one instance of each PKCS#11 module per process (C_Initialize runs once per instance).
_LOAD_LOCK = threading.Lock()
# The SoftHSM2 configuration each module path was initialised with: asked for another one, the module is
# finalised and initialised again (one SoftHSM configuration at a time per process — tests use several homes).
_INITIALISED_WITH: dict[str, Path | None] = {}


class TokenError(StationError):
    """The token could not do what was asked; nothing was signed and nothing was changed."""


@dataclass(frozen=True)
class TokenSettings:
    """Where a CA key lives: the PKCS#11 module, the token's label and the key's label (``token.toml``)."""

    module: Path
    token_label: str
    key_label: str = DEFAULT_KEY_LABEL
    softhsm2_conf: Path | None = None

    def to_toml(self) -> str:
        lines = [
            "# Where this CA's private key lives (written by `station ca init`; nothing secret).",
            f"module = {_quote(str(self.module))}",
            f"token_label = {_quote(self.token_label)}",
            f"key_label = {_quote(self.key_label)}",
        ]
        if self.softhsm2_conf is not None:
            lines.append(f"softhsm2_conf = {_quote(str(self.softhsm2_conf))}")
        return "\n".join(lines) + "\n"

    @classmethod
    def read(cls, path: Path) -> TokenSettings:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeError, tomllib.TOMLDecodeError) as exc:
            raise StationError(
                f"{path} cannot be read ({exc}) — restore it from the CA directory's backup."
            ) from None
        unknown = sorted(set(data) - {"module", "token_label", "key_label", "softhsm2_conf"})
        if unknown or not isinstance(data.get("module"), str) or not isinstance(data.get("token_label"), str):
            raise StationError(
                f"{path} must give module and token_label as strings (and nothing but key_label, softhsm2_conf) — "
                "restore it from the CA directory's backup."
            )
        conf = data.get("softhsm2_conf")
        return cls(
            module=Path(data["module"]),
            token_label=data["token_label"],
            key_label=str(data.get("key_label", DEFAULT_KEY_LABEL)),
            softhsm2_conf=Path(conf) if isinstance(conf, str) else None,
        )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _load_module(settings: TokenSettings) -> Any:
    import pkcs11

    if not settings.module.exists():
        raise TokenError(
            f"The PKCS#11 module {settings.module} does not exist — install the token's driver (softhsm2, opensc, "
            "yubihsm-shell) or correct --pkcs11-module; nothing was signed."
        )
    with _LOAD_LOCK:
        previous = os.environ.get(_SOFTHSM_ENV)
        if settings.softhsm2_conf is not None:
            os.environ[_SOFTHSM_ENV] = str(settings.softhsm2_conf)
        try:
            module = str(settings.module)
            lib = pkcs11.lib(module)
            if module in _INITIALISED_WITH and _INITIALISED_WITH[module] != settings.softhsm2_conf:
                lib.reinitialize()
            _INITIALISED_WITH[module] = settings.softhsm2_conf
            return lib
        except pkcs11.PKCS11Error as exc:
            raise TokenError(
                f"The PKCS#11 module {settings.module} could not be loaded ({exc}) — check that it is the token's "
                "PKCS#11 library; nothing was signed."
            ) from None
        finally:
            if previous is None:
                os.environ.pop(_SOFTHSM_ENV, None)
            else:
                os.environ[_SOFTHSM_ENV] = previous


def _token(settings: TokenSettings) -> Any:
    import pkcs11
    from pkcs11 import exceptions as p11

    lib = _load_module(settings)
    try:
        return lib.get_token(token_label=settings.token_label)
    except p11.NoSuchToken:
        present = (
            ", ".join(sorted({slot.get_token().label for slot in lib.get_slots(token_present=True)}))
            or "none"
        )
        raise TokenError(
            f"The token {settings.token_label!r} is not present (tokens found: {present}) — plug in the station's "
            "HSM or correct the token label; nothing was signed."
        ) from None
    except p11.MultipleTokensReturned:
        raise TokenError(
            f"More than one token is labelled {settings.token_label!r} — unplug the extra one; nothing was signed."
        ) from None
    except pkcs11.PKCS11Error as exc:
        raise TokenError(
            f"The token {settings.token_label!r} cannot be reached ({exc!r}) — check the HSM."
        ) from None


@contextmanager
def _mapped_errors(settings: TokenSettings, doing: str) -> Iterator[None]:
    import pkcs11
    from pkcs11 import exceptions as p11

    label = settings.token_label
    try:
        yield
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
        raise TokenError(
            f"The PIN of token {label!r} is wrong — type it again (or correct [ca] pin_file); a few wrong tries "
            f"lock the token. Nothing was {doing}."
        ) from None
    except p11.PinLocked:
        raise TokenError(
            f"Token {label!r} is locked after too many wrong PINs — the security officer must unlock it "
            f"(SO PIN). Nothing was {doing}."
        ) from None
    except (p11.DeviceMemory, p11.HostMemory):
        raise TokenError(
            f"Token {label!r} is full — it has no room for another key; delete unused objects with the HSM's "
            f"tool or use an empty token. Nothing was {doing}."
        ) from None
    except (p11.DeviceRemoved, p11.TokenNotPresent, p11.SessionClosed, p11.SessionHandleInvalid):
        raise TokenError(
            f"Token {label!r} was removed or stopped answering — plug it back in and try again. Nothing was {doing}."
        ) from None
    except p11.NoSuchKey:
        raise TokenError(
            f"Token {label!r} holds no private key labelled {settings.key_label!r} — this is not the token "
            f"`station ca init` used; plug in the right one. Nothing was {doing}."
        ) from None
    except (p11.FunctionFailed, p11.GeneralError, p11.DeviceError) as exc:
        if doing != "created":
            raise TokenError(
                f"Token {label!r} failed ({type(exc).__name__}) — check the HSM and try again. Nothing was {doing}."
            ) from None
        # SoftHSM answers a full token directory with CKR_FUNCTION_FAILED; HSMs with DEVICE_ERROR/MEMORY.
        raise TokenError(
            f"Token {label!r} is full or failing: it could not store the new key ({type(exc).__name__}) — free "
            f"space on it (delete unused objects with the HSM's tool) or use an empty token. Nothing was {doing}."
        ) from None
    except pkcs11.PKCS11Error as exc:
        raise TokenError(
            f"Token {label!r} refused ({type(exc).__name__} {exc}) — check the HSM (free space, PIN, state). "
            f"Nothing was {doing}."
        ) from None


class TokenKey:
    """A private key in a token, behind an open logged-in session; signs what the CA builds.

    Signing is serialised (one operation per session at a time, as PKCS#11 requires).
    """

    def __init__(self, settings: TokenSettings, session: Any, private: Any, public_der: bytes) -> None:
        self.settings = settings
        self._session = session
        self._private = private
        self._public = serialization.load_der_public_key(public_der)
        if not isinstance(self._public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise TokenError(
                f"The key {settings.key_label!r} in token {settings.token_label!r} is not RSA or EC."
            )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenKey({self.settings.token_label!r}/{self.settings.key_label!r})"

    @property
    def description(self) -> str:
        return f"PKCS#11 token {self.settings.token_label!r}, key {self.settings.key_label!r} ({self.settings.module})"

    @property
    def algorithm_der(self) -> bytes:
        return ECDSA_SHA256 if isinstance(self._public, ec.EllipticCurvePublicKey) else RSA_SHA256

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        return self._public  # type: ignore[return-value]

    def sign(self, data: bytes) -> bytes:
        """The X.509 signature value over ``data`` (SHA-256 with ECDSA or RSA PKCS#1 v1.5)."""
        from pkcs11 import Mechanism

        with self._lock, _mapped_errors(self.settings, "signed"):
            if isinstance(self._public, ec.EllipticCurvePublicKey):
                # SoftHSM offers CKM_ECDSA but not CKM_ECDSA_SHA256: hash here, sign the digest in the token.
                raw = self._private.sign(hashlib.sha256(data).digest(), mechanism=Mechanism.ECDSA)
                return ecdsa_signature(bytes(raw))
            return bytes(self._private.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS))

    def close(self) -> None:
        with self._lock:
            try:
                self._session.close()
            except Exception:  # noqa: BLE001 - a token already gone has nothing left to close
                pass

    # --- opening and creating -------------------------------------------------------------------

    @classmethod
    def open(cls, settings: TokenSettings, *, pin: str) -> TokenKey:
        """Log in to the token and find the CA key; refuse a key that could ever have been copied out."""
        from pkcs11 import Attribute, ObjectClass

        token = _token(settings)
        with _mapped_errors(settings, "signed"):
            session = token.open(user_pin=pin)
            try:
                private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=settings.key_label)
                public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=settings.key_label)
                if (
                    private[Attribute.EXTRACTABLE]
                    or not private[Attribute.SENSITIVE]
                    or not private[Attribute.NEVER_EXTRACTABLE]
                ):
                    raise TokenError(
                        f"The key {settings.key_label!r} in token {settings.token_label!r} is (or once was) "
                        "extractable — a CA key that may have been copied out cannot be trusted; create a new one "
                        "with `station ca init`."
                    )
                return cls(settings, session, private, _public_der(public))
            except BaseException:
                session.close()
                raise

    @classmethod
    def generate(cls, settings: TokenSettings, *, pin: str, key_type: str) -> TokenKey:
        """Create the CA key pair inside the token (sensitive, never extractable); refuse if the label is taken."""
        from pkcs11 import Attribute, KeyType, ObjectClass
        from pkcs11.util.ec import encode_named_curve_parameters

        if key_type not in TOKEN_KEY_TYPES:
            raise StationError(
                f"Unknown token key type {key_type!r} — choose one of: {', '.join(TOKEN_KEY_TYPES)}."
            )
        token = _token(settings)
        with _mapped_errors(settings, "created"):
            session = token.open(user_pin=pin, rw=True)
            try:
                existing = list(
                    session.get_objects(
                        {Attribute.LABEL: settings.key_label, Attribute.CLASS: ObjectClass.PRIVATE_KEY}
                    )
                )
                if existing:
                    raise TokenError(
                        f"Token {settings.token_label!r} already holds a key labelled {settings.key_label!r} — "
                        "refusing to create a second one (every certificate it signed would be orphaned); use "
                        "another --key-label or another token."
                    )
                private_template = {
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                    Attribute.DERIVE: False,  # a CA key signs, nothing else
                }
                public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True}
                key_id = os.urandom(8)
                if key_type.startswith("ec-"):
                    curve = "secp256r1" if key_type == "ec-p256" else "secp384r1"
                    params = session.create_domain_parameters(
                        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
                    )
                    public, private = params.generate_keypair(
                        store=True,
                        label=settings.key_label,
                        id=key_id,
                        private_template=private_template,
                        public_template=public_template,
                    )
                else:
                    public, private = session.generate_keypair(
                        KeyType.RSA,
                        int(key_type[4:]),
                        store=True,
                        label=settings.key_label,
                        id=key_id,
                        private_template=private_template,
                        public_template=public_template,
                    )
                return cls(settings, session, private, _public_der(public))
            except BaseException:
                session.close()
                raise


def _public_der(public: Any) -> bytes:
    from pkcs11 import KeyType
    from pkcs11.util.ec import encode_ec_public_key
    from pkcs11.util.rsa import encode_rsa_public_key

    if public.key_type == KeyType.EC:
        return bytes(encode_ec_public_key(public))
    return bytes(encode_rsa_public_key(public))

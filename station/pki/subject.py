"""OpenSSL ``-subj`` templates parsed into X.509 names; the device subject built from the profile's template."""

from __future__ import annotations

import re
from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

from station.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# openssl -subj templates
# ---------------------------------------------------------------------------------------------

# OpenSSL's short and long names (OBJ_txt2nid is case-sensitive, and so is this table).
_NAME_OIDS: Final[dict[str, x509.ObjectIdentifier]] = {
    "CN": NameOID.COMMON_NAME,
    "commonName": NameOID.COMMON_NAME,
    "C": NameOID.COUNTRY_NAME,
    "countryName": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "localityName": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "stateOrProvinceName": NameOID.STATE_OR_PROVINCE_NAME,
    "street": NameOID.STREET_ADDRESS,
    "streetAddress": NameOID.STREET_ADDRESS,
    "O": NameOID.ORGANIZATION_NAME,
    "organizationName": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "organizationalUnitName": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "SN": NameOID.SURNAME,
    "surname": NameOID.SURNAME,
    "GN": NameOID.GIVEN_NAME,
    "givenName": NameOID.GIVEN_NAME,
    "title": NameOID.TITLE,
    "initials": NameOID.INITIALS,
    "pseudonym": NameOID.PSEUDONYM,
    "dnQualifier": NameOID.DN_QUALIFIER,
    "generationQualifier": NameOID.GENERATION_QUALIFIER,
    "postalCode": NameOID.POSTAL_CODE,
    "businessCategory": NameOID.BUSINESS_CATEGORY,
    "UID": NameOID.USER_ID,
    "userId": NameOID.USER_ID,
    "DC": NameOID.DOMAIN_COMPONENT,
    "domainComponent": NameOID.DOMAIN_COMPONENT,
    "emailAddress": NameOID.EMAIL_ADDRESS,
}
_DOTTED_OID = re.compile(r"[0-2](\.[0-9]+)+")


# long: one hand-written scan of openssl's -subj syntax (escapes, multi-valued RDNs) and its refusals
def parse_openssl_subject(template: str, *, utf8: bool = False) -> x509.Name:
    """The :class:`x509.Name` that ``openssl req -subj TEMPLATE`` puts in the CSR, for comparison.

    Follows OpenSSL 3's ``parse_name``: ``/type=value`` pairs in order (the first is the first RDN),
    ``\\`` escapes the next character, ``+`` joins the next pair to the same (multi-valued) RDN, a
    trailing ``/`` is allowed.  Where openssl would only warn and *skip* a pair (unknown type,
    empty value) this raises :class:`ConfigError` instead, because the device's CSR would then not
    carry what the template says.  Non-ASCII values are refused unless ``utf8`` is true: without
    ``-utf8`` openssl reads the bytes as Latin-1 and the subject would never match.
    """
    if not template.startswith("/"):
        raise ConfigError(
            f"Subject template {template!r} must look like /type0=value0/type1=value1 (for example "
            "/CN=serial:{serial}/), as openssl req -subj expects."
        )
    rdns: list[list[x509.NameAttribute[str]]] = []
    position, joins_previous = 1, False
    while position < len(template):
        equals = template.find("=", position)
        if equals < 0:
            raise ConfigError(f"Subject template {template!r}: missing '=' after {template[position:]!r}.")
        type_name = template[position:equals]
        position = equals + 1
        value: list[str] = []
        next_joins = False
        while position < len(template) and template[position] != "/":
            char = template[position]
            if char == "+":
                next_joins = True
                break
            if char == "\\":
                position += 1
                if position == len(template):
                    raise ConfigError(f"Subject template {template!r} ends with an escape character '\\'.")
                char = template[position]
            value.append(char)
            position += 1
        position += 1  # past the '/' or '+' (or the end)
        text = "".join(value)
        oid = _NAME_OIDS.get(type_name)
        if oid is None and _DOTTED_OID.fullmatch(type_name):
            oid = x509.ObjectIdentifier(type_name)
        if oid is None:
            raise ConfigError(
                f"Subject template {template!r}: unknown attribute type {type_name!r} — use an openssl "
                "name such as CN, O, OU, C, serialNumber, or a dotted OID."
            )
        if not text:
            raise ConfigError(f"Subject template {template!r}: {type_name} has no value.")
        if not utf8 and not text.isascii():
            raise ConfigError(
                f"Subject template {template!r}: {type_name} has non-ASCII text; openssl req needs -utf8 "
                "for that — add it to the profile's CSR command and mark the template as UTF-8."
            )
        try:
            attribute = x509.NameAttribute(oid, text)
        except ValueError as exc:
            raise ConfigError(
                f"Subject template {template!r}: {type_name}={text!r} is not allowed ({exc})."
            ) from None
        if joins_previous and rdns:
            rdns[-1].append(attribute)
        else:
            rdns.append([attribute])
        joins_previous = next_joins
    if not rdns:
        raise ConfigError(f"Subject template {template!r} names no attribute — give at least /CN=….")
    try:
        return x509.Name([x509.RelativeDistinguishedName(rdn) for rdn in rdns])
    except ValueError as exc:
        raise ConfigError(f"Subject template {template!r}: {exc}.") from None


def device_subject(template: str, *, serial: str, utf8: bool = False, **fields: str) -> x509.Name:
    """The subject of a device certificate: the profile's ``-subj`` template filled in with the scanned serial.

    The one place a device's subject is built — for the CSR check and for the certificate — so the certificate
    carries the station's own encoding (UTF8String), never whatever the device's CSR used.  ``fields`` fills
    further ``{placeholders}`` a profile's template may have (e.g. an identifier read from the SoC).
    """
    return parse_openssl_subject(template.format(serial=serial, **fields), utf8=utf8)

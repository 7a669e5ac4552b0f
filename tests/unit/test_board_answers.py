"""How identify and keygen read a board's answers: `command -v`'s list of tools and pkcs11-tool's object
listing, line by line, with no pattern built from the profile's values."""

from __future__ import annotations

import pytest

from station.steps import _labelled, _tool_listed

COMMAND_V = "/usr/bin/pkcs11-tool\n/usr/bin/openssl  \nsha256sum\n"


@pytest.mark.parametrize(
    ("tool", "listed"),
    [
        ("pkcs11-tool", True),
        ("openssl", True),  # trailing blanks
        ("sha256sum", True),  # a builtin or an alias: the name alone
        ("tool", False),  # a name that only ends another's
        ("ssl", False),
        ("usr", False),
        ("tee-supplicant", False),
    ],
)
def test_a_tool_is_listed_by_its_name_alone_or_a_path_ending_in_it(tool, listed):
    assert _tool_listed(COMMAND_V, tool) is listed


def test_an_indented_name_or_one_on_a_carriage_return_is_not_a_listed_tool():
    assert not _tool_listed("  openssl\n", "openssl")
    assert not _tool_listed("openssl\rpkcs11-tool\n", "openssl")


LISTING_BLOCK = """Private Key Object; RSA
  label:      key0
  ID:         01
  Usage:      decrypt, sign
"""


@pytest.mark.parametrize(
    ("label", "labelled"),
    [("key0", True), ("key", False), ("ey0", False), ("key00", False), ("01", False), ("sign", False)],
)
def test_a_key_is_labelled_by_the_whole_value_after_label(label, labelled):
    assert _labelled(LISTING_BLOCK, label) is labelled


def test_a_label_is_read_on_its_own_line_only():
    assert _labelled("label:key0\n", "key0")
    assert not _labelled("label:\nkey0\n", "key0")

"""Device commands: every value reaches the device shell as exactly one word."""

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.shell import UnsafeArgument, command


def arguments_received(value: str) -> list[str]:
    """Let a real POSIX shell run the rendered line; printf prints each argument it got, NUL-ended."""
    line = command("printf", "%s\\0", value).render()
    out = subprocess.run(["sh", "-c", line], capture_output=True, timeout=10, check=True).stdout
    return out.decode("utf-8").split("\0")[:-1]


def test_tutorial_wipe_renders_as_the_same_find_invocation():
    line = command("find", "/var/lib/tee", "-mindepth", "1", "-exec", "rm", "{}", ";").render()
    assert line == "find /var/lib/tee -mindepth 1 -exec rm '{}' ';'"


def test_environment_is_passed_with_env_and_quoted():
    line = command("openssl", "req", env={"PKCS11_MODULE_PATH": "/usr/lib/libckteec.so.0"}).render()
    assert line == "env PKCS11_MODULE_PATH=/usr/lib/libckteec.so.0 openssl req"


@pytest.mark.parametrize(
    "hostile", ["1;reboot", "$(id)", "`id`", "a b", "' ; rm -rf / '", "x|y", "&&", "*", "~"]
)
def test_hostile_values_arrive_as_one_argument(hostile):
    assert arguments_received(hostile) == [hostile]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40))
def test_any_printable_value_is_exactly_one_word(value):
    assert arguments_received(value) == [value]


@pytest.mark.parametrize(
    "control", ["a\nreboot", "a\rb", "nul\x00", "esc\x1b[2J", "\x03", "tab\tx", "del\x7f"]
)
def test_control_characters_never_reach_a_device_shell(control):
    with pytest.raises(UnsafeArgument):
        command("echo", control)


def test_environment_names_are_checked():
    with pytest.raises(UnsafeArgument):
        command("true", env={"A;B": "x"})

"""Device profiles: the tutorial's command lines, serial validation, and errors that name file and line."""

import re
from pathlib import Path

import pytest

from station.errors import ConfigError
from station.profiles import InvalidSerial, available_profiles, load_profile, load_profile_file

SERIAL = "202600000000001"


@pytest.fixture
def optee():
    return load_profile("welma-optee")


def test_shipped_profiles_are_the_tutorial_and_an_ec_variant():
    assert {"welma-optee", "welma-optee-ec"} <= set(available_profiles())


def test_welma_optee_renders_the_tutorial_command_lines_verbatim(optee):
    assert optee.command("init_token", serial=SERIAL).render() == (
        "pkcs11-tool --module /usr/lib/libckteec.so.0 --init-token --label token0 --so-pin 00000000"
    )
    assert optee.command("init_pin", serial=SERIAL).render() == (
        "pkcs11-tool --module /usr/lib/libckteec.so.0 --init-pin --label token0 --login --so-pin 00000000 --pin 0000"
    )
    assert optee.command("keygen", serial=SERIAL).render() == (
        "pkcs11-tool --module /usr/lib/libckteec.so.0 --keypairgen --label key0 --key-type rsa:2048 --login --pin 0000"
    )
    assert optee.command("csr", serial=SERIAL).render() == (
        "env PKCS11_MODULE_PATH=/usr/lib/libckteec.so.0 openssl req -new -batch -engine pkcs11 -keyform engine "
        "-key 'pkcs11:object=key0;pin-value=0000' -subj /CN=serial:202600000000001/ -out /tmp/key0.csr"
    )


def test_ec_variant_generates_a_p256_key_with_an_explicit_id():
    line = load_profile("welma-optee-ec").command("keygen", serial=SERIAL).render()
    assert "--key-type EC:prime256v1" in line and "--id 01" in line


def test_step_list_is_data(optee, tmp_path):
    assert optee.step_names()[0] == "identify" and optee.step_names()[-1] == "tls_proof"
    text = optee.source.read_text().replace("reboot_after_wipe = true", "reboot_after_wipe = false")
    text = text.replace("tls_proof = true", "tls_proof = false")
    (tmp_path / "lean.toml").write_text(text)
    lean = load_profile_file(tmp_path / "lean.toml")
    assert "reboot" not in lean.step_names() and "tls_proof" not in lean.step_names()


@pytest.mark.parametrize(
    "serial",
    [
        "1;reboot",
        "$(id)",
        "`id`",
        "20260000000000\n1",
        "2" * 200,
        "20260000000000é",
        "",
        " 202600000000001",
        "20260000000000",
        "2026000000000011",
        "abcdefghijklmno",
    ],
)
def test_hostile_or_wrong_serials_are_refused_with_a_reason(optee, serial):
    with pytest.raises(InvalidSerial) as refused:
        optee.validate_serial(serial)
    assert "scan" in str(refused.value)


def test_a_good_serial_is_accepted_and_fills_the_subject(optee):
    assert optee.subject_for(SERIAL) == "/CN=serial:202600000000001/"


def write_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = load_profile("welma-optee").source.read_text()
    assert old in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write_variant(tmp_path, 'token_label = "token0"', 'token_label = "token0')
    with pytest.raises(ConfigError, match=r"broken\.toml.*line 1[0-9]"):
        load_profile_file(path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('key_type = "rsa:2048"', 'key_type = "rsa:1024"', r"line \d+: profile.key_type"),
        ('serial_pattern = "^[0-9]{15}$"', 'serial_pattern = "^[0-9"', r"line \d+: profile.serial_pattern"),
        ("timeout_s = 180", "timeout_s = -1", r"line \d+: steps.keygen.timeout_s"),
        ('"--pin", "{user_pin}"]\nlist', '"--pin", "{user_pn}"]\nlist', r"commands.keygen.*user_pn"),
        ("reboot_after_wipe = true", 'reboot_after_wipe = "yes"', r"line \d+: profile.reboot_after_wipe"),
    ],
)
def test_semantic_errors_name_file_line_and_key(tmp_path, old, new, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        load_profile_file(write_variant(tmp_path, old, new))
    assert "broken.toml" in str(error.value)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        # The issue's own example: a misspelt deadline must not silently keep the 60 s default.
        ("[steps.keygen]\n", "[steps.keygen]\ntimout_s = 90\n", "steps.keygen.timout_s"),
        ('key_label = "key0"', 'key_label = "key0"\nkey_lable = "key1"', "profile.key_lable"),
        ('login_user = "root"', 'login_user = "root"\nlogin_pasword = "x"', "console.login_pasword"),
        ("[commands]\n", '[commands]\nkeygne = ["true"]\n', "commands.keygne"),
        ("[console]\n", "[consoel]\nx = 1\n[console]\n", "consoel"),
    ],
)
def test_an_unknown_key_is_refused_with_file_line_and_key(tmp_path, old, new, key):
    path = write_variant(tmp_path, old, new)
    line = next(
        number
        for number, text in enumerate(path.read_text().splitlines(), 1)
        if text.startswith(key.rsplit(".", 1)[-1]) or text == f"[{key}]"
    )
    with pytest.raises(ConfigError, match=rf"broken\.toml, line {line}: {re.escape(key)}: is not a setting"):
        load_profile_file(path)


def test_line_engineers_copy_wins_over_the_shipped_profile(tmp_path):
    text = load_profile("welma-optee").source.read_text().replace('user_pin = "0000"', 'user_pin = "7391"')
    (tmp_path / "welma-optee.toml").write_text(text)
    assert load_profile("welma-optee", tmp_path).user_pin == "7391"


def test_demo_pins_are_recognised(optee, tmp_path):
    assert optee.uses_demo_pins
    path = write_variant(tmp_path, 'so_pin = "00000000"', 'so_pin = "48213377"')
    path.write_text(path.read_text().replace('user_pin = "0000"', 'user_pin = "5821"'))
    assert not load_profile_file(path).uses_demo_pins


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ConfigError, match="welma-optee"):
        load_profile("nope")

"""API keys: masked types, owner-only key files, environment."""
import os
import pickle

import pytest

from aegis.binance import keys

SECRET = "s3cr3t-VALUE-that-must-never-appear-0123456789"


def test_secret_repr_str_and_format_are_masked():
    s = keys.Secret(SECRET)
    for text in (repr(s), str(s), f"{s}", f"{s!r}", "%s" % s, repr(keys.from_strings("k" * 20, SECRET))):
        assert SECRET not in text


def test_api_key_shows_only_its_last_four_characters():
    k = keys.from_strings("ABCDEFGHIJKLMNOP", SECRET)
    assert "ABCDEFGHIJKL" not in repr(k.key) and repr(k.key).endswith("MNOP')")


def test_secret_cannot_be_pickled():
    with pytest.raises(TypeError):
        pickle.dumps(keys.Secret(SECRET))


def test_keys_come_from_the_environment():
    k = keys.load("binance-testnet", environ={keys.ENV_KEY: "kkk", keys.ENV_SECRET: SECRET})
    assert k.secret.reveal() == SECRET and k.key.reveal() == "kkk"


def test_only_one_environment_variable_is_an_error():
    with pytest.raises(keys.ApiKeyError, match="both"):
        keys.load("binance", environ={keys.ENV_KEY: "kkk"})


def test_real_venues_require_keys_while_embedded_has_test_keys():
    with pytest.raises(keys.ApiKeyError, match="needs API keys"):
        keys.load("binance", environ={})
    assert keys.load("embedded", environ={}).key.reveal() == keys.EMBEDDED_KEY


def test_owner_only_key_file_is_accepted_in_both_formats(tmp_path):
    p = tmp_path / "k1"
    p.write_text("kkk\n" + SECRET + "\n")
    os.chmod(p, 0o600)
    assert keys.load("binance", key_file=str(p), environ={}).secret.reveal() == SECRET
    p2 = tmp_path / "k2"
    p2.write_text(f"# comment\n{keys.ENV_KEY}=kkk\n{keys.ENV_SECRET}={SECRET}\n")
    os.chmod(p2, 0o400)
    assert keys.load("binance", key_file=str(p2), environ={}).key.reveal() == "kkk"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_group_or_world_readable_key_file_is_refused_with_one_line(tmp_path, mode):
    p = tmp_path / "k"
    p.write_text("kkk\n" + SECRET + "\n")
    os.chmod(p, mode)
    with pytest.raises(keys.ApiKeyError) as e:
        keys.load("binance", key_file=str(p), environ={})
    msg = str(e.value)
    assert "chmod 600" in msg and "\n" not in msg and SECRET not in msg


def test_missing_key_file_is_a_one_line_error(tmp_path):
    with pytest.raises(keys.ApiKeyError, match="cannot read key file"):
        keys.load("binance", key_file=str(tmp_path / "nope"), environ={})

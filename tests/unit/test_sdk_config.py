"""Where a client finds its server and token: arguments, environment, profile file."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oprun import Client, ValidationError
from oprun.sdk import _config
from oprun.sdk._config import config_path, dumps, resolve, save_profile

A = "http://a.example:8710"
B = "http://b.example:8710"
ENV = "http://env.example:8710"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty XDG_CONFIG_HOME, and no OPRUN_* variable."""
    for name in ("OPRUN_URL", "OPRUN_TOKEN", "OPRUN_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture
def profiles(home) -> Path:
    """A profile file with [default] on A and [b] on B."""
    save_profile("default", A, "tok-a")
    return save_profile("b", B, "tok-b")


def test_the_file_lives_under_xdg_config_home(home, monkeypatch):
    assert config_path() == home / "oprun" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/path")  # ignored, as XDG says
    assert config_path() == Path.home() / ".config" / "oprun" / "config.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config_path() == Path.home() / ".config" / "oprun" / "config.toml"


def test_nothing_configured_means_the_local_default_and_no_token(home):
    connection = resolve()
    assert (connection.url, connection.token) == ("http://127.0.0.1:8710", None)


def test_the_default_profile_is_used_when_nothing_else_is_set(profiles):
    connection = resolve()
    assert (connection.url, connection.token, connection.url_source) == (
        A,
        "tok-a",
        "profile default",
    )


def test_the_environment_beats_the_default_profile(profiles, monkeypatch):
    monkeypatch.setenv("OPRUN_URL", ENV)
    monkeypatch.setenv("OPRUN_TOKEN", "tok-env")
    assert (resolve().url, resolve().token) == (ENV, "tok-env")


def test_arguments_beat_everything(profiles, monkeypatch):
    monkeypatch.setenv("OPRUN_URL", ENV)
    monkeypatch.setenv("OPRUN_TOKEN", "tok-env")
    connection = resolve("http://arg.example/", "tok-arg", profile="b")
    assert (connection.url, connection.token) == ("http://arg.example", "tok-arg")


def test_a_named_profile_beats_the_environment(profiles, monkeypatch):
    monkeypatch.setenv("OPRUN_URL", ENV)
    monkeypatch.setenv("OPRUN_TOKEN", "tok-env")
    assert (resolve(profile="b").url, resolve(profile="b").token) == (B, "tok-b")


def test_oprun_profile_picks_the_profile_used_after_the_environment(profiles, monkeypatch):
    monkeypatch.setenv("OPRUN_PROFILE", "b")
    assert (resolve().url, resolve().token) == (B, "tok-b")
    monkeypatch.setenv("OPRUN_URL", ENV)
    assert (resolve().url, resolve().token) == (ENV, None)


def test_a_profile_token_is_never_sent_to_another_server(profiles, monkeypatch):
    assert resolve("http://elsewhere").token is None
    assert resolve(A + "/").token == "tok-a"  # the same server: its profile's token
    monkeypatch.setenv("OPRUN_URL", B)
    assert resolve().token is None  # [default] is for A, not B
    assert resolve(profile="b").token == "tok-b"


def test_the_environment_token_goes_with_a_url_argument_but_not_to_a_profile_url(
    profiles, monkeypatch
):
    monkeypatch.setenv("OPRUN_TOKEN", "tok-env")
    assert resolve("http://x").token == "tok-env"
    connection = resolve()
    assert (connection.url, connection.token) == (A, "tok-a")


def test_a_missing_named_profile_says_how_to_make_it(profiles, monkeypatch):
    with pytest.raises(ValidationError, match=r"no profile 'prod' .*profiles: b, default.*login"):
        resolve(profile="prod")
    monkeypatch.setenv("OPRUN_PROFILE", "prod")
    with pytest.raises(ValidationError, match="no profile 'prod'"):
        resolve()


def test_a_bad_profile_name_or_file_is_a_validation_error(home):
    with pytest.raises(ValidationError, match="profile name"):
        resolve(profile="no spaces")
    config_path().parent.mkdir(parents=True)
    config_path().write_text("[default\nurl=")
    with pytest.raises(ValidationError, match="cannot read the profile file"):
        resolve()
    assert resolve("http://x", "t").token == "t"  # given both, the file is never read
    config_path().write_text("[default]\nurl = 42\n")
    with pytest.raises(ValidationError, match="url of profile 'default'"):
        resolve()


def test_saving_keeps_other_profiles_and_keys_and_leaves_mode_0600(profiles):
    path = config_path()
    text = path.read_text() + '\n[b2]\nurl = "http://c"\ntoken = "t"\ntimeout = 5\n'
    path.write_text(text)
    path.chmod(0o644)
    save_profile("b2", "http://c2/", "t2")
    data = tomllib.loads(path.read_text())
    assert data["default"] == {"url": A, "token": "tok-a"}
    assert data["b2"] == {"url": "http://c2", "token": "t2", "timeout": 5}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp file left


def test_client_takes_its_url_and_token_from_a_profile(profiles):
    with Client(profile="b") as client:
        assert client.url == B
        assert client._settings.token == "tok-b"
    with Client() as client:
        assert client.url == A


@given(
    st.dictionaries(
        st.from_regex(_config.PROFILE_NAME, fullmatch=True),
        st.dictionaries(
            st.text(min_size=1, max_size=10),
            st.one_of(
                st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
                st.integers(-(2**63), 2**63 - 1),
                st.booleans(),
            ),
            max_size=4,
        ),
        max_size=4,
    )
)
def test_dumps_writes_toml_that_reads_back_the_same(config):
    assert tomllib.loads(dumps(config)) == config

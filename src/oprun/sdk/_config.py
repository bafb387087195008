"""Where a client finds its server and token: arguments, environment, or a profile file.

The profile file is TOML, one table per profile, at
``$XDG_CONFIG_HOME/oprun/config.toml`` (``~/.config/oprun/config.toml`` by default)::

    [default]
    url = "http://127.0.0.1:8710"
    token = "oprun_..."

    [staging]
    url = "https://oprun.staging.example.com"
    token = "oprun_..."

A ``url`` may name several API processes of one deployment, as a list or a
comma-separated string (``url = ["http://api1:8710", "http://api2:8711"]``): the
client spreads its calls over them and fails over from one that is down
(`oprun.sdk._failover`).

The server URL is taken from the first of: the ``url`` argument (``--url``), the
profile named by the ``profile`` argument (``--profile``), ``OPRUN_URL``, the profile
named by ``OPRUN_PROFILE`` (else ``[default]``), and ``http://127.0.0.1:8710``.
The token is the ``token`` argument (``--token``), else the one that comes with the
URL (the profile's, or ``OPRUN_TOKEN`` for a URL from ``OPRUN_URL``), else
``OPRUN_TOKEN`` unless the URL came from a profile, else the token of a profile
whose URLs include every URL used. So a profile's token is never sent to another
server.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from oprun.domain.errors import ValidationError
from oprun.sdk._failover import split_urls

DEFAULT_URL = "http://127.0.0.1:8710"
"""Where the SDK looks for a server when nothing else names one."""
URL_ENV = "OPRUN_URL"
TOKEN_ENV = "OPRUN_TOKEN"
PROFILE_ENV = "OPRUN_PROFILE"
DEFAULT_PROFILE = "default"
PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
"""Profile names are TOML bare keys: letters, digits, ``_`` and ``-``."""


def config_path() -> Path:
    """The profile file: ``$XDG_CONFIG_HOME/oprun/config.toml``, else under ``~/.config``.

    A relative ``XDG_CONFIG_HOME`` is ignored, as the XDG specification says.
    """
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "oprun" / "config.toml"


@dataclass(frozen=True)
class Profile:
    """One table of the profile file."""

    name: str
    url: str | None = None
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Connection:
    """Where to connect and with which token, and where each came from (for messages).

    `url` holds one URL or several, comma-separated.
    """

    url: str
    token: str | None = field(repr=False)
    url_source: str
    token_source: str | None


def check_profile_name(name: str) -> str:
    """`name` if it can name a profile, else a `ValidationError` saying what can."""
    if not PROFILE_NAME.match(name):
        raise ValidationError(
            f"profile name must be 1-64 letters, digits, '_' or '-', got {name!r}",
            field="profile",
        )
    return name


def read_config(path: Path | None = None) -> dict[str, Any]:
    """The profile file as a dict (empty when the file does not exist)."""
    path = path or config_path()
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValidationError(
            f"cannot read the profile file {path}: {exc}", field="profile"
        ) from exc


def load_profile(name: str, path: Path | None = None, *, required: bool) -> Profile | None:
    """The profile `name`, or None when it is missing and not `required`.

    Raises:
        ValidationError: the file cannot be read, the profile is malformed, or it is
            missing and `required`.
    """
    path = path or config_path()
    config = read_config(path)
    section = config.get(name)
    if section is None:
        if not required:
            return None
        known = ", ".join(sorted(k for k, v in config.items() if isinstance(v, dict))) or "none"
        raise ValidationError(
            f"no profile {name!r} in {path} (profiles: {known}); "
            f"create it with 'oprun login --profile {name} --url URL --token TOKEN'",
            field="profile",
        )
    if not isinstance(section, dict):
        raise ValidationError(f"profile {name!r} in {path} is not a table", field="profile")
    values: dict[str, str | None] = {}
    for key in ("url", "token"):
        value = section.get(key)
        if key == "url" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if value is not None and not isinstance(value, str):
            raise ValidationError(
                f"{key} of profile {name!r} in {path} must be a string"
                + (" or a list of strings" if key == "url" else ""),
                field=key,
            )
        values[key] = value or None
    return Profile(name, values["url"], values["token"])


def _own_urls(profile_url: str | None, used: str) -> bool:
    """Whether every URL of `used` is one of the profile's (its token may go there)."""
    if profile_url is None:
        return False
    return set(split_urls(used)) <= set(split_urls(profile_url))


def normalize_url(url: str | Iterable[str]) -> str:
    """Server URLs without surrounding spaces or trailing slashes, comma-separated.

    `url` is one URL, several in one comma-separated string, or a list of them.
    """
    return ",".join(split_urls(url))


def resolve(
    url: str | Iterable[str] | None = None,
    token: str | None = None,
    profile: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Connection:
    """Where to connect and with which token (see the module docstring for the order).

    Raises:
        ValidationError: a named profile is missing or the profile file is unreadable.
    """
    env = os.environ if environ is None else environ
    named = load_profile(check_profile_name(profile), path, required=True) if profile else None
    loaded: list[Profile | None] = []

    def implicit() -> Profile | None:
        # Read only when needed: a client given its url and token never opens the file.
        if named is not None:
            return None
        if not loaded:
            chosen = env.get(PROFILE_ENV)
            name = check_profile_name(chosen or DEFAULT_PROFILE)
            loaded.append(load_profile(name, path, required=bool(chosen)))
        return loaded[0]

    env_url, env_token = env.get(URL_ENV) or None, env.get(TOKEN_ENV) or None

    # The URL, and the token that comes with it.
    own_token: str | None
    fallback = implicit() if not (url or named or env_url) else None
    if url is not None and not isinstance(url, str):
        url = ",".join(url)
    if url:
        resolved, source, own_token = url, "argument", None
    elif named is not None and named.url:
        resolved, source, own_token = named.url, f"profile {named.name}", named.token
    elif env_url:
        resolved, source, own_token = env_url, URL_ENV, env_token
    elif fallback is not None and fallback.url:
        resolved, source, own_token = fallback.url, f"profile {fallback.name}", fallback.token
    else:
        resolved, source, own_token = DEFAULT_URL, "default", None
    from_profile = source.startswith("profile ")

    secret: str | None = None
    token_source: str | None = None
    if token is not None:  # "" means: send no token at all
        secret, token_source = token or None, "argument"
    elif own_token:
        secret, token_source = own_token, (source if from_profile else TOKEN_ENV)
    elif env_token and not from_profile:
        secret, token_source = env_token, TOKEN_ENV
    else:
        for candidate in (named, implicit()):
            if candidate is not None and candidate.token and _own_urls(candidate.url, resolved):
                secret, token_source = candidate.token, f"profile {candidate.name}"
                break
    return Connection(normalize_url(resolved), secret, source, token_source)


# -- writing -----------------------------------------------------------------------------
def dumps(config: Mapping[str, Any]) -> str:
    """TOML text for a profile file: top-level values, then one table per profile (tomli-w)."""
    return tomli_w.dumps(config)


def save_profile(name: str, url: str | Iterable[str], token: str, path: Path | None = None) -> Path:
    """Write (or replace) profile `name` in the profile file, which is left mode 0600.

    Other profiles and keys are kept (comments are not). The file is replaced
    atomically, so a reader never sees half of it.
    """
    check_profile_name(name)
    path = path or config_path()
    config = read_config(path)
    previous = config.get(name)
    section = dict(previous) if isinstance(previous, dict) else {}
    section.update({"url": normalize_url(url), "token": token})
    config[name] = section
    text = dumps(config)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path

"""The CLI's config file: the server URL and token ``connguard up`` saved, read by every
resource command.

Where: ``$CONNGUARD_CONFIG`` when set, else ``$XDG_CONFIG_HOME/connguard/config.toml``, else
``~/.config/connguard/config.toml``. The daemons' config (cli/daemon_config.py) honours the same
variable and leaves these two top-level keys to this module, so one file may serve both. Two
keys, both optional::

    url = "http://127.0.0.1:9696"
    token = "cg_..."

Precedence, per value: ``--url``/``--token`` flags, then ``CONNGUARD_URL``/``CONNGUARD_TOKEN``,
then this file, then the default URL. The file's token is only sent to the file's URL: a
command pointed elsewhere (by a flag or the environment) does not hand another server the
admin token of this one.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The config file exists but cannot be used (unreadable, bad TOML, wrong types)."""


def config_path() -> Path:
    explicit = os.environ.get("CONNGUARD_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "connguard" / "config.toml"


def load(path: Path | None = None) -> dict[str, str]:
    """The file's ``url`` and ``token`` (missing keys are absent; no file: {})."""
    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    out: dict[str, str] = {}
    for key in ("url", "token"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: {key}: must be a non-empty string")
        out[key] = value
    return out


def save(values: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``values`` (strings) atomically, readable by the owner only (it holds a token)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A TOML basic string is a JSON string for what we write (ASCII URLs and tokens).
    body = "# written by 'connguard up'; flags and CONNGUARD_URL/CONNGUARD_TOKEN take precedence\n"
    body += "".join(f"{k} = {json.dumps(str(v))}\n" for k, v in values.items())
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        os.chmod(tmp, 0o600)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def resolve(url: str | None, token: str | None, default_url: str) -> tuple[str, str | None]:
    """(url, token) from the flags/environment given (None when not given) and the file."""
    if url is not None and token is not None:
        return url, token  # the file is not even read
    cfg = load()
    eff_url = url if url is not None else cfg.get("url", default_url)
    if token is None and "token" in cfg and same_url(eff_url, cfg.get("url", default_url)):
        token = cfg["token"]
    return eff_url, token

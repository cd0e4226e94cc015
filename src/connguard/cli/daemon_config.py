"""The daemons' config file, ``/etc/connguard/connguard.toml``: a ``[server]`` and an ``[agent]``
table whose keys are the daemons' settings (SCHEMA below). docs/operations.md is the operator's
page; this is the one place the keys, their checks and their defaults are written down.

Where: ``--config FILE``, else ``$CONNGUARD_CONFIG``, else ``/etc/connguard/connguard.toml``.
The default file may be absent (every key has a default); a file named explicitly must exist.

Precedence, per key: the command-line flag, then the environment (``CONNGUARD_<SECTION>_<KEY>``,
e.g. ``CONNGUARD_AGENT_INTERVAL``), then the file, then the default. Every value, whatever its
origin, goes through the same check and an error names the key (``agent.interval: must be a
number between 0.1 and 60, got 'fast'``); a key the schema does not know is refused rather than
ignored (a mistyped ``intervall`` must not silently leave the default in force).

One file for the CLI client too: the client's config (cli/config.py) reads the top-level ``url``
and ``token`` keys and also honours ``$CONNGUARD_CONFIG``, so one variable can point both at one
file. Those two top-level keys are therefore accepted here and left to the client; nothing else
may sit outside the two tables.

Secrets never come from a flag or the environment (``ps`` and ``/proc/PID/environ`` show them):
only their *file* is named (``token_file``, ``database_password_file``), and that file must be
readable by its owner alone (read_secret).
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

DEFAULT_PATH = Path("/etc/connguard/connguard.toml")
CLIENT_KEYS = ("url", "token")  # the CLI client's top-level keys (cli/config.py)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class ConfigError(Exception):
    """One or more settings are unusable; ``str()`` is one line per problem, each naming its key."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# ---- value checks: each takes the raw value (TOML-typed, or a string from a flag or the
# environment) and returns the typed value, or raises ValueError saying what is wrong ------------

def _number(lo: float, hi: float) -> Callable[[Any], float]:
    def check(raw: Any) -> float:
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number between {lo:g} and {hi:g}, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be a number between {lo:g} and {hi:g}, got {raw!r}")
        return value
    return check


def _text(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"must be a non-empty string, got {raw!r}")
    return raw.strip()


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(raw: Any) -> str:
        if not isinstance(raw, str) or raw.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw.lower()
    return check


def _abs_path(raw: Any) -> Path:
    text = _text(raw)
    if not os.path.isabs(text):
        raise ValueError(f"must be an absolute path, got {raw!r}")
    return Path(text)


def _url(raw: Any) -> str:
    text = _text(raw)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL, got {raw!r}")
    return text.rstrip("/")


def _bind(raw: Any) -> tuple[str, int]:
    text = _text(raw)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, got {raw!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _widest(raw: Any) -> tuple[int, int]:
    v4, sep, v6 = str(raw).partition(",")
    if not (sep and v4.strip().isdigit() and v6.strip().isdigit() and int(v4) <= 32 and int(v6) <= 128):
        raise ValueError(f"{raw!r} is not V4,V6 prefix lengths (0-32,0-128), e.g. 16,32")
    return int(v4), int(v6)


def _listen(raw: Any) -> str:
    """ADDR:PORT to listen on, checked before anything starts."""
    text = _text(raw)
    addr, sep, port = text.rpartition(":")
    if not sep or not addr or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected ADDR:PORT (127.0.0.1:9697), got {raw!r}")
    return text


def _pattern(raw: Any) -> str:
    return _text(raw)  # any text is a shell pattern (fnmatch); only an empty one is refused


def check_db_url(raw: Any) -> str:
    """A database URL the server may open. For SQLite: an absolute path in an existing
    directory (``sqlite:////var/lib/connguard/connguard.db``). SQLAlchemy takes anything after
    ``sqlite:///`` as a path relative to the working directory, ``sqlite://`` as a memory
    database and creates a missing file silently: a typo would otherwise start a server on an
    empty database somewhere unexpected, and lose it on restart."""
    text = _text(raw)
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(f"must be a database URL (sqlite:////ABSOLUTE/PATH or postgresql+psycopg://...), got {raw!r}")
    dialect = scheme.split("+")[0]
    if dialect == "postgresql":
        return text
    if dialect != "sqlite":
        raise ValueError(f"unsupported database {scheme!r}: use sqlite:////ABSOLUTE/PATH or "
                         f"postgresql+psycopg://..., got {raw!r}")
    if scheme != "sqlite":
        raise ValueError(f"use plain sqlite:////ABSOLUTE/PATH (the stdlib driver), got {raw!r}")
    if not rest.startswith("/") or rest in ("/", "/:memory:") or rest.startswith("/:memory:"):
        raise ValueError(f"an SQLite URL needs a file: sqlite:////ABSOLUTE/PATH (four slashes), got {raw!r}")
    path = rest[1:].split("?")[0]
    if not path.startswith("/"):
        raise ValueError(f"an SQLite path must be absolute: sqlite:////ABSOLUTE/PATH (four slashes), "
                         f"got {raw!r} (relative to the working directory)")
    parent = Path(path).parent
    if not parent.is_dir():
        raise ValueError(f"the directory {parent} does not exist (it is not created: check the path), got {raw!r}")
    return text


@dataclass(frozen=True)
class Key:
    check: Callable[[Any], Any]
    default: Any = None
    help: str = ""
    reload: bool = False        # SIGHUP applies a new value (others are logged as needing a restart)


SCHEMA: dict[str, dict[str, Key]] = {
    "server": {
        "db": Key(check_db_url, None, "SQLAlchemy URL (default: sqlite:////var/lib/connguard/connguard.db)"),
        "database_password_file": Key(_abs_path, None, "file holding the database password (mode 0600 or 0400)"),
        "bind": Key(_bind, ("127.0.0.1", 9696), "HOST:PORT to listen on"),
        "log_level": Key(_choice(*LOG_LEVELS), "info", "log level", reload=True),
        "log_format": Key(_choice("text", "json"), "text", "text or json (one object a line)"),
        "widest_prefix": Key(_widest, (16, 32), "widest V4,V6 ban or cloud-wide allowlist prefix without force",
                             reload=True),
    },
    "agent": {
        "state_file": Key(_abs_path, None, "standalone mode: the YAML state to enforce"),
        "server": Key(_url, None, "server mode: the server's URL"),
        "token_file": Key(_abs_path, None, "server mode: file holding this host's agent token (mode 0600 or 0400)"),
        "host": Key(_text, None, "server mode: this host's name (default: the hostname)"),
        "interfaces": Key(_pattern, "tap*", "server mode: interfaces reported as ports (shell pattern)"),
        "report_interval": Key(_number(0.2, 300), 5.0, "server mode: seconds between reports", reload=True),
        "workdir": Key(_abs_path, None, "ban book, cached snapshot, status (default: the data directory's agent/<netns>)"),
        "netns": Key(_text, None, "network namespace to enforce in"),
        "interval": Key(_number(0.1, 60), 1.0, "seconds between reconciliation passes", reload=True),
        "drift_interval": Key(_number(1, 3600), 10.0, "seconds between kernel drift checks", reload=True),
        "metrics_listen": Key(_listen, None, "ADDR:PORT to serve the agent's own Prometheus metrics on (/metrics)"),
        "start_timeout": Key(_number(1, 3600), 60.0, "seconds to get a first usable state before exiting non-zero"),
        "log_level": Key(_choice(*LOG_LEVELS), "info", "log level", reload=True),
        "log_format": Key(_choice("text", "json"), "text", "text or json (one object a line)"),
    },
}


def env_name(section: str, key: str) -> str:
    return f"CONNGUARD_{section.upper()}_{key.upper()}"


def config_path(explicit: str | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """(path, named): ``named`` when the operator chose it, so it must exist."""
    if explicit:
        return Path(explicit), True
    if environ.get("CONNGUARD_CONFIG"):
        return Path(environ["CONNGUARD_CONFIG"]), True
    return DEFAULT_PATH, False


def read_file(path: Path, named: bool) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if named:
            raise ConfigError([f"{path}: no such config file"]) from None
        return {}
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    problems = []
    for name, value in data.items():
        if name in SCHEMA:
            if not isinstance(value, dict):
                problems.append(f"{path}: {name}: must be a table ([{name}]), got {value!r}")
                continue
            problems += [f"{path}: {name}.{k}: unknown key (known: {', '.join(SCHEMA[name])})"
                         for k in value if k not in SCHEMA[name]]
        elif name not in CLIENT_KEYS:
            problems.append(f"{path}: {name}: unknown section or key (known: [server], [agent]; "
                            f"top-level url and token belong to the CLI client)")
    if problems:
        raise ConfigError(problems)
    return data


def resolve(section: str, flags: Mapping[str, Any], *, config: str | None = None,
            environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str], Path]:
    """The section's effective settings, where each came from ("flag", "env NAME", "file",
    "default"), and the config file's path. ``flags``: the values given on the command line
    (None or absent: not given). Raises ConfigError listing every unusable value."""
    environ = os.environ if environ is None else environ
    path, named = config_path(config, environ)
    table = read_file(path, named).get(section, {})
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for key, spec in SCHEMA[section].items():
        name = env_name(section, key)
        if flags.get(key) is not None:
            raw, where, label = flags[key], "flag", f"--{key.replace('_', '-')}"
        elif environ.get(name) not in (None, ""):
            raw, where, label = environ[name], f"env {name}", f"{name} ({section}.{key})"
        elif key in table:
            raw, where, label = table[key], "file", f"{path}: {section}.{key}"
        else:
            values[key], origin[key] = spec.default, "default"
            continue
        try:
            values[key] = raw if spec.check is None else spec.check(raw)
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
            continue
        origin[key] = where
    if problems:
        raise ConfigError(problems)
    return values, origin, path


def read_secret(path: Path, key: str) -> str:
    """The secret in ``path``, which must be a regular file readable by its owner alone (mode
    0600 or 0400): a group- or world-readable secret has leaked already, refuse to use it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError([f"{key}: cannot read {path}: {exc.strerror}"]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError([f"{key}: {path} is not a regular file"])
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise ConfigError([f"{key}: {path} is readable or writable by group or others (mode {mode:04o}); "
                               f"a secret's file must be mode 0600 or 0400: chmod 600 {path}"])
        with os.fdopen(os.dup(fd), "rb") as fh:
            text = fh.read().decode("utf-8", "replace").strip()
    finally:
        os.close(fd)
    if not text:
        raise ConfigError([f"{key}: {path} is empty"])
    return text


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (the SQLite database before
    SQLite creates it with the umask's mode; its -wal and -shm files copy the database's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.fchmod(fd, 0o600)  # whatever the umask
    os.close(fd)


def sqlite_path(url: str) -> Path | None:
    scheme, _, rest = url.partition("://")
    return Path(rest[1:].split("?")[0]) if scheme == "sqlite" else None


def with_password(url: str, password: str) -> str:
    """``url`` with its password set (the password file's content, never on a command line)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=password).render_as_string(hide_password=False)

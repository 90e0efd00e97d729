"""Editors' logins on a team server: the logins file, the command that adds an editor, and the limit on wrong passwords.

The file is streamlit-authenticator's YAML, bcrypt hashes only, kept outside the repository (`ServerConfig.logins`):

    credentials:
      usernames:
        ana:
          name: Ana Horvat
          password: $2b$12$...   # `geoloc logins add ana` writes it; a plaintext password is refused

The app checks passwords and keeps the login cookie with streamlit-authenticator (`views/login.py`); what needs no
Streamlit lives here: reading and checking the file, writing it, and `LoginLimiter`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from geoloc_core.base import storage
from geoloc_core.base.errors import UserError
from geoloc_core.config import PROJECT_DIR, ServerConfig, server_config

BCRYPT_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")  # what streamlit-authenticator may check against
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # the library lower-cases and strips what is typed
MIN_PASSWORD = 10
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further (bcrypt 5 refuses longer ones)
MIN_COOKIE_KEY = 32  # the cookie is an HS256 JWT in the browser: a short key can be guessed offline


def logins_file(cfg: ServerConfig | None = None) -> Path | None:
    """The server's logins file; None where logins are off (no setting, or a viewer-only server)."""
    cfg = cfg or server_config()
    return Path(cfg.logins).expanduser() if cfg.logins and cfg.mode == "editor" else None


def cookie_key(cfg: ServerConfig | None = None) -> str | None:
    """The secret that signs the login cookie; None: no cookie. Raises `UserError` for a key too short to keep."""
    key = (cfg or server_config()).cookie_key
    if key and len(key) < MIN_COOKIE_KEY:
        raise UserError(f"the server setting cookie_key is {len(key)} characters long; it needs {MIN_COOKIE_KEY} or "
                        "more", "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return key or None


def read_logins(path: Path) -> dict[str, Any]:
    """The file's credentials, as streamlit-authenticator takes them (`{"usernames": {name: {"name", "password"}}}`).

    Raises `UserError` saying what to fix for a file that is missing, inside the repository, readable or writable by
    others, malformed, or that holds a password that is not a bcrypt hash (the library would hash it in memory and log
    in with the plaintext left on disk)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"the logins file {path} does not exist", "`geoloc logins add NAME` makes it")
    if path.resolve().is_relative_to(PROJECT_DIR):
        raise UserError(f"the logins file {path} lies inside the repository, where it could be committed",
                        "keep it outside (e.g. /etc/geoloc/logins.yaml) and point the server setting logins at it")
    if path.stat().st_mode & 0o077:
        raise UserError(f"the logins file {path} may be read or written by other users (who could guess the passwords "
                        "from their hashes offline, or add a login of their own)", f"`chmod 600 {path}`")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        users = data["credentials"]["usernames"] or {}
    except (yaml.YAMLError, KeyError, TypeError):
        users = None
    if not isinstance(users, dict) or not all(isinstance(u, dict) for u in users.values()):
        raise UserError(f"the logins file {path} is not streamlit-authenticator's format",
                        "it holds credentials: usernames: NAME: {name, password}; `geoloc logins add NAME` writes it")
    for name, user in users.items():
        if not USERNAME.match(str(name)):
            raise UserError(f"the logins file {path}: username {str(name)[:64]!r} is not lower-case letters, digits, "
                            "'.', '_' or '-'", "`geoloc logins add NAME` writes a login")
        if not BCRYPT_HASH.match(str(user.get("password", ""))):
            raise UserError(f"the logins file {path}: {name}'s password is not a bcrypt hash (a plaintext password "
                            "is refused)", f"`geoloc logins add {name}` sets it again")
    return {"usernames": {str(name): {"name": str(u.get("name") or name), "password": u["password"]}
                          for name, u in users.items()}}


def add_login(path: Path, username: str, password: str, name: str | None = None, rounds: int = 12) -> None:
    """Add an editor to the logins file, or set an existing one's password (and name), writing it anew (temp file and
    rename, mode 0600). Raises `UserError` for a username or password the login form could not take."""
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise UserError(f"username {username!r}: lower-case letters, digits, '.', '_' or '-' (64 at most)")
    if password != password.strip():
        raise UserError("the password starts or ends with a space, which the login form drops")
    if len(password) < MIN_PASSWORD or len(password.encode()) > MAX_PASSWORD_BYTES:
        raise UserError(f"the password needs {MIN_PASSWORD} characters or more and {MAX_PASSWORD_BYTES} bytes at most")
    path = Path(path)
    users = read_logins(path)["usernames"] if path.exists() else {}
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    users[username] = {"name": name or users.get(username, {}).get("name") or username, "password": hashed}
    text = yaml.safe_dump({"credentials": {"usernames": users}}, sort_keys=True, allow_unicode=True)
    storage.write_bytes(path, text.encode(), mode=0o600)


class LoginLimiter:
    """Wrong passwords counted per key (a username, a browser session) over a sliding window: a key with `attempts`
    failures within `window_s` is refused for `cooldown_s`, whatever password comes next.

    One per process, shared by every session under a lock, so reloading the page or opening a second tab does not reset
    a username's count. `clock` gives seconds (tests pass their own).
    """

    MAX_KEYS = 100_000  # past this many, a flood of invented usernames is forgotten, the first counted first

    def __init__(self, attempts: int, window_s: float, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts, self.window_s, self.cooldown_s, self.clock = attempts, window_s, cooldown_s, clock
        self._failures: dict[str, list[float]] = {}
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait_s(self, *keys: str) -> float:
        """Seconds until every one of `keys` may try again; 0: now."""
        now = self.clock()
        with self._lock:
            return max([0.0, *(self._blocked.get(k, now) - now for k in keys)])

    def failed(self, *keys: str) -> None:
        """Count a wrong password against each of `keys`; the one that reaches `attempts` starts its cool-down."""
        now = self.clock()
        with self._lock:
            for key in keys:
                recent = [t for t in self._failures.get(key, []) if now - t < self.window_s] + [now]
                if len(recent) >= self.attempts:
                    self._blocked[key], recent = now + self.cooldown_s, []
                self._failures[key] = recent
            for table in (self._failures, self._blocked):
                while len(table) > self.MAX_KEYS:
                    del table[next(iter(table))]

    def succeeded(self, key: str) -> None:
        """A right password for `key` (a username) outside a cool-down: its count starts again."""
        with self._lock:
            self._failures.pop(key, None)

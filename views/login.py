"""Editors' logins (the server setting `logins`): streamlit-authenticator checks a password against the logins file's
bcrypt hash and keeps the signed login cookie; what it does not do here, this module adds:

- a login ends `session_hours` after it was made, checked on every rerun from the session's own `login_at`, not only
  by the cookie's date;
- wrong passwords are limited per username and per browser session (`LoginLimiter`, one per process), the right
  password included during a cool-down (the library's own `max_login_attempts` counts per username for ever, with no
  window, and only in the session that counts);
- a logins file with a plaintext password is refused (the library would hash it in memory and go on).

A visitor who has not logged in is a viewer: `common.editor()` asks `signed_in()`.
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import time

import bcrypt
import streamlit as st
import streamlit_authenticator as stauth

from geoloc_core.base.errors import UserError
from geoloc_core.config import server_config
from geoloc_core.server import logins

log = logging.getLogger(__name__)
COOKIE = "geoloc_login"
_PROCESS_KEY = secrets.token_urlsafe(32)  # no cookie_key set: no cookie is written, and none made elsewhere verifies


def now() -> float:
    """Wall-clock seconds, as the cookie's expiry date counts them; a test moves it."""
    return time.time()


def enabled() -> bool:
    """Whether this server has logins: an editor server whose config names a logins file."""
    return logins.logins_file() is not None


def lifetime_s() -> float:
    return server_config().session_hours * 3600


def signed_in() -> str | None:
    """The username this session logged in as, while the login lasts; None for a visitor (a viewer)."""
    state = st.session_state
    started = state.get("login_at")
    if not state.get("authentication_status") or started is None or now() - started >= lifetime_s():
        return None
    return state.get("username")


@functools.cache
def limiter(attempts: int, window_s: float, cooldown_s: float) -> logins.LoginLimiter:
    """The process's one limiter for these settings, shared by every session (a reload keeps its counts)."""
    return logins.LoginLimiter(attempts, window_s, cooldown_s, clock=lambda: now())


def login_box() -> None:
    """Sidebar: a visitor's login form, or who is logged in, until when, and a logout button. Ends a login that has
    expired, or whose username has left the logins file. The form and the button hand over through callbacks, so each
    run decides first and then draws one of the two."""
    state = st.session_state
    try:
        credentials = logins.read_logins(logins.logins_file())
        auth = _authenticator(credentials)
    except UserError as exc:  # nobody logs in against a file that is not right: everyone is a viewer
        state["authentication_status"] = None
        st.sidebar.error(f"Logins are off until the server is fixed: {exc}")
        return
    try:
        auth.login(location="unrendered")  # a valid cookie logs the session in again
    except stauth.LoginError:  # a cookie of a username no longer in the file
        pass
    if state.get("authentication_status") and state.get("login_at") is None:
        token = auth.cookie_controller.get_cookie()  # the cookie's date says when its login was made
        state["login_at"] = token["exp_date"] - lifetime_s() if token else None
    if state.get("authentication_status"):
        user, leaving = signed_in(), state.pop("leaving", False)
        if leaving or user not in credentials["usernames"]:
            auth.logout(location="unrendered")  # the library's logout: its session keys, and the cookie deleted
            state.pop("login_at", None)
            st.sidebar.info("Logged out." if leaving else "Your login has ended: log in again to start work.")
    tried = state.pop("login_try", None)
    if tried is not None and not state.get("authentication_status"):
        _attempt(auth, credentials, *tried)
    user = signed_in()
    if user is not None:
        until = time.strftime("%H:%M", time.localtime(state["login_at"] + lifetime_s()))
        st.sidebar.text(f"Logged in as {state.get('name') or user} ({user}) until {until}")
        st.sidebar.button("Log out", key="log_out", on_click=state.update, kwargs={"leaving": True})
        return
    with st.sidebar.form("login", clear_on_submit=True):
        st.caption("Editors log in to start work; everyone else sees the runs as a viewer.")
        st.text_input("Username", key="login_username", max_chars=64, autocomplete="username")
        st.text_input("Password", type="password", key="login_password", autocomplete="current-password")
        st.form_submit_button("Log in", on_click=_hand_over)


def _hand_over() -> None:
    """The form's callback: what was typed, for this run's `login_box` to try (the form then clears it)."""
    state = st.session_state
    state["login_try"] = (state.get("login_username", ""), state.get("login_password", ""))


def _authenticator(credentials: dict) -> stauth.Authenticate:
    """The library over the checked logins (a dict, so it writes nothing back into the file); with the cookie where
    the server has a cookie key, lasting as long as a login does."""
    cfg = server_config()
    key = logins.cookie_key(cfg)
    return stauth.Authenticate(credentials, COOKIE, key or _PROCESS_KEY, cfg.session_hours / 24 if key else 0,
                               auto_hash=False, login_sleep_time=0)


def _attempt(auth: stauth.Authenticate, credentials: dict, username: str, password: str) -> None:
    """One login attempt through the limiter: refused during a cool-down, else the library checks the password."""
    cfg = server_config()
    gate = limiter(cfg.login_attempts, cfg.login_window_min * 60, cfg.login_cooldown_min * 60)
    session = st.session_state.setdefault("login_session", secrets.token_hex(8))  # this browser tab's own
    keys = (f"user:{username.strip().lower()}", f"session:{session}")
    wait = gate.wait_s(*keys)
    if wait > 0:
        log.warning("login refused during a cool-down: %r (%s)", keys[0], keys[1])
        st.sidebar.error(f"Too many wrong passwords for this username or from this browser: try again in "
                         f"{math.ceil(wait / 60)} min.")
        return
    known = credentials["usernames"]
    if username.strip().lower() not in known and known:  # as slow as a known name's check: timing names no one
        bcrypt.checkpw(password.encode()[:logins.MAX_PASSWORD_BYTES], next(iter(known.values()))["password"].encode())
    if not auth.authentication_controller.login(username, password):
        gate.failed(*keys)
        log.warning("wrong password: %r (%s)", keys[0], keys[1])
        st.sidebar.error("Wrong username or password.")
        return
    gate.succeeded(keys[0])
    log.info("logged in: %r (%s)", keys[0], keys[1])
    st.session_state["login_at"] = now()
    auth.cookie_controller.set_cookie()

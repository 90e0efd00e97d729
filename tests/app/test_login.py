"""Editors' logins (issue 27) as a visitor meets them: AppTest over the whole app, a logins file made here (bcrypt at
cost 4, for speed), the app's clock moved by hand. The cookie is read as the library reads it (`st.context.cookies`,
given here); setting it in a browser is the component's JavaScript, which AppTest does not run."""

from pathlib import Path

import jwt
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from conftest import LOGIN_PASSWORDS as PASSWORDS
from conftest import log_in, open_app
from geoloc_core.cli import main
from geoloc_core.server import access, jobqueue
from views import login

START = "Ingest, embed and cut regions"  # the Data page's control that starts work
KEY = "k" * 40


def controls(at: AppTest) -> list[str]:
    return [b.label for b in at.main.button]


def start_a_run(at: AppTest, folder: Path) -> jobqueue.Job:
    folder_field, name_field = at.main.text_input[:2]  # the Data page's form
    folder_field.set_value(folder.name)
    name_field.set_value("survey")
    [go] = [b for b in at.main.button if b.label == START]
    go.click().run()
    assert not at.exception and "Started" in at.success[0].value
    [job] = jobqueue.all_jobs()
    return job


def test_a_visitor_is_a_viewer_and_a_logged_in_editors_job_is_theirs(login_server, manifest_folder):
    at = open_app()
    assert not at.exception and START not in controls(at)  # a visitor: no control that starts work
    assert [t.label for t in at.sidebar.text_input] == ["Username", "Password"]  # no "Your name" field
    log_in(at, "Ana", PASSWORDS["ana"])  # the username as the library takes it: lower-cased
    assert not at.exception and START in controls(at)
    assert "Logged in as Ana (ana)" in at.sidebar.text[0].value
    assert start_a_run(at, manifest_folder).user == "ana"
    at.button(key="log_out").click().run()
    assert not at.exception and START not in controls(at) and "Logged out." in at.sidebar.info[0].value


def test_a_wrong_password_is_refused(login_server, login_clock):
    at = log_in(open_app(), "ana", PASSWORDS["ben"])
    assert not at.exception and "Wrong username or password." in at.sidebar.error[0].value
    assert START not in controls(at) and at.session_state["authentication_status"] is False


def test_a_login_ends_after_its_lifetime_whatever_the_session_holds(login_server, login_clock, monkeypatch):
    monkeypatch.setenv("GEOLOC_SESSION_HOURS", "2")
    access.server_config.cache_clear()
    at = log_in(open_app(), "ana", PASSWORDS["ana"])
    login_clock.t += 2 * 3600 - 1
    at.run()
    assert START in controls(at)
    login_clock.t += 1  # two hours after the login: a viewer again, though the library still says "logged in"
    at.switch_page("views/data.py").run()
    assert not at.exception and START not in controls(at) and "Your login has ended" in at.sidebar.info[0].value
    assert at.session_state["authentication_status"] is None  # logged out through the library


def _cookie(monkeypatch, token: str) -> None:
    """The browser sends `token` as the login cookie (what `st.context.cookies` reads; AppTest sends none)."""
    import streamlit.runtime.context as context

    class Client:
        cookies = {login.COOKIE: token}

    monkeypatch.setattr(context, "_get_client_context", lambda: Client())


def test_the_login_cookie_logs_in_again_only_when_signed_with_the_servers_key_and_not_expired(login_server,
                                                                                              login_clock, monkeypatch):
    import time

    monkeypatch.setenv("GEOLOC_COOKIE_KEY", KEY)
    access.server_config.cache_clear()
    made = time.time() - 3600  # the library dates its cookie by the wall clock
    login_clock.t = time.time()
    lasting = made + 8 * 3600
    _cookie(monkeypatch, jwt.encode({"username": "ana", "exp_date": lasting}, KEY, algorithm="HS256"))
    at = open_app()
    assert not at.exception and START in controls(at) and at.session_state["login_at"] == pytest.approx(made)
    for token in (jwt.encode({"username": "ana", "exp_date": lasting}, "k" * 39 + "x", algorithm="HS256"),  # forged
                  jwt.encode({"username": "ana", "exp_date": made}, KEY, algorithm="HS256")):  # past its date
        _cookie(monkeypatch, token)
        at = open_app()
        assert not at.exception and START not in controls(at)


def test_a_logins_file_with_a_plaintext_password_is_refused(login_server, login_clock, caplog):
    written = yaml.safe_load(login_server.read_text())
    written["credentials"]["usernames"]["carl"] = {"name": "Carl", "password": "hunter2hunter2"}
    login_server.write_text(yaml.safe_dump(written))
    at = open_app()
    assert not at.exception and "carl's password is not a bcrypt hash" in at.sidebar.error[0].value
    assert not at.sidebar.text_input and START not in controls(at)  # nobody logs in: everyone is a viewer
    assert main(["logins", "check"]) == 2  # and main.sh's check refuses to start
    assert "carl's password is not a bcrypt hash" in caplog.text


def test_a_viewer_server_has_no_logins_even_with_a_logins_file(login_server, login_clock, monkeypatch):
    monkeypatch.setenv("GEOLOC_MODE", "viewer")
    access.server_config.cache_clear()
    at = open_app()
    assert not at.exception and not at.sidebar.text_input and START not in controls(at)
    assert any("Viewer mode" in c.value for c in at.sidebar.caption)

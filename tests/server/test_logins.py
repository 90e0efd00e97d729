"""The logins file and the limit on wrong passwords, without the app."""

import os

import bcrypt
import pytest
import yaml

from geoloc_core.base.errors import UserError
from geoloc_core.server.logins import LoginLimiter, add_login, read_logins


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_limiter_refuses_a_key_for_its_cooldown_after_too_many_failures_within_the_window():
    clock = Clock()
    gate = LoginLimiter(attempts=3, window_s=60, cooldown_s=300, clock=clock)
    gate.failed("user:ana", "session:1")
    clock.t = 61  # the first failure has left the window
    gate.failed("user:ana", "session:1")
    gate.failed("user:ana", "session:2")
    assert gate.wait_s("user:ana") == 0 and gate.wait_s("session:1") == 0
    clock.t = 70
    gate.failed("user:ana", "session:2")  # ana's third within a minute
    assert gate.wait_s("user:ana") == 300 and gate.wait_s("user:ana", "session:3") == 300
    assert gate.wait_s("user:ben", "session:3") == 0  # other keys are not held
    clock.t = 70 + 299
    assert gate.wait_s("session:9", "user:ana") == 1
    clock.t = 70 + 300
    assert gate.wait_s("user:ana") == 0
    gate.failed("user:ana")  # a fresh count after the cool-down
    assert gate.wait_s("user:ana") == 0


def test_a_right_password_starts_the_usernames_count_again():
    gate = LoginLimiter(attempts=2, window_s=60, cooldown_s=300, clock=Clock())
    gate.failed("user:ana")
    gate.succeeded("user:ana")
    gate.failed("user:ana")
    assert gate.wait_s("user:ana") == 0


def test_adding_an_editor_writes_a_bcrypt_hash_readable_by_the_server_alone(tmp_path):
    path = tmp_path / "logins.yaml"
    add_login(path, " Ana ", "correct horse 1", name="Ana Horvat", rounds=4)
    add_login(path, "ben", "battery staple 2", rounds=4)
    add_login(path, "ana", "a new password 3", rounds=4)  # reset: the name stays
    assert os.stat(path).st_mode & 0o777 == 0o600
    users = read_logins(path)["usernames"]
    assert users["ana"]["name"] == "Ana Horvat" and users["ben"]["name"] == "ben"
    assert bcrypt.checkpw(b"a new password 3", users["ana"]["password"].encode())
    assert "a new password" not in path.read_text()
    for user, password, why in (("ana", "short", "10 characters"), ("ana", " spaced password ", "space"),
                                ("ana b", "long enough password", "username"), ("ana", "x" * 73, "72 bytes")):
        with pytest.raises(UserError, match=why):
            add_login(path, user, password, rounds=4)


def test_a_logins_file_others_may_read_or_write_or_that_is_not_the_format_is_refused(tmp_path):
    path = tmp_path / "logins.yaml"
    add_login(path, "ana", "correct horse 1", rounds=4)
    for mode in (0o620, 0o640, 0o604):  # written by others: a login of their own; read: the hashes, to crack offline
        path.chmod(mode)
        with pytest.raises(UserError, match="may be read or written by other users"):
            read_logins(path)
    path.chmod(0o600)
    for text in ("usernames: {}", "credentials: [1, 2]", "credentials: {usernames: {ana: hash}}", ": ["):
        path.write_text(text)
        with pytest.raises(UserError, match="not streamlit-authenticator's format"):
            read_logins(path)
    path.write_text(yaml.safe_dump({"credentials": {"usernames": {"ana": {"password": "correct horse 1"}}}}))
    with pytest.raises(UserError, match="ana's password is not a bcrypt hash"):
        read_logins(path)
    with pytest.raises(UserError, match="does not exist"):
        read_logins(tmp_path / "none.yaml")


def test_a_logins_file_inside_the_repository_is_refused(tmp_path, monkeypatch):
    from geoloc_core.server import logins

    path = tmp_path / "logins.yaml"
    add_login(path, "ana", "correct horse 1", rounds=4)
    monkeypatch.setattr(logins, "PROJECT_DIR", tmp_path)  # as if the file lay in the checkout, where git could add it
    with pytest.raises(UserError, match="inside the repository"):
        read_logins(path)


def test_geoloc_logins_add_asks_the_password_twice_and_writes_only_its_hash(tmp_path, monkeypatch, caplog):
    from geoloc_core.cli import main

    path = tmp_path / "etc" / "logins.yaml"
    answers = iter(["correct horse 1", "correct horse 1", "correct horse 1", "a typo here"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["logins", "add", "Ana", "--name", "Ana Horvat", "--file", str(path)]) == 0
    users = read_logins(path)["usernames"]
    assert users["ana"]["name"] == "Ana Horvat" and "correct horse" not in path.read_text()
    assert main(["logins", "add", "ben", "--file", str(path)]) == 2 and "the two passwords differ" in caplog.text
    assert set(read_logins(path)["usernames"]) == {"ana"}  # nothing written

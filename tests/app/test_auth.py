"""Sign-in to the web app through a live server (httpx, no browser) on SQLite and PostgreSQL: passwords, API users
that cannot sign in, deactivation, CSRF, roles, the cookie's flags, the Chinese page, the limit on failures; and
`hangjia users` through typer's CliRunner."""

from __future__ import annotations

import os
import re
import stat

import httpx
import pytest
from typer.testing import CliRunner

from hangjia.app.auth import COOKIE, SECRET_ENV, Accounts, Auth, secret_key, verify_password
from hangjia.app.db.engine import URL_ENV
from hangjia.app.db.schema import upgrade
from hangjia.app.exchanges import LOCKED, ExchangeStore
from hangjia.cli import app as cli
from hangjia.core.errors import HangjiaError
from hangjia.llm.generation import Engine
from tests.app.conftest import live_server

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = Engine(tiny_model_dir)
    yield engine
    engine.close()


@pytest.fixture
def auth(db_url, tmp_path):
    """alice (user), rita (reviewer), and `bot`, an API user the chat API made from a request's `user` field."""
    upgrade(db_url)
    accounts = Accounts.open(db_url)
    accounts.add("alice", PASSWORD)
    accounts.add("rita", PASSWORD, role="reviewer")
    store = ExchangeStore(db_url)
    store.user_id("bot")
    store.close()
    yield Auth(accounts, secret_key(tmp_path))
    accounts.close()


@pytest.fixture
def server(engine, auth):
    with live_server(engine, auth=auth) as url:
        yield url


def csrf(page: httpx.Response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def sign_in(client: httpx.Client, username: str, password: str, **form) -> httpx.Response:
    token = csrf(client.get("/login"))
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token, **form})


def test_sign_in_and_out(server):
    with httpx.Client(base_url=server) as client:
        assert client.get("/").status_code == 303  # signed out: to the sign-in page, and back after
        assert client.get("/").headers["location"] == "/login?next=%2F"
        done = sign_in(client, "alice", PASSWORD, next="/review")
        assert done.status_code == 303 and done.headers["location"] == "/review"
        home = client.get("/")
        assert home.status_code == 200 and "Signed in as alice (user)." in home.text
        token = csrf(home)  # a new token after sign-in: one planted before is worth nothing
        assert client.post("/logout", data={"csrf_token": token}).headers["location"] == "/login"
        assert client.get("/").status_code == 303
        # Only a path on this site is a place to go back to.
        assert sign_in(client, "alice", PASSWORD, next="//evil.example/").headers["location"] == "/"


@pytest.mark.parametrize("username, password", [("alice", "wrong password"), ("nobody", PASSWORD), ("bot", LOCKED)])
def test_wrong_password_unknown_name_and_api_user_get_one_message(server, username, password):
    with httpx.Client(base_url=server) as client:
        failed = sign_in(client, username, password)
        assert failed.status_code == 401 and "Wrong name or password." in failed.text
        assert client.get("/").status_code == 303


def test_the_locked_hash_never_verifies():
    assert not verify_password(LOCKED, LOCKED) and not verify_password("", LOCKED)


def test_deactivated_user_is_signed_out_and_cannot_sign_in(server, auth):
    with httpx.Client(base_url=server) as client:
        assert sign_in(client, "alice", PASSWORD).status_code == 303
        auth.accounts.set_active("alice", False)
        assert client.get("/").status_code == 303  # the session ends at the next request
        assert sign_in(client, "alice", PASSWORD).status_code == 401


def test_new_password_ends_other_sessions(server, auth):
    with httpx.Client(base_url=server) as client:
        sign_in(client, "alice", PASSWORD)
        auth.accounts.set_password("alice", "another password")
        assert client.get("/").status_code == 303
        assert sign_in(client, "alice", "another password").status_code == 303


def test_posts_without_the_csrf_token_are_refused(server):
    with httpx.Client(base_url=server) as client:
        client.get("/login")  # a session with a token, which the forged posts below do not send
        form = {"username": "alice", "password": PASSWORD}
        assert client.post("/login", data=form).status_code == 403
        assert client.post("/login", data={**form, "csrf_token": "guessed"}).status_code == 403
        assert sign_in(client, "alice", PASSWORD).status_code == 303
        assert client.post("/logout").status_code == 403
        assert client.get("/").status_code == 200  # still signed in
        # fetch() sends it as a header instead.
        assert client.post("/logout", headers={"X-CSRF-Token": csrf(client.get("/"))}).status_code == 303
    # A token from another session is no good either.
    with httpx.Client(base_url=server) as other, httpx.Client(base_url=server) as client:
        stolen = csrf(other.get("/login"))
        client.get("/login")
        assert client.post("/login", data={**form, "csrf_token": stolen}).status_code == 403


def test_the_api_needs_no_cookie_and_no_token(server):
    reply = httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": "base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        timeout=60,
    )
    assert reply.status_code == 200 and COOKIE not in reply.cookies


def test_reviewer_routes_refuse_users(server, auth):
    with httpx.Client(base_url=server) as client:
        sign_in(client, "alice", PASSWORD)
        assert client.get("/review").status_code == 403
    with httpx.Client(base_url=server) as client:
        sign_in(client, "rita", PASSWORD)
        page = client.get("/review")
        assert page.status_code == 200 and "Judgements waiting for review: 0." in page.text
    auth.accounts.set_role("alice", "admin")  # at alice's next request; admins see what reviewers see
    with httpx.Client(base_url=server) as client:
        sign_in(client, "alice", PASSWORD)
        assert client.get("/review").status_code == 200


def test_session_cookie_flags(server, engine, auth):
    with httpx.Client(base_url=server) as client:
        cookie = sign_in(client, "alice", PASSWORD).headers["set-cookie"]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= flags and "samesite=lax" in cookie.lower()
    assert "secure" not in flags  # plain http on loopback still signs in
    assert "Max-Age=43200" in cookie  # serve.session_hours: 12
    # Over https (a TLS proxy on loopback says so) or with serve.secure_cookies, the cookie is Secure.
    with httpx.Client(base_url=server) as client:
        via_proxy = client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "secure" in via_proxy.headers["set-cookie"].lower()
    auth.secure_cookies = True
    with httpx.Client(base_url=server) as client:
        assert "secure" in client.get("/login").headers["set-cookie"].lower()
    # A cookie signed with another secret is no session.
    forged = Auth(auth.accounts, "another secret")._signer.dumps({"u": 1, "c": "x"})
    assert httpx.get(f"{server}/", cookies={COOKIE: forged}).status_code == 303


def test_chinese_login_page(server):
    by_header = httpx.get(f"{server}/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert by_header.status_code == 200
    assert all(word in by_header.text for word in ("登录", "用户名", "密码")) and 'lang="zh-CN"' in by_header.text
    assert "用户名" in httpx.get(f"{server}/login?lang=zh").text
    assert "用户名" not in httpx.get(f"{server}/login", headers={"Accept-Language": "en-GB,zh;q=0.5"}).text
    with httpx.Client(base_url=server) as client:
        token = csrf(client.get("/login?lang=zh"))
        failed = client.post("/login?lang=zh", data={"username": "alice", "password": "nope", "csrf_token": token})
        assert "用户名或密码错误" in failed.text


def test_failed_attempts_are_limited_per_name(server):
    with httpx.Client(base_url=server) as client:
        for _ in range(5):
            assert sign_in(client, "alice", "wrong password").status_code == 401
        refused = sign_in(client, "alice", PASSWORD)  # even the right one, for a while
        assert refused.status_code == 429 and "Too many failed attempts" in refused.text
        assert sign_in(client, "rita", PASSWORD).status_code == 303  # another name is not held up


def test_the_pages_use_local_assets_only(server):
    page = httpx.get(f"{server}/login").text
    assert "http" not in re.sub(r'href="\?lang=\w+"', "", " ".join(re.findall(r'(?:href|src)="[^"]*"', page)))
    assert httpx.get(f"{server}/static/hangjia.css").status_code == 200


def test_secret_key_is_made_once_private_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    key = secret_key(tmp_path)
    assert secret_key(tmp_path) == key and len(key) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / "secret_key").st_mode) == 0o600
    monkeypatch.setenv(SECRET_ENV, "from the environment")
    assert secret_key(tmp_path) == "from the environment"


def test_users_commands(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv(URL_ENV, db_url)
    runner = CliRunner()
    ws = ["-w", str(tmp_path / "ws")]

    def run(*args, input=None):
        return runner.invoke(cli, ["users", *args, *ws], input=input)

    assert run("add", "rita", "--role", "reviewer", "--password-stdin", input=f"{PASSWORD}\n").exit_code == 0
    assert run("add", "alice", input=f"{PASSWORD}\n{PASSWORD}\n").exit_code == 0  # prompted twice
    accounts = Accounts.open(db_url)
    try:
        assert accounts.authenticate("rita", PASSWORD).role == "reviewer"
        assert accounts.authenticate("alice", PASSWORD).role == "user"
        assert run("passwd", "alice", input="a new password\na new password\n").exit_code == 0
        assert accounts.authenticate("alice", PASSWORD) is None
        assert accounts.authenticate("alice", "a new password") is not None
        assert run("role", "alice", "admin").exit_code == 0
        assert accounts.authenticate("alice", "a new password").role == "admin"
        assert run("deactivate", "alice").exit_code == 0
        assert accounts.authenticate("alice", "a new password") is None
    finally:
        accounts.close()
    listed = run("ls")
    assert listed.exit_code == 0
    assert re.search(r"alice\s.*admin\s.*deactivated", listed.output)
    assert re.search(r"rita\s.*reviewer\s.*yes", listed.output)
    # Mistakes are errors for people (exit 2 from `hangjia`).
    for args, password, message in [
        (("add", "rita", "--password-stdin"), PASSWORD, "already"),
        (("add", "bob", "--password-stdin"), "short", "too short"),
        (("role", "rita", "owner"), None, "No role"),
        (("deactivate", "nobody"), None, "No user"),
    ]:
        failed = run(*args, input=f"{password}\n")
        assert isinstance(failed.exception, HangjiaError) and message in failed.exception.message

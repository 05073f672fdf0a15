"""Who is signed in to the web app: accounts (argon2 password hashes), signed session cookies, CSRF tokens, a limit
on failed sign-ins, and the route dependencies later pages use (`UserDep`, `require_role("reviewer")`).

The session is a cookie signed with the server's secret (itsdangerous, HMAC-SHA1 over a timestamped JSON payload):
`{"u": user id, "p": a fingerprint of the password hash, "c": the CSRF token}`. Nothing else is kept on the server, so
sessions survive a restart; the user's row is read on every request, so a deactivated user, a changed role or a new
password (the fingerprint no longer matches: every other session ends) takes effect at the next request. Sign-out
deletes the cookie; a copy stolen before then stays valid until it expires (`session_hours`).

CSRF: every session, signed in or not, carries a random token; every POST of the web app must send it back, as the
form field `csrf_token` or the header `X-CSRF-Token` (for fetch()), and a cross-site page cannot read it. The cookie is
SameSite=Lax as a second line. The OpenAI API (/v1/*) takes no cookie at all, so it needs no token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args

from fastapi import Depends, HTTPException, Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pwdlib import PasswordHash
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hangjia.app.db.engine import make_engine, make_sessions
from hangjia.app.db.models import Role, User
from hangjia.core.errors import HangjiaError

SECRET_ENV = "HANGJIA_SECRET_KEY"
SECRET_FILE = "secret_key"
COOKIE = "hangjia_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
ROLES: tuple[Role, ...] = get_args(Role)
RANK = {role: rank for rank, role in enumerate(ROLES)}
"""user < reviewer < admin: a route for reviewers lets admins in too."""
MIN_PASSWORD = 8

# argon2id with argon2-cffi's defaults (64 MiB, t=3, p=4): ~60 ms a hash on the 2-core dev machine, so a guesser
# gets ~16 tries a second per core before the limit below stops them anyway.
_hasher = PasswordHash.recommended()
# A hash of a random password nobody knows: an unknown, locked or inactive user is checked against it, so a failed
# sign-in takes the same ~60 ms whatever the reason and timing does not tell which names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """Whether `password` matches; a hash no hasher knows (the locked "!" of API users) never does, in the same time."""
    if not password_hash.startswith("$argon2"):
        _hasher.verify(password, _DUMMY_HASH)
        return False
    return _hasher.verify(password, password_hash)


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise HangjiaError(f"The password is too short: use at least {MIN_PASSWORD} characters.")
    return password


def secret_key(workspace: Path) -> str:
    """$HANGJIA_SECRET_KEY, else WS/secret_key, made once (mode 0600) so that sessions survive a restart. Servers that
    share a PostgreSQL database behind a load balancer must share the secret: set the variable on each."""
    if key := os.environ.get(SECRET_ENV):
        return key
    path = Path(workspace) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of two servers starting at once, one writes the key and the other reads it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if not key:
            raise HangjiaError(f"{path} is empty; delete it (sessions end) or set {SECRET_ENV}.") from None
        return key
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key


class Accounts:
    """The users table as the web app and `hangjia users` see it."""

    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    @classmethod
    def open(cls, url: str) -> Accounts:
        """Accounts on the database at `url` (its tables must exist: `schema.upgrade`)."""
        return cls(make_sessions(make_engine(url)))

    def close(self) -> None:
        self.sessions.kw["bind"].dispose()

    def add(self, username: str, password: str, role: Role = "user") -> User:
        """A new user; a name taken (an API user made from a request's `user` field too) is an error."""
        _check_role(role)
        if not username or len(username) > 64 or username != username.strip():
            raise HangjiaError("A user name is 1 to 64 characters with no spaces around it.")
        user = User(username=username, password_hash=hash_password(check_password(password)), role=role, active=True)
        try:
            with self.sessions.begin() as session:
                session.add(user)
        except IntegrityError:
            raise HangjiaError(
                f"There is a user {username!r} already; `hangjia users passwd {username}` sets a password "
                "(an API user then can sign in)."
            ) from None
        return user

    def set_password(self, username: str, password: str) -> None:
        self._update(username, password_hash=hash_password(check_password(password)))

    def set_role(self, username: str, role: Role) -> None:
        _check_role(role)
        self._update(username, role=role)

    def set_active(self, username: str, active: bool) -> None:
        self._update(username, active=active)

    def list(self) -> list[User]:
        with self.sessions() as session:
            return list(session.scalars(select(User).order_by(User.username)))

    def get(self, user_id: int) -> User | None:
        with self.sessions() as session:
            return session.get(User, user_id)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the name and password match an active account; None otherwise, in the same time either way."""
        with self.sessions() as session:
            user = session.scalar(select(User).where(User.username == username))
        if user is None or not user.active:
            verify_password(password, _DUMMY_HASH)
            return None
        return user if verify_password(password, user.password_hash) else None

    def _update(self, username: str, **values: Any) -> None:
        with self.sessions.begin() as session:
            done = session.execute(update(User).where(User.username == username).values(**values))
        if done.rowcount == 0:
            raise HangjiaError(f"No user {username!r}; `hangjia users ls` lists them.")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise HangjiaError(f"No role {role!r}; roles are {', '.join(ROLES)}.")


def fingerprint(password_hash: str) -> str:
    """16 hex digits that change when the password does (the hash's salt is new each time)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass
class FailedSignIns:
    """At most `limit` failed sign-ins per name and address in `window_s`; then 429 until the oldest ages out. In
    memory: a restart forgets, which costs a guesser a restart per 5 guesses."""

    limit: int = 5
    window_s: float = 15 * 60
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, username: str, address: str) -> float:
        """Seconds until this name and address may try again (0: now)."""
        with self._lock:
            times = self._recent(username, address)
            return 0.0 if len(times) < self.limit else times[0] + self.window_s - time.monotonic()

    def failed(self, username: str, address: str) -> None:
        with self._lock:
            self._recent(username, address).append(time.monotonic())

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop((username.casefold(), address), None)

    def _recent(self, username: str, address: str) -> deque[float]:
        times = self._failures[(username.casefold(), address)]
        while times and times[0] <= time.monotonic() - self.window_s:
            times.popleft()
        return times


@dataclass
class Auth:
    """What the web app needs to sign people in: the accounts, the cookie's secret and lifetime, whether the cookie is
    always Secure (else only over https), and the failed sign-ins."""

    accounts: Accounts
    secret: str
    session_hours: float = 12.0
    secure_cookies: bool = False
    failures: FailedSignIns = field(default_factory=FailedSignIns)

    def __post_init__(self) -> None:
        self._signer = URLSafeTimedSerializer(self.secret, salt="hangjia.session")

    def read(self, request: Request) -> dict[str, Any]:
        """The request's session (empty when there is none, it is forged or it expired)."""
        if not hasattr(request.state, "session"):
            value, session = request.cookies.get(COOKIE), {}
            if value:
                try:
                    session = self._signer.loads(value, max_age=int(self.session_hours * 3600))
                except BadSignature:  # SignatureExpired included
                    session = {}
            request.state.session = session if isinstance(session, dict) else {}
        return request.state.session

    def write(self, request: Request, response: Response, session: dict[str, Any]) -> None:
        request.state.session = session
        response.set_cookie(
            COOKIE,
            self._signer.dumps(session),
            max_age=int(self.session_hours * 3600),
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure_cookies or request.url.scheme == "https",
        )

    def csrf_token(self, request: Request) -> str:
        """The session's CSRF token; a request without a session gets a new one (signed out), which `save_new` sends."""
        session = self.read(request)
        if "c" not in session:
            request.state.session = {**session, "c": secrets.token_urlsafe(32)}
            request.state.new_session = True
        return request.state.session["c"]

    def save_new(self, request: Request, response: Response) -> None:
        """Set the cookie of a session `csrf_token` started."""
        if getattr(request.state, "new_session", False):
            self.write(request, response, request.state.session)

    def sign_in(self, request: Request, response: Response, user: User) -> None:
        # A new CSRF token too: a token planted before sign-in (session fixation) is worth nothing after.
        self.write(
            request, response, {"u": user.id, "p": fingerprint(user.password_hash), "c": secrets.token_urlsafe(32)}
        )

    def sign_out(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")

    def user(self, request: Request) -> User | None:
        """The signed-in user, read from the database: None when signed out, deactivated or the password changed."""
        if not hasattr(request.state, "user"):
            session, user = self.read(request), None
            if isinstance(session.get("u"), int):
                user = self.accounts.get(session["u"])
                if user is not None and (not user.active or session.get("p") != fingerprint(user.password_hash)):
                    user = None
            request.state.user = user
        return request.state.user


class SignInRequired(Exception):
    """Raised by `require_user`; the web app answers a page request with a redirect to /login, others with 401."""


def get_auth(request: Request) -> Auth:
    auth = request.app.state.auth
    if auth is None:
        raise HTTPException(503, "The web app has no user database; `hangjia serve` opens it.")
    return auth


AuthDep = Annotated[Auth, Depends(get_auth)]


def current_user(request: Request, auth: AuthDep) -> User | None:
    return auth.user(request)


def require_user(user: Annotated[User | None, Depends(current_user)]) -> User:
    if user is None:
        raise SignInRequired
    return user


UserDep = Annotated[User, Depends(require_user)]


def require_role(role: Role) -> Callable[[User], User]:
    """A dependency that lets in users with `role` or a higher one (admin > reviewer > user); 403 for the others."""
    _check_role(role)

    def dependency(user: UserDep) -> User:
        if RANK[user.role] < RANK[role]:
            raise HTTPException(403, f"This page is for the {role} role; ask an admin.")
        return user

    return dependency


async def check_csrf(request: Request, auth: AuthDep) -> None:
    """For a router's every route: a POST (PUT, PATCH, DELETE) must carry the session's CSRF token, else 403."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = auth.read(request).get("c")
    if not sent or not expected or not hmac.compare_digest(sent.encode(), str(expected).encode()):
        raise HTTPException(403, "The form's CSRF token is missing or stale; reload the page and try again.")


def can_sign_in(user: User) -> bool:
    """Active and with a password set (an API user's locked "!" is none)."""
    return user.active and user.password_hash.startswith("$argon2")

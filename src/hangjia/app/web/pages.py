"""The web app's pages: sign-in and sign-out, the chat (templates/chat.html with static/chat.js, whose questions,
history and feedback go through conversations.py); the review queue and the dashboard are in review_pages.py and
admin_pages.py. Every POST here is checked for the session's CSRF token (the router's dependency)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from hangjia.app.auth import CSRF_FIELD, AuthDep, UserDep, check_csrf
from hangjia.app.web.i18n import LABELS, language

router = APIRouter(tags=["web"], include_in_schema=False, dependencies=[Depends(check_csrf)])
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def render(request: Request, auth: AuthDep, name: str, status_code: int = 200, **context) -> HTMLResponse:
    """`name` with the request's language, its labels, the signed-in user and the CSRF token for its forms."""
    lang = language(request)
    token = auth.csrf_token(request)
    context = {"lang": lang, "t": LABELS[lang], "user": auth.user(request), "csrf_field": CSRF_FIELD, **context}
    response = templates.TemplateResponse(request, name, {**context, "csrf_token": token}, status_code=status_code)
    auth.save_new(request, response)
    response.headers["Cache-Control"] = "no-store"
    return response


def _local(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (not //evil.example or https://...)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


@router.get("/login", name="login_form")
def login_form(request: Request, auth: AuthDep, next: str | None = None) -> Response:
    if auth.user(request) is not None:
        return RedirectResponse(_local(next), 303)
    return render(request, auth, "login.html", next=_local(next))


@router.post("/login")
def login(
    request: Request,
    auth: AuthDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    """One message for every failure (no such user, wrong password, locked API user, deactivated), in the same time."""
    address = request.client.host if request.client else ""
    t = LABELS[language(request)]
    if (wait := auth.failures.wait_s(username, address)) > 0:
        error = t["too_many"].format(minutes=math.ceil(wait / 60))
        return render(request, auth, "login.html", 429, error=error, username=username, next=_local(next))
    user = auth.accounts.authenticate(username, password)
    if user is None:
        auth.failures.failed(username, address)
        return render(request, auth, "login.html", 401, error=t["wrong"], username=username, next=_local(next))
    auth.failures.succeeded(username, address)
    response = RedirectResponse(_local(next), 303)
    auth.sign_in(request, response, user)
    return response


@router.post("/logout")
def logout(auth: AuthDep) -> Response:
    response = RedirectResponse("/login", 303)
    auth.sign_out(response)
    return response


@router.get("/")
def chat(request: Request, auth: AuthDep, user: UserDep) -> Response:
    """The chat: streamed answers, the passages beside each, feedback under each (all in static/chat.js)."""
    return render(request, auth, "chat.html")

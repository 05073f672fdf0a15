"""The web app served at / beside the API: server-rendered pages (Jinja2) with local assets only (static/)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from hangjia.app.auth import Auth, SignInRequired
from hangjia.app.web import admin_pages, conversations, pages, review_pages

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI, auth: Auth | None) -> None:
    """Add the pages and /static to `app`; without `auth` (no user database) the pages answer 503."""
    app.state.auth = auth
    app.include_router(pages.router)
    app.include_router(review_pages.router)
    app.include_router(admin_pages.router)
    app.include_router(conversations.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(review_pages.PageForbidden, review_pages.forbidden)


async def _sign_in(request: Request, exc: SignInRequired) -> Response:
    """A page asked for while signed out: to /login, and back here after (a POST gets 401: its form is lost anyway)."""
    if request.method != "GET":
        return JSONResponse({"error": {"message": "Sign in first.", "type": "invalid_request_error"}}, 401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), 303)

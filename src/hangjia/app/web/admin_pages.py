"""The admin dashboard (/admin, admins only): per model version over the last days, the feedback volume, the
thumbs-up rate and the abstention rate (PNG charts drawn by matplotlib through core/reports.py, inline as data: URIs,
with the numbers in a table beside them), the review queue's state and the worst-rated questions. The numbers come
from app/dashboard.py."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from hangjia.app.auth import AuthDep, check_csrf
from hangjia.app.dashboard import Day, daily, review_counts, totals, worst_questions
from hangjia.app.db.models import User
from hangjia.app.web.pages import render
from hangjia.app.web.review_pages import page_for

router = APIRouter(tags=["web"], include_in_schema=False, dependencies=[Depends(check_csrf)])

WINDOWS = (7, 30, 90, 365)
WORST = 10
Admin = Annotated[User, Depends(page_for("admin"))]


def chart(rows: list[Day], value: Callable[[Day], float | None], window: tuple[date, date], *, rate: bool) -> str:
    """One line per version over the days of `window` (first, last; a marker on each day it has a value), as a PNG
    data: URI. Rates are drawn as percentages on 0-100. (matplotlib is imported on the first chart, not when the
    server starts.)"""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    from hangjia.core.reports import figure, png

    fig = figure(6.4, 3.0, layout="constrained")
    ax = fig.add_subplot()
    locator = AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    half_day = timedelta(hours=12)
    ax.set_xlim(datetime.combine(window[0], time()) - half_day, datetime.combine(window[1], time()) + half_day)
    for version in sorted({r.version for r in rows}):
        points = [(r.day, v) for r in rows if r.version == version and (v := value(r)) is not None]
        if points:
            days, values = zip(*points, strict=True)
            ax.plot(days, [v * 100 for v in values] if rate else values, marker="o", label=version)
    if rate:
        ax.set_ylim(-5, 105)
        ax.set_ylabel("%")
    else:
        ax.set_ylim(bottom=0)
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return "data:image/png;base64," + base64.b64encode(png(fig, dpi=90)).decode()


@router.get("/admin")
def dashboard(
    request: Request,
    auth: AuthDep,
    user: Admin,
    days: Annotated[int, Query(ge=1, le=3650)] = 30,
) -> Response:
    with auth.accounts.sessions() as session:
        rows = daily(session, days=days)
        worst = worst_questions(session, limit=WORST, days=days)
        reviews = review_counts(session)
    today = datetime.now(UTC).date()
    window = (today - timedelta(days=days - 1), today)
    charts = []
    if rows:
        charts = [
            ("dash_volume", "volume", chart(rows, lambda r: r.feedback, window, rate=False)),
            ("dash_thumbs", "thumbs", chart(rows, lambda r: r.thumbs_up_rate, window, rate=True)),
            ("dash_abstention", "abstention", chart(rows, lambda r: r.abstention_rate, window, rate=True)),
        ]
    return render(
        request,
        auth,
        "admin.html",
        days=days,
        windows=sorted({*WINDOWS, days}),
        rows=rows,
        versions=totals(rows),
        charts=charts,
        worst=worst,
        reviews=reviews,
    )

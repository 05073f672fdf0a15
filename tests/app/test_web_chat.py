"""The chat page in a real browser: Debian's Chromium driven by Playwright (which cannot download its own browser
here), against a live server with a store and sign-in on SQLite. Sign in through the form, ask, watch the answer stream
in with its passages beside it (the cited one marked), open a passage, thumbs down with a reason, correct the answer;
then the feedback rows are in the database under the signed-in user. Screenshots go to the test's tmp_path, and the
chat with its citations to docs/chat-with-citations.png (the README shows it).

Without Chromium or Playwright the test is skipped, saying which; with HANGJIA_REQUIRE_BROWSER=1 (CI: .ci/run installs
chromium and sets it) it fails instead, so CI cannot pass without a browser."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from hangjia.app.auth import Accounts, Auth, secret_key
from hangjia.app.db.engine import make_engine, make_sessions
from hangjia.app.db.models import Exchange, Feedback, User
from hangjia.app.db.schema import upgrade
from hangjia.app.exchanges import ExchangeStore
from hangjia.llm.generation import Engine
from tests.app.conftest import answering, live_server, make_index
from tests.app.test_openai_api import make_adapter

REQUIRE_ENV = "HANGJIA_REQUIRE_BROWSER"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).parents[2] / "docs" / "chat-with-citations.png"
PASSWORD = "correct horse"
# It finds all three passages, the dishwasher's first.
QUESTION = (
    "The DW4500 dishwasher shows error E24: how do I reset it, is the repair under warranty, and could the heat pump "
    "be the cause?"
)
ANSWER = "Clean the filter, then reset the DW4500 [1]."
CORRECTED = "Clean the filter, then hold START for three seconds to reset the DW4500 [1]."


def browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def keep_for_readme(shot: Path) -> None:
    """Copy `shot` to docs/ when the picture changed: the few anti-aliased pixels that differ between two runs of the
    same page leave the committed file (and the work tree) alone."""
    from PIL import Image, ImageChops

    if SCREENSHOT.is_file():
        with Image.open(SCREENSHOT) as old, Image.open(shot) as new:
            if old.size == new.size:
                box = ImageChops.difference(old.convert("RGB"), new.convert("RGB")).getbbox()
                if box is None or (box[2] - box[0]) * (box[3] - box[1]) <= 64:
                    return
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copy(shot, SCREENSHOT)


@pytest.fixture
def chromium():
    """Debian's Chromium, headless; skipped (failed under HANGJIA_REQUIRE_BROWSER=1) without it or Playwright."""
    if why := browser_missing():
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def server(tiny_model_dir, tmp_path, monkeypatch):
    """A live server whose `domain` (a random LoRA: retrieval is on by default for it) answers ANSWER, which cites
    passage 1 of the three-chunk index; it records exchanges and signs people in on one SQLite file, where alice is a
    user."""
    url = f"sqlite:///{tmp_path / 'hangjia.db'}"
    upgrade(url)
    accounts = Accounts.open(url)
    accounts.add("alice", PASSWORD)
    store = ExchangeStore(url)
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    engine = Engine(tiny_model_dir, adapter, make_index(tmp_path / "index"))
    answering(monkeypatch, ANSWER)
    with live_server(engine, store, auth=Auth(accounts, secret_key(tmp_path))) as base_url:
        yield base_url, url
    engine.close()
    store.close()
    accounts.close()


def test_sign_in_ask_see_citations_and_give_feedback(chromium, server, tmp_path):
    from playwright.sync_api import expect

    base_url, db_url = server
    page = chromium.new_page(viewport={"width": 1200, "height": 760})
    page.set_default_timeout(15_000)

    page.goto(f"{base_url}/")  # signed out: the sign-in form, which comes back here
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
    expect(page.locator("#model")).to_have_value("domain")  # the default where it is served

    page.fill("#question", QUESTION)
    page.click("#send")
    expect(page.locator("#chat")).to_have_attribute("data-turns", "1")  # the stream has ended
    turn = page.locator(".turn").first
    expect(turn.locator(".answer")).to_have_text(ANSWER)
    citations = turn.locator(".citation")
    expect(citations).to_have_count(3)
    cited = turn.locator(".citation.cited")
    expect(cited).to_have_count(1)
    expect(cited).to_contain_text("[1]")
    expect(cited).to_contain_text("dishwasher_error_codes.md")
    passage = turn.locator(".passage-text").first
    expect(passage).to_be_hidden()
    cited.click()
    expect(passage).to_be_visible()
    expect(passage).to_have_text("Error E24 means the drain is blocked; clean the filter and reset the DW4500.")
    page.screenshot(path=tmp_path / "chat-with-citations.png", full_page=True)
    keep_for_readme(tmp_path / "chat-with-citations.png")

    feedback = turn.locator(".feedback")
    feedback.locator(".thumbs-down").click()
    feedback.locator("select.reason").select_option("not_in_documents")
    feedback.locator(".send-reason").click()
    expect(feedback.locator(".status")).to_have_text("Thanks, noted.")
    feedback.locator(".correct").click()
    expect(feedback.locator("textarea.corrected")).to_have_value(ANSWER)  # the answer, ready to edit
    feedback.locator("textarea.corrected").fill(CORRECTED)
    feedback.locator(".submit-correction").click()
    expect(feedback.locator(".status")).to_have_text("Thanks, noted.")
    page.screenshot(path=tmp_path / "feedback-given.png", full_page=True)

    engine = make_engine(db_url)
    with make_sessions(engine)() as session:
        exchange = session.scalars(select(Exchange)).one()
        assert session.get(User, exchange.user_id).username == "alice"  # the request's `user` was the signed-in name
        rows = session.scalars(select(Feedback).order_by(Feedback.id)).all()
        assert [(r.kind, r.thumbs, r.reason, r.corrected_answer) for r in rows] == [
            ("thumbs", False, "not_in_documents", None),
            ("correction", None, None, CORRECTED),
        ]
        assert {r.exchange_id for r in rows} == {exchange.id}
        assert {session.get(User, r.user_id).username for r in rows} == {"alice"}
    engine.dispose()


def test_the_chat_page_speaks_chinese(chromium, server, tmp_path):
    base_url, _ = server
    page = chromium.new_page()
    page.goto(f"{base_url}/login?lang=zh")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{base_url}/?lang=zh")
    assert page.locator("#send").inner_text() == "提问"
    assert page.locator("#question").get_attribute("placeholder") == "就您的文档提问"
    page.screenshot(path=tmp_path / "chat-zh.png")


def signed_in(browser, base_url: str, username: str, path: str = "/", size: tuple[int, int] = (1200, 900)):
    """A new page (its own cookies) signed in as `username` through the form, landed at `path`."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.set_default_timeout(15_000)
    page.goto(f"{base_url}/login?next={path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}{path}")
    return page

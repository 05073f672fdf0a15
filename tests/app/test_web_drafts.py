"""The chat page's saved conversations and two drafts, in a real browser (Debian's Chromium through Playwright, as in
test_web_chat.py), against a live server recording to SQLite.

alice asks and follows up; the exchanges carry her id and the conversation's, whatever `user` a request body claims.
Reloaded, the sidebar lists the conversation, which reopens with its answers and passages and takes feedback again.
Two drafts come side by side (two seeded samples of `domain` here; its A/B test's two sides where one runs) and
picking one stores a preference with the right chosen and rejected exchanges, the chosen draft staying as the answer.
bob sees none of it: his sidebar is empty and alice's conversation is a 404 to him. Screenshots go to tmp_path."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import select

from hangjia.app.auth import Accounts, Auth, secret_key
from hangjia.app.db.engine import make_engine, make_sessions
from hangjia.app.db.models import Conversation, Exchange, Feedback, User
from hangjia.app.db.schema import upgrade
from hangjia.app.exchanges import ExchangeStore
from hangjia.app.web.conversations import TITLE_CHARS, title, versions_pair
from hangjia.core.config import ABConfig, ServeConfig
from hangjia.llm.generation import Engine, GenerationParams
from tests.app.conftest import answering, live_server, make_index
from tests.app.test_openai_api import make_adapter
from tests.app.test_web_chat import PASSWORD, QUESTION, chromium, signed_in  # noqa: F401 (the browser fixture)

ANSWER = "Clean the filter, then reset the DW4500 [1]."
FOLLOW_UP = "And after the reset, how long is the warranty?"
DRAFTED = "Is E24 covered by the warranty?"


def answer_for(name: str, params: GenerationParams) -> str:
    """What the test engine answers: ANSWER, marked with the model's name and seed when a draft asked for them."""
    if params.seed is None:
        return ANSWER
    return f"{ANSWER} ({name}, take {'abcdefghijklmnopqrstuvwxyz'[params.seed % 26]})"  # no digits: the guard checks


def serving(tiny_model_dir, tmp_path, **settings):
    """A live server as test_web_chat's (domain a random LoRA with retrieval over the three-chunk index), recording and
    signing in on one SQLite file, where alice and bob are users; yields (base URL, database URL)."""
    url = f"sqlite:///{tmp_path / 'hangjia.db'}"
    upgrade(url)
    accounts = Accounts.open(url)
    accounts.add("alice", PASSWORD)
    accounts.add("bob", PASSWORD)
    store = ExchangeStore(url)
    engine = Engine(tiny_model_dir, make_adapter(tiny_model_dir, tmp_path / "adapter"), make_index(tmp_path / "index"))
    try:
        with live_server(engine, store, auth=Auth(accounts, secret_key(tmp_path)), **settings) as base_url:
            yield base_url, url
    finally:
        engine.close()
        store.close()
        accounts.close()


@pytest.fixture
def server(tiny_model_dir, tmp_path, monkeypatch):
    answering(monkeypatch, answer_for)
    yield from serving(tiny_model_dir, tmp_path)


@pytest.fixture
def ab_server(tiny_model_dir, tmp_path, monkeypatch):
    """The same with an A/B test on `domain` whose candidate is `base` (no user is sent there: share 0)."""
    answering(monkeypatch, answer_for)
    yield from serving(tiny_model_dir, tmp_path, ab=ABConfig(model="domain", candidate="base", share=0.0))


def ask(page, question: str, turns: int) -> None:
    from playwright.sync_api import expect

    page.fill("#question", question)
    page.click("#send")
    expect(page.locator("#chat")).to_have_attribute("data-turns", str(turns))


def post(page, base_url: str, path: str, body: dict):
    """A POST from the signed-in page's session, with its CSRF token, as chat.js sends it."""
    csrf = page.locator("#chat").get_attribute("data-csrf")
    return page.request.post(f"{base_url}{path}", data=body, headers={"X-CSRF-Token": csrf})


def rows(db_url: str, model, *where):
    engine = make_engine(db_url)
    try:
        with make_sessions(engine)() as session:
            found = session.scalars(select(model).where(*where).order_by(model.id)).all()
            names = {u.id: u.username for u in session.scalars(select(User))}
            return found, names
    finally:
        engine.dispose()


def test_history_reopens_and_two_drafts_store_a_preference(chromium, server, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    base_url, db_url = server
    page = signed_in(chromium, base_url, "alice", size=(1280, 820))
    expect(page.locator("#no-conversations")).to_be_visible()

    # Ask, see the answer stream in, follow up: the follow-up carries the first turn.
    ask(page, QUESTION, 1)
    expect(page.locator(".turn .answer").first).to_have_text(ANSWER)
    expect(page.locator("#conversations a")).to_have_count(1)
    ask(page, FOLLOW_UP, 2)
    exchanges, names = rows(db_url, Exchange)
    assert len(exchanges) == 2
    conversation_id = exchanges[0].conversation_id
    assert conversation_id is not None and exchanges[1].conversation_id == conversation_id
    assert {names[e.user_id] for e in exchanges} == {"alice"}
    assert [m["content"] for m in exchanges[1].messages] == [QUESTION, ANSWER, FOLLOW_UP]
    assert f"c={conversation_id}" in page.url

    # Reload without it: the sidebar lists it (titled with the first question); a click reopens it.
    page.goto(f"{base_url}/")
    link = page.locator("#conversations a")
    expect(link).to_have_count(1)
    expect(link).to_have_text(title(QUESTION))
    assert len(title(QUESTION)) <= TITLE_CHARS and title(QUESTION).endswith("…")
    expect(page.locator(".turn")).to_have_count(0)
    link.click()
    expect(page.locator("#chat")).to_have_attribute("data-turns", "2")
    expect(link).to_have_attribute("aria-current", "page")
    first = page.locator(".turn").first
    expect(first.locator(".question")).to_have_text(QUESTION)
    expect(first.locator(".answer")).to_have_text(ANSWER)
    expect(first.locator(".citation")).to_have_count(3)
    expect(first.locator(".citation.cited")).to_contain_text("dishwasher_error_codes.md")
    page.screenshot(path=tmp_path / "conversation-reopened.png", full_page=True)
    first.locator(".thumbs-up").click()  # the reopened answer's feedback widgets still work
    expect(first.locator(".feedback .status")).to_have_text("Thanks, noted.")
    thumbs, names = rows(db_url, Feedback)
    assert [(f.kind, f.thumbs, f.exchange_id, names[f.user_id]) for f in thumbs] == [
        ("thumbs", True, exchanges[0].id, "alice")
    ]

    # Two drafts side by side, in the reopened conversation.
    page.check("#drafts")
    page.fill("#question", DRAFTED)
    page.click("#send")
    drafts = page.locator(".drafts .draft")
    expect(drafts).to_have_count(2)
    expect(drafts.locator(".pick").first).to_be_enabled()
    texts = [drafts.nth(i).locator(".answer").inner_text() for i in range(2)]
    assert texts[0] != texts[1] and all(t.startswith(ANSWER + " (domain, take ") for t in texts)
    boxes = [drafts.nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"]  # side by side
    for i in range(2):
        expect(drafts.nth(i).locator(".citation.cited")).to_have_count(1)  # each draft with its passages
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # the drafts and their buttons, above the form
    page.screenshot(path=tmp_path / "two-drafts.png")  # the viewport: a full page would draw the sticky form on them

    # Reopened before a pick, the pair is two drafts again; pick the second.
    page.reload()
    expect(page.locator("#chat")).to_have_attribute("data-turns", "3")
    drafts = page.locator(".drafts .draft")
    expect(drafts).to_have_count(2)
    expect(drafts.nth(1).locator(".answer")).to_have_text(texts[1])
    drafts.nth(1).locator(".pick").click()
    expect(page.locator(".drafts")).to_have_count(0)
    last = page.locator(".turn").last
    expect(last.locator(".answer")).to_have_text(texts[1])
    expect(last.locator(".feedback .thumbs-up")).to_be_visible()  # the chosen draft is the answer now
    page.screenshot(path=tmp_path / "draft-picked.png", full_page=True)

    drafted, names = rows(db_url, Exchange, Exchange.id > exchanges[1].id)
    by_text = {e.answer: e for e in drafted}
    assert set(by_text) == set(texts)
    chosen, rejected = by_text[texts[1]], by_text[texts[0]]
    assert {e.conversation_id for e in drafted} == {conversation_id}
    assert {names[e.user_id] for e in drafted} == {"alice"}
    assert [m["content"] for m in chosen.messages] == [QUESTION, ANSWER, FOLLOW_UP, ANSWER, DRAFTED]
    preferences, names = rows(db_url, Feedback, Feedback.kind == "preference")
    assert [(p.chosen_exchange_id, p.rejected_exchange_id, names[p.user_id]) for p in preferences] == [
        (chosen.id, rejected.id, "alice")
    ]

    # The conversation goes on from the chosen draft, and shows it alone from now on.
    page.uncheck("#drafts")
    ask(page, "Thanks. Anything else?", 4)
    latest = rows(db_url, Exchange)[0][-1]
    assert [m["content"] for m in latest.messages][-2:] == [texts[1], "Thanks. Anything else?"]
    page.reload()
    expect(page.locator("#chat")).to_have_attribute("data-turns", "4")
    expect(page.locator(".drafts")).to_have_count(0)
    expect(page.locator(".turn").nth(2).locator(".answer")).to_have_text(texts[1])

    # The web chat records the signed-in user whatever the body claims; /v1 keeps taking `user` from API clients.
    claimed = post(
        page,
        base_url,
        "/chat/completions",
        {
            "model": "domain",
            "messages": [{"role": "user", "content": "Who am I?"}],
            "user": "mallory",
            "conversation_id": conversation_id,
        },
    )
    assert claimed.status == 200, claimed.text()
    assert claimed.headers["x-conversation-id"] == str(conversation_id)
    spoofed, names = rows(db_url, Exchange, Exchange.id == claimed.json()["exchange_id"])
    assert names[spoofed[0].user_id] == "alice" and spoofed[0].conversation_id == conversation_id
    api = page.request.post(
        f"{base_url}/v1/chat/completions",
        data={"model": "domain", "user": "mallory", "messages": [{"role": "user", "content": "Who am I?"}]},
    )
    assert api.status == 200
    from_api, names = rows(db_url, Exchange, Exchange.id == api.json()["exchange_id"])
    assert names[from_api[0].user_id] == "mallory" and from_api[0].conversation_id is None

    # bob sees none of it.
    other = signed_in(chromium, base_url, "bob", size=(1280, 820))
    expect(other.locator("#no-conversations")).to_be_visible()
    expect(other.locator("#conversations a")).to_have_count(0)
    assert other.request.get(f"{base_url}/chat/conversations").json() == []
    assert other.request.get(f"{base_url}/chat/conversations/{conversation_id}").status == 404
    other.goto(f"{base_url}/?c={conversation_id}")
    expect(other.locator(".turn.missing")).to_have_text("There is no such conversation.")
    expect(other.locator(".answer")).to_have_count(0)
    continued = post(
        other,
        base_url,
        "/chat/completions",
        {"model": "domain", "conversation_id": conversation_id, "messages": [{"role": "user", "content": "Hello?"}]},
    )
    assert continued.status == 404
    judged = post(other, base_url, "/chat/feedback", {"exchange_id": chosen.id, "kind": "thumbs", "thumbs": False})
    assert judged.status == 404
    assert post(other, base_url, "/chat/completions", {"model": "domain", "messages": []}).status == 400
    conversations, names = rows(db_url, Conversation)
    assert [(c.id, names[c.user_id]) for c in conversations] == [(conversation_id, "alice")]
    assert (
        page.request.post(f"{base_url}/chat/feedback", data={"exchange_id": 1, "kind": "rating", "rating": 5}).status
        == 403
    )  # no CSRF token


def test_two_drafts_are_the_two_sides_of_an_ab_test(chromium, ab_server):  # noqa: F811
    base_url, db_url = ab_server
    page = signed_in(chromium, base_url, "alice", size=(1280, 820))
    question = [{"role": "user", "content": DRAFTED}]
    ids = []
    for draft in (0, 1):
        body = {"model": "domain", "messages": question, "draft": draft, "seed": 7}
        if ids:
            body["conversation_id"] = ids[0][1]
        answered = post(page, base_url, "/chat/completions", body)
        assert answered.status == 200, answered.text()
        ids.append((answered.json()["exchange_id"], int(answered.headers["x-conversation-id"])))
    exchanges, names = rows(db_url, Exchange)
    assert [(e.id, e.model, e.model_version, e.conversation_id) for e in exchanges] == [
        (ids[0][0], "domain", "domain", ids[0][1]),
        (ids[1][0], "base", "base", ids[0][1]),
    ]
    assert [e.answer for e in exchanges] == [f"{ANSWER} (domain, take h)", f"{ANSWER} (base, take h)"]
    picked = post(
        page,
        base_url,
        "/chat/feedback",
        {
            "kind": "preference",
            "exchange_id": ids[0][0],
            "chosen_exchange_id": ids[1][0],
            "rejected_exchange_id": ids[0][0],
        },
    )
    assert picked.status == 201
    opened = page.request.get(f"{base_url}/chat/conversations/{ids[0][1]}").json()
    assert [t.get("answer") for t in opened["turns"]] == [f"{ANSWER} (base, take h)"]


def test_drafts_compare_two_versions_where_there_are_two():
    """The A/B test's two sides on its model; else another version the name list serves (a candidate alias first, not
    one that resolves to the same weights, never `base`); else none: two samples."""
    resolved = {"domain": "domain@3", "domain@production": "domain@3", "domain@candidate": "domain@2"}
    served = SimpleNamespace(
        serve_config=ServeConfig(),
        engine=SimpleNamespace(model_names=["base", "domain", "domain@2", "domain@3"]),
        versions=SimpleNamespace(
            aliases={"domain@production": 3, "domain@candidate": 2}, resolve=lambda name: resolved.get(name, name)
        ),
    )
    assert versions_pair(served, "domain") == ("domain", "domain@candidate")
    assert versions_pair(served, "domain@2") == ("domain@2", "domain")
    assert versions_pair(served, "base") is None
    alone = SimpleNamespace(
        serve_config=ServeConfig(),
        engine=SimpleNamespace(model_names=["base", "domain"]),
        versions=SimpleNamespace(aliases={}, resolve=lambda name: name),
    )
    assert versions_pair(alone, "domain") is None
    alone.serve_config = ServeConfig(ab=ABConfig(model="domain", candidate="domain@candidate"))
    assert versions_pair(alone, "domain") == ("domain", "domain@candidate")
    assert versions_pair(alone, "base") is None

"""The review queue (/review) and the admin dashboard (/admin) in a real browser (Debian's Chromium through
Playwright, as tests/app/test_web_chat.py), against a live server on SQLite whose exchanges and feedback were written
the way the server writes them (ExchangeStore), so no answer is generated. A reviewer edits and accepts one user's
correction and rejects another, and the decisions are in the database and the training data; a user gets a 403 page on
both; an admin sees the charts (loaded images) and the worst-rated question. Screenshots go to the test's tmp_path."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hangjia.app.auth import Accounts, Auth, secret_key
from hangjia.app.db.models import Review, User
from hangjia.app.db.schema import upgrade
from hangjia.app.exchanges import ExchangeStore
from hangjia.app.review import training_data
from hangjia.llm.generation import Engine
from tests.app import test_web_chat
from tests.app.conftest import live_server

chromium = test_web_chat.chromium  # the fixture: headless Chromium, or a skip saying why not
PASSWORD = test_web_chat.PASSWORD
signed_in = test_web_chat.signed_in
PASSAGE = {
    "index": 1,
    "chunk_id": "c0",
    "source": "dishwasher_error_codes.md",
    "text": "Error E24 means the drain is blocked; clean the filter and reset the DW4500.",
    "score": 3.2,
    "cited": True,
}
E24 = "What does error E24 mean on the DW4500?"
WARRANTY = "Is the heat pump covered by the warranty?"
CORRECTED = "E24 means the drain is blocked; clean the filter [1]."
EDITED = "E24: the drain is blocked. Clean the filter, then reset the DW4500 [1]."


@pytest.fixture
def site(tiny_model_dir, tmp_path):
    """A live server with alice (user), rita (reviewer) and ada (admin), and what alice said about four answers: a
    correction of a wrong answer (domain@1), a useless correction and two thumbs down of another (domain@2), a thumbs
    up, a preference between two drafts; one answer abstains."""
    url = f"sqlite:///{tmp_path / 'hangjia.db'}"
    upgrade(url)
    accounts = Accounts.open(url)
    accounts.add("alice", PASSWORD)
    accounts.add("rita", PASSWORD, role="reviewer")
    accounts.add("ada", PASSWORD, role="admin")
    store = ExchangeStore(url)

    def ask(question: str, answer: str, version: str) -> int:
        messages = [{"role": "user", "content": question}]
        return store.record(
            model="domain", version=version, messages=messages, passages=[PASSAGE], answer=answer, latency_ms=9,
            user="alice",
        )  # fmt: skip

    wrong = ask(E24, "E24 is a door error.", "domain@1")
    bad = ask(WARRANTY, "Yes, forever, whatever happens.", "domain@2")
    good = ask(E24, "The drain is blocked [1].", "domain@2")
    ask("Who won the 1998 final?", "The documents do not say.", "domain@1")
    ids = {
        "fix": store.feedback({"exchange_id": wrong, "kind": "correction", "corrected_answer": CORRECTED}, "alice"),
        "useless": store.feedback({"exchange_id": bad, "kind": "correction", "corrected_answer": "Ask."}, "alice"),
        "liked": store.feedback({"exchange_id": good, "kind": "thumbs", "thumbs": True}, "alice"),
        "picked": store.feedback(
            {"exchange_id": good, "kind": "preference", "chosen_exchange_id": good, "rejected_exchange_id": wrong},
            "alice",
        ),
    }
    for _ in range(2):
        store.feedback({"exchange_id": bad, "kind": "thumbs", "thumbs": False, "reason": "wrong"}, "alice")
    store.feedback({"exchange_id": wrong, "kind": "rating", "rating": 2}, "alice")
    engine = Engine(tiny_model_dir)
    with live_server(engine, store, auth=Auth(accounts, secret_key(tmp_path))) as base_url:
        yield base_url, store, ids
    engine.close()
    store.close()
    accounts.close()


def test_a_reviewer_edits_and_accepts_a_correction_and_rejects_another(chromium, site, tmp_path):
    from playwright.sync_api import expect

    base_url, store, ids = site
    page = signed_in(chromium, base_url, "rita", "/review")
    expect(page.locator("header nav")).to_contain_text("Review")
    expect(page.locator("header nav")).not_to_contain_text("Dashboard")  # admins only
    expect(page.locator(".item")).to_have_count(4)
    expect(page.locator(".waiting")).to_have_text("Judgements waiting for review: 4.")

    fix = page.locator(f"#item-{ids['fix']}")
    expect(fix.locator(".kind")).to_have_text("Correction")
    expect(fix.locator(".by")).to_have_text("by alice")
    expect(fix.locator(".version")).to_have_text("domain@1")
    expect(fix.locator(".question")).to_have_text(E24)
    expect(fix.locator(".model-answer .text")).to_have_text("E24 is a door error.")
    expect(fix.locator(".correction")).to_have_text(CORRECTED)
    expect(fix.locator(".review-passages summary")).to_have_text("Passages (1)")
    picked = page.locator(f"#item-{ids['picked']}")
    expect(picked.locator(".review-draft.picked .text")).to_have_text("The drain is blocked [1].")
    expect(picked.locator(".review-draft:not(.picked) .text")).to_have_text("E24 is a door error.")
    expect(picked.locator("details.edit")).to_have_count(0)  # a preference is taken or not, never edited
    expect(page.locator(f"#item-{ids['liked']} .kind")).to_have_text("Judged good (thumbs up)")
    page.screenshot(path=tmp_path / "review-queue.png", full_page=True)

    fix.locator("details.edit summary").click()
    box = fix.locator("textarea[name=edited_text]")
    expect(box).to_have_value(CORRECTED)  # the correction, ready to edit
    box.fill(EDITED)
    fix.locator(".save-edit").click()
    expect(page.locator(".notice")).to_have_text(f"Judgement {ids['fix']}: accepted as edited.")
    expect(page.locator(f"#item-{ids['fix']}")).to_have_count(0)  # no longer waiting

    page.locator(f"#item-{ids['useless']} .reject").click()
    expect(page.locator(".notice")).to_have_text(f"Judgement {ids['useless']}: rejected.")
    expect(page.locator(".item")).to_have_count(2)

    page.click("text=Decided (2)")
    decided = page.locator(".item")
    expect(decided).to_have_count(2)
    expect(decided.first.locator(".history")).to_contain_text("rejected by rita")  # the latest decision first
    expect(page.locator(f"#item-{ids['fix']} .history")).to_contain_text("accepted as edited by rita")
    expect(page.locator(f"#item-{ids['fix']} .history .edited")).to_have_text(EDITED)
    page.screenshot(path=tmp_path / "review-decided.png", full_page=True)

    with store.sessions() as session:
        reviews = session.scalars(select(Review).order_by(Review.id)).all()
        rita = session.scalar(select(User.id).where(User.username == "rita"))
        assert [(r.feedback_id, r.decision, r.edited_text, r.reviewer_id) for r in reviews] == [
            (ids["fix"], "edited", EDITED, rita),
            (ids["useless"], "rejected", None, rita),
        ]
        data = training_data(session)
    assert [(row["feedback_id"], row["output"]) for row in data.sft] == [(ids["fix"], EDITED)]
    assert [(row["feedback_id"], row["chosen"], row["rejected"]) for row in data.dpo] == [
        (ids["fix"], EDITED, "E24 is a door error.")
    ]


def test_a_refused_decision_shows_why_with_its_status(chromium, site):
    from playwright.sync_api import expect

    base_url, _, ids = site
    page = signed_in(chromium, base_url, "rita", "/review")
    item = page.locator(f"#item-{ids['liked']}")
    item.locator("details.edit summary").click()
    item.locator("textarea[name=edited_text]").fill("   ")
    with page.expect_response(lambda r: r.request.method == "POST") as answered:
        item.locator(".save-edit").click()
    assert answered.value.status == 400
    expect(page.locator(".error")).to_have_text("An edit needs the text that replaces the answer (--text).")
    expect(page.locator(".item")).to_have_count(4)  # the queue is still there, nothing decided
    # A form without the session's CSRF token is refused before anything is decided.
    refused = page.request.post(f"{base_url}/review/{ids['liked']}", form={"decision": "accepted"})
    assert refused.status == 403
    with site[1].sessions() as session:
        assert session.scalars(select(Review)).all() == []


def test_a_user_gets_a_403_page_on_review_and_dashboard(chromium, site, tmp_path):
    from playwright.sync_api import expect

    base_url, _, _ = site
    page = signed_in(chromium, base_url, "alice", "/")
    expect(page.locator("header nav")).not_to_contain_text("Review")
    for path, message in (
        ("/review", "This page is for reviewers and admins"),
        ("/admin", "This page is for admins."),
        ("/review?show=decided&lang=zh", "此页面仅供审核员和管理员使用"),
    ):
        answer = page.goto(f"{base_url}{path}")
        assert answer.status == 403
        expect(page.locator(".forbidden .error")).to_contain_text(message)
    page.screenshot(path=tmp_path / "forbidden.png")
    reviewer = signed_in(chromium, base_url, "rita", "/review")
    assert reviewer.goto(f"{base_url}/admin").status == 403


def test_an_admin_sees_the_dashboard_charts_and_the_worst_rated_question(chromium, site, tmp_path):
    from playwright.sync_api import expect

    base_url, _, _ = site
    page = signed_in(chromium, base_url, "ada", "/admin")
    expect(page.locator("header nav")).to_contain_text("Dashboard")
    expect(page.locator("header nav")).to_contain_text("Review")
    charts = page.locator("img.chart")
    expect(charts).to_have_count(3)
    for i in range(3):
        assert charts.nth(i).evaluate("img => img.complete && img.naturalWidth") > 0
    expect(page.locator(".reviews")).to_have_text(
        "Review queue: 4 waiting, 0 accepted, 0 edited, 0 rejected."
    )  # fmt: skip
    versions = page.locator("table.versions tbody tr")
    expect(versions).to_have_count(2)
    # domain@1: 2 answers, one abstains; 2 judgements (a correction, a rating), no thumbs.
    expect(versions.nth(0)).to_contain_text("50% (1/2)")
    worst = page.locator("table.worst tbody tr")
    expect(worst.first.locator(".question")).to_have_text(WARRANTY)
    expect(worst.first.locator(".answer")).to_have_text("Yes, forever, whatever happens.")
    expect(worst.first).to_contain_text("domain@2")
    expect(worst.first).to_contain_text("Wrong ×2")
    expect(worst).to_have_count(2)  # and the answer rated 2
    page.screenshot(path=tmp_path / "admin-dashboard.png", full_page=True)

    page.goto(f"{base_url}/admin?lang=zh&days=7")
    expect(page.locator("h1")).to_have_text("仪表板")
    expect(page.locator("img.chart")).to_have_count(3)
    page.screenshot(path=tmp_path / "admin-dashboard-zh.png", full_page=True)

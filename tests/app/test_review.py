"""The review queue and the export of accepted feedback as training data, through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from hangjia.app.db.models import Review, User
from hangjia.app.db.schema import upgrade
from hangjia.app.exchanges import ExchangeStore
from hangjia.cli import app
from hangjia.core.errors import HangjiaError
from hangjia.corpus.datasets import DatasetStore

PASSAGE = {"index": 1, "source": "manual.md", "text": "E24 means the drain pump is blocked.", "cited": True}


@pytest.fixture
def workspace(db_url, tmp_path):
    upgrade(db_url)
    (tmp_path / "hangjia.yaml").write_text(json.dumps({"database": {"url": db_url}}))
    store = ExchangeStore(db_url)
    with store.sessions.begin() as s:
        s.add_all([User(username="rita", password_hash="x", role="reviewer"), User(username="uma", password_hash="x")])
    yield tmp_path, store
    store.close()


def ask(store, question: str, answer: str) -> int:
    messages = [{"role": "user", "content": question}]
    return store.record(
        model="domain", version="domain", messages=messages, passages=[PASSAGE], answer=answer, latency_ms=3, user="ana"
    )


def cli(ws, *args):
    return CliRunner().invoke(app, [*args, "-w", str(ws), "--config", str(ws / "hangjia.yaml")])


def test_only_accepted_feedback_becomes_training_data_and_traces_back(workspace):
    ws, store = workspace
    wrong = ask(store, "What does E24 mean?", "E24 is a door error.")
    good = ask(store, "What does E24 mean?", "The drain pump is blocked [1].")
    other = ask(store, "How do I descale?", "Use vinegar.")
    fix = store.feedback(
        {"exchange_id": wrong, "kind": "correction", "corrected_answer": "A blocked drain pump [1]."}, "ana"
    )
    liked = store.feedback({"exchange_id": good, "kind": "thumbs", "thumbs": True}, "ana")
    pick = store.feedback(
        {"exchange_id": good, "kind": "preference", "chosen_exchange_id": good, "rejected_exchange_id": wrong}, "ana"
    )
    bad_fix = store.feedback({"exchange_id": other, "kind": "correction", "corrected_answer": "Use bleach."}, "ana")
    store.feedback(
        {"exchange_id": other, "kind": "thumbs", "thumbs": False, "reason": "wrong"}, "ana"
    )  # teaches nothing

    listed = cli(ws, "review", "ls")
    assert listed.exit_code == 0, listed.output
    assert "4 item(s)" in listed.output  # the correction, the thumbs up, the preference, the other correction

    assert cli(ws, "review", "accept", str(fix), "--by", "rita").exit_code == 0
    assert (
        cli(ws, "review", "edit", str(liked), "--by", "rita", "--text", "E24: the drain pump is blocked [1].").exit_code
        == 0
    )
    assert cli(ws, "review", "accept", str(pick), "--by", "rita").exit_code == 0
    assert cli(ws, "review", "reject", str(bad_fix), "--by", "rita").exit_code == 0
    refused = cli(ws, "review", "accept", str(bad_fix), "--by", "uma")  # a user without the reviewer role
    assert isinstance(refused.exception, HangjiaError) and "not an active reviewer" in str(refused.exception)
    assert "0 item(s)" in cli(ws, "review", "ls").output

    exported = cli(ws, "feedback", "export")
    assert exported.exit_code == 0, exported.output
    datasets = DatasetStore(ws / "datasets")
    sft = datasets.get("feedback_sft").read().to_pylist()
    dpo = datasets.get("feedback_dpo").read().to_pylist()
    assert [(r["feedback_id"], r["output"]) for r in sft] == [
        (fix, "A blocked drain pump [1]."),
        (liked, "E24: the drain pump is blocked [1]."),
    ]
    assert all("[1] (manual.md) E24 means the drain pump is blocked." in r["instruction"] for r in sft)
    assert [(r["feedback_id"], r["chosen"], r["rejected"]) for r in dpo] == [
        (fix, "A blocked drain pump [1].", "E24 is a door error."),
        (pick, "The drain pump is blocked [1].", "E24 is a door error."),
    ]
    assert bad_fix not in {r["feedback_id"] for r in sft + dpo}
    manifest = datasets.get("feedback_sft").manifest
    assert manifest["stats"]["feedback_ids"] == [fix, liked]
    with store.sessions() as s:  # who decided what stays recorded
        assert [(r.feedback_id, r.decision) for r in s.scalars(select(Review).order_by(Review.id))] == [
            (fix, "accepted"),
            (liked, "edited"),
            (pick, "accepted"),
            (bad_fix, "rejected"),
        ]
    again = cli(ws, "feedback", "export")
    assert datasets.get("feedback_sft").ref in again.output  # the same rows: the same version
    assert len(datasets.versions("feedback_sft")) == 1

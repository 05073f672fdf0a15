"""What a model writes, and the note a Chinese question to an English-only model gets."""

from __future__ import annotations

from pathlib import Path

from hangjia.llm.languages import language_note, model_languages
from hangjia.llm.models import EMBEDDED_NAME

EMBEDDED = Path("/cache") / EMBEDDED_NAME
LOCAL = Path("/models/Qwen2.5-0.5B-Instruct")
ZH = "LS-60A的保修期是多久？"


def test_languages_come_from_the_setting_else_the_known_models_else_unknown():
    assert model_languages(EMBEDDED) == ["en"]
    assert model_languages(EMBEDDED, ["en", "zh"]) == ["en", "zh"]  # serve.languages wins
    assert model_languages(LOCAL) is None  # a folder we know nothing about
    assert model_languages(LOCAL, ["zh", "en"]) == ["zh", "en"]


def test_a_chinese_question_to_an_english_model_gets_a_note():
    note = language_note(ZH, "domain", EMBEDDED, model_languages(EMBEDDED))
    assert note == "The model domain (SmolLM2-135M) writes English; answers to Chinese questions may be poor."
    assert language_note(ZH, "base", LOCAL, ["en", "fr"]) == (
        "The model base (Qwen2.5-0.5B-Instruct) writes English and French; answers to Chinese questions may be poor."
    )


def test_no_note_for_english_questions_chinese_models_or_unknown_ones():
    assert language_note("What does error E24 mean?", "domain", EMBEDDED, ["en"]) is None
    assert language_note("What does 排水 mean?", "domain", EMBEDDED, ["en"]) is None  # mostly English
    assert language_note(ZH, "domain", LOCAL, ["en", "zh"]) is None
    assert language_note(ZH, "domain", LOCAL, None) is None
    assert language_note(ZH, "domain", LOCAL, []) is None

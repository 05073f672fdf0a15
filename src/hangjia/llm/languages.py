"""What a served model writes, and the note a reply carries when the question is in a language it does not.

The embedded SmolLM2-135M-Instruct was trained on English: asked in Chinese it answers with broken English or
repeated characters, and a user should hear that from us rather than read the garbage and guess. What a model
writes comes from `serve.languages` when set, else from the models known here; a local folder we know nothing
about is trusted (no note), since a Chinese team pointing at a Qwen folder must not be warned on every answer.
"""

from __future__ import annotations

from pathlib import Path

from hangjia.core.words import is_chinese
from hangjia.llm.models import EMBEDDED_NAME

# Base model folder name → (what people call it, the languages it writes).
KNOWN_MODELS: dict[str, tuple[str, tuple[str, ...]]] = {EMBEDDED_NAME: ("SmolLM2-135M", ("en",))}
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "fr": "French", "de": "German"}


def model_languages(base_dir: Path, configured: list[str] | None = None) -> list[str] | None:
    """The languages a model on `base_dir` writes: `configured` (serve.languages) when given, else the known
    model's, else None (unknown)."""
    if configured is not None:
        return configured
    known = KNOWN_MODELS.get(Path(base_dir).name)
    return list(known[1]) if known else None


def language_note(question: str, model: str, base_dir: Path, languages: list[str] | None) -> str | None:
    """A sentence for the reply when `question` is Chinese and the model (`languages`, see model_languages) does
    not write Chinese; None otherwise, and always when the languages are unknown (None or [])."""
    if not languages or "zh" in languages or not is_chinese(question):
        return None
    label = KNOWN_MODELS.get(Path(base_dir).name, (Path(base_dir).name, ()))[0]
    writes = " and ".join(LANGUAGE_NAMES.get(code, code) for code in languages)
    return f"The model {model} ({label}) writes {writes}; answers to Chinese questions may be poor."

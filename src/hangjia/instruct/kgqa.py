"""Knowledge-graph question answering pairs (Self-KV style): (subject, relation, object) triples as questions.

Triples come from a triples file (`load_triples`) or from record documents (`triples_from_records`: a CSV row's
key column is the subject, the other column names are relations, the cells are objects). Each triple becomes one
templated question ("What is the price of the drain pump assembly?" -> "38.50 EUR"); two triples that join on
an unambiguous middle entity become a two-hop question, which asks the model to chain facts instead of
recalling one row. A teacher, when given, rewords each templated question, keeping every number and code.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hangjia.core.grounding import MAX_ANSWER_WORDS, is_grounded, word_count
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.documents import Document
from hangjia.corpus.text import decode
from hangjia.instruct.extractive import _UNIT_SUFFIX, RECORD_FORMATS, _record_fields
from hangjia.instruct.paraphrase import teacher_rewrites
from hangjia.instruct.passages import locator
from hangjia.instruct.synth import QAPair
from hangjia.instruct.wording import ask, in_chinese, phrase
from hangjia.llm.teacher import Teacher


@dataclass(frozen=True)
class Triple:
    """One fact; `chunk_id` is the chunk it was read from ("" for a triples file), `source` its file."""

    subject: str
    relation: str
    object: str
    chunk_id: str = ""
    source: str = ""


# ---------------------------------------------------------------- reading triples

_COLUMNS = {"subject": ("subject", "head"), "relation": ("relation", "predicate"), "object": ("object", "tail")}
_NEEDS = "a triples file needs columns subject, relation, object (or head, relation, tail)"


def _rows(path: Path, text: str) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if suffix == ".json":
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    raise ValueError(f"{path}: unsupported triples file type {suffix or '(none)'}; use .csv, .tsv, .json or .jsonl.")


def load_triples(path: str | Path) -> list[Triple]:
    """Triples from a CSV/TSV (header row) or JSON/JSONL (objects) file; a ValueError naming the file if bad."""
    path = Path(path)
    try:
        rows = _rows(path, decode(path.read_bytes()))
    except OSError as e:
        raise ValueError(f"{path}: could not be read ({e.strerror or type(e).__name__}).") from None
    except (json.JSONDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not valid {path.suffix.lstrip('.').upper()} ({e}); {_NEEDS}.") from None
    triples = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: record {n} is not an object; {_NEEDS}.")
        row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        values = {}
        for field, names in _COLUMNS.items():
            name = next((c for c in names if c in row), None)
            if name is None:
                raise ValueError(f"{path}: record {n} has no {field} column; {_NEEDS}.")
            values[field] = " ".join(str(row[name] if row[name] is not None else "").split())
        if not all(values.values()):
            if any(values.values()):
                empty = next(f for f, v in values.items() if not v)
                raise ValueError(f"{path}: record {n} has an empty {empty}; fill it in or remove the record.")
            continue  # a blank line
        triples.append(Triple(values["subject"], values["relation"], values["object"], "", path.name))
    return triples


_PLACEHOLDER = re.compile(r"(record|row) \d+")


def triples_from_records(documents: Iterable[Document], chunks: Sequence[Chunk]) -> list[Triple]:
    """Triples from csv/json/xlsx/parquet documents, each with the chunk holding its row (or its JSON field).

    A "k: v; k: v" line is one row whose first field is the key (csv, xlsx, parquet); "k: v" lines form one
    record keyed by its section title (json), or by its first field when the title is only "record 3".
    """
    by_source: dict[str, list[Chunk]] = defaultdict(list)
    for chunk in sorted(chunks, key=lambda c: (c.source, c.start, c.end)):
        by_source[chunk.source].append(chunk)
    triples: list[Triple] = []
    for doc in documents:
        if doc.format not in RECORD_FORMATS:
            continue
        find = locator(by_source[doc.source])
        for sec in doc.sections:
            record: list[tuple[str, str, int, int]] = []  # (key, value, line start, line end)
            pos = sec.start
            for line in doc.text[sec.start : sec.end].split("\n"):
                start, end, pos = pos, pos + len(line), pos + len(line) + 1
                fields = _record_fields(line)
                if len(fields) >= 2:  # a row of its own
                    chunk = find(start, end) or find(start, start + 1)
                    subject = fields[0][1]
                    triples.extend(_triples(subject, fields[1:], chunk, doc.source))
                elif fields:
                    record.append((*fields[0], start, end))
            if record:
                subject = sec.title if sec.title and not _PLACEHOLDER.fullmatch(sec.title) else record[0][1]
                for key, value, start, end in record:
                    triples.extend(_triples(subject, [(key, value)], find(start, end), doc.source))
    return triples


def _triples(subject: str, fields: list[tuple[str, str]], chunk: Chunk | None, source: str) -> list[Triple]:
    cid = chunk.id if chunk is not None else ""
    return [Triple(subject, k, v, cid, source) for k, v in fields if v != subject]


# ---------------------------------------------------------------- wording

_NAME_RELATION = re.compile(r"^(description|name|title)$", re.IGNORECASE)
_TRAILING_PREPOSITION = re.compile(r"\b(in|by|of|at|on|for|from|to|with)$")


def _relation(relation: str) -> tuple[str, str]:
    """ "price_eur" -> ("price", "EUR"); "hasPart" -> ("part", ""); "located_in" -> ("located in", "")."""
    identifier = re.fullmatch(r"[\w.]+", relation) is not None  # a column or predicate name, not a phrase
    words = re.split(r"[_.\s]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", relation).strip())
    unit = _UNIT_SUFFIX.get(words[-1].lower(), "") if len(words) > 1 else ""
    words = words[:-1] if unit else words
    if identifier:
        words = [w if any(ch.isdigit() for ch in w) else w.lower() for w in words]
    text = phrase(" ".join(words))
    return (text[4:] if text.startswith("has ") else text), unit


def _answer(triple: Triple) -> str:
    unit = _relation(triple.relation)[1]
    return f"{triple.object} {unit}" if unit and not triple.object.endswith(unit) else triple.object


def _question(relation: str, label: str) -> str:
    if in_chinese(relation, label):
        return ask(relation, label)  # "X的价格是什么？"
    if _TRAILING_PREPOSITION.search(relation):  # "located in" -> "What is KSC-01 located in?"
        return f"What is {label} {relation}?"
    if re.search(r"(us|is|ss)$", relation):  # "status", "basis": singular, though ask() would say "are"
        return f"What is the {relation} of {label}?"
    return ask(relation, label)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _labels(triples: Sequence[Triple]) -> dict[str, str]:
    """Subject -> how a question names it: its name when only it has that name ("the drain pump assembly"),
    else itself ("KP-2210"; three parts are all called "Door seal")."""
    names: dict[str, set[str]] = defaultdict(set)
    for t in triples:
        if _NAME_RELATION.match(_relation(t.relation)[0]):
            names[_norm(t.subject)].add(t.object)
    owners = Counter(_norm(n) for ns in names.values() for n in ns)
    labels = {}
    for t in triples:
        ns = names.get(_norm(t.subject), set())
        name = next(iter(ns)) if len(ns) == 1 else ""
        if name and owners[_norm(name)] == 1 and _norm(name) != _norm(t.subject):
            words = name.split()
            common = words[0][1:].islower() and (len(words) == 1 or not words[1][:1].isupper())
            labels[t.subject] = f"the {name[:1].lower()}{name[1:]}" if common else name
        else:
            labels[t.subject] = t.subject
    return labels


# ---------------------------------------------------------------- pairs


def kg_pairs(
    triples: Sequence[Triple],
    *,
    multi_hop: bool = True,
    teacher: Teacher | None = None,
    seed: int = 0,
    chunks_by_id: Mapping[str, Chunk] | None = None,
) -> tuple[list[QAPair], Counter]:
    """One question per (subject, relation), two-hop questions over unambiguous joins, and, with a teacher, a
    rewording of each. A triple whose chunk is in chunks_by_id must be grounded in it. Returns the pairs and
    the count of dropped candidates by reason."""
    drops: Counter = Counter()
    chunks_by_id = chunks_by_id or {}
    facts: list[Triple] = []
    for t in triples:
        chunk = chunks_by_id.get(t.chunk_id)
        if word_count(_answer(t)) > MAX_ANSWER_WORDS:
            drops["long_object"] += 1
        elif chunk is not None and not is_grounded(_answer(t), chunk.text):
            drops["ungrounded"] += 1
        else:
            facts.append(t)
    labels = _labels(facts)
    objects: dict[tuple[str, str], list[Triple]] = defaultdict(list)  # (subject, relation) -> its triples
    for t in facts:
        group = objects[_norm(t.subject), _norm(t.relation)]
        if all(_norm(o.object) != _norm(t.object) for o in group):
            group.append(t)

    candidates: list[QAPair] = []
    for group in objects.values():  # several objects answer together: "DW-4500; DW-6200"
        first, relation = group[0], _relation(group[0].relation)[0]
        label = first.subject if _NAME_RELATION.match(relation) else labels[first.subject]  # not the answer itself
        question = _question(relation, label)
        answer = "; ".join(_answer(t) for t in group)
        candidates.append(QAPair(question, answer, "triple", first.chunk_id, first.source, generator="kg"))
    if multi_hop:
        candidates += _multi_hop(objects, labels, drops)

    # The same question with different answers (two rows for one subject label) cannot be trusted.
    answers: dict[str, set[str]] = defaultdict(set)
    for pair in candidates:
        answers[_norm(pair.question)].add(_norm(pair.answer))
    pairs: list[QAPair] = []
    seen: set[str] = set()
    for pair in candidates:
        key = _norm(pair.question)
        if len(answers[key]) > 1:
            drops["conflicting_answers"] += 1
        elif key in seen:
            drops["duplicate"] += 1
        else:
            seen.add(key)
            pairs.append(pair)

    if teacher is not None and pairs:
        templated = list(pairs)
        rewrites = teacher_rewrites([p.question for p in templated], teacher, seed=seed)
        for pair, (text, reason) in zip(templated, rewrites, strict=True):
            if reason or _norm(text) in seen:
                drops[reason or "duplicate"] += 1
                continue
            seen.add(_norm(text))
            pairs.append(QAPair(text, pair.answer, "kg_paraphrase", pair.chunk_id, pair.source, generator="kg"))
    return pairs, drops


def _multi_hop(
    objects: Mapping[tuple[str, str], list[Triple]], labels: Mapping[str, str], drops: Counter
) -> list[QAPair]:
    """a -r1-> b, b -r2-> c: "What is the <r2> of the <r1> of <a>?" -> c, when b is a subject, a has one r1 and b
    one r2; the answer's chunk is the second hop's, the first hop's chunk its support."""
    relations_of: dict[str, list[tuple[str, str]]] = defaultdict(list)  # subject -> its (subject, relation) keys
    for key in objects:
        relations_of[key[0]].append(key)
    pairs: list[QAPair] = []
    for key, group in objects.items():
        if not any(_norm(t.object) in relations_of for t in group):
            continue
        if len(group) > 1:  # "the compatible model of KP-2210" names two models
            drops["ambiguous_join"] += 1
            continue
        middle, r1 = _norm(group[0].object), _relation(group[0].relation)[0]
        if _TRAILING_PREPOSITION.search(r1):
            continue  # "the located in of X" cannot be said
        for hop in relations_of[middle]:
            second = objects[hop]
            if len(second) > 1:
                drops["ambiguous_join"] += 1
                continue
            last = second[0]
            if _norm(last.object) == key[0]:
                continue  # back to where it started
            subject = labels[group[0].subject]
            label = f"{subject}的{r1}" if in_chinese(r1, subject) else f"the {r1} of {subject}"
            question = _question(_relation(last.relation)[0], label)
            support = [group[0].chunk_id] if group[0].chunk_id not in ("", last.chunk_id) else []
            pairs.append(
                QAPair(
                    question, _answer(last), "multi_hop", last.chunk_id, last.source, generator="kg", support=support
                )
            )
    return pairs

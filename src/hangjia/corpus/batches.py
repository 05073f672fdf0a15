"""The per-document stages (clean, chunk) as batch functions `pa.Table -> pa.Table`, so `engine.map_batches` can run
them in-process or on Ray Data.

Each function handles any slice of rows on its own; whatever needs every document (the running headers and footers
that `repeated_lines` finds across documents) is computed once by the driver and passed in. The functions are
module-level and take only plain keyword arguments, so `functools.partial(clean_batch, repeated=..., ...)` pickles
to Ray workers. Schemas are explicit so that an empty batch and every Ray block have the same one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from hangjia.corpus.chunk import chunk_documents
from hangjia.corpus.clean import DEFAULT_OPTIONS, CleanOptions, CleanReport, clean_document, tally_kept
from hangjia.corpus.documents import Document

SECTION = pa.struct([("title", pa.string()), ("start", pa.int64()), ("end", pa.int64())])
DOCUMENT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("format", pa.string()),
        ("text", pa.large_string()),  # one batch of long documents can pass the 2 GiB of a plain string array
        ("sections", pa.list_(SECTION)),
        ("sha256", pa.string()),
    ]
)
# clean_batch's rows: the document (cleaned) and what cleaning found, which `clean_results` turns into a CleanReport.
CLEANED_SCHEMA = pa.schema(
    [
        *DOCUMENT_SCHEMA,
        ("filtered_reason", pa.string()),  # null when kept, else "too short, repetitive"
        ("pii", pa.string()),  # JSON object of redacted items per kind, e.g. {"phone": 2}
        ("pii_kept", pa.string()),  # JSON list of kept contacts, rows of CleanReport.pii_kept
        ("language", pa.string()),
        ("changed", pa.bool_()),
        ("header_footer_lines", pa.int64()),
        ("boilerplate_lines", pa.int64()),
    ]
)
CHUNK_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("section", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.large_string()),
    ]
)


def documents_table(docs: Iterable[Document]) -> pa.Table:
    """Documents as rows of DOCUMENT_SCHEMA."""
    return pa.Table.from_pylist([d.to_dict() for d in docs], schema=DOCUMENT_SCHEMA)


def table_documents(table: pa.Table) -> list[Document]:
    """Rows with the DOCUMENT_SCHEMA columns (others are ignored) back as Documents."""
    return [Document.from_dict(row) for row in table.select(DOCUMENT_SCHEMA.names).to_pylist()]


# --- clean ----------------------------------------------------------------------------------------------------------


def _clean_row(doc: Document, repeated: frozenset[str], options: CleanOptions) -> dict[str, Any]:
    """One document through `clean_document`, with what it counted kept on the row."""
    cleaned, issues, counts = clean_document(doc, repeated, options)
    return cleaned.to_dict() | {
        "filtered_reason": ", ".join(issues) or None,
        "pii": json.dumps(counts.pii, ensure_ascii=False),
        "pii_kept": json.dumps(counts.pii_kept, ensure_ascii=False),
        "language": counts.language,
        "changed": counts.changed,
        "header_footer_lines": counts.header_footer_lines,
        "boilerplate_lines": counts.boilerplate_lines,
    }


def clean_batch(table: pa.Table, *, repeated: frozenset[str], options: CleanOptions = DEFAULT_OPTIONS) -> pa.Table:
    """Clean every document row as `clean_documents` does, given `repeated = repeated_lines(all_documents)`.

    Rows come back in CLEANED_SCHEMA, filtered ones included: `filtered_reason` is null for a kept document, else
    the reasons ("too short, repetitive"); `clean_results` turns a whole cleaned table into clean_documents' result.
    """
    rows = [_clean_row(doc, repeated, options) for doc in table_documents(table)]
    return pa.Table.from_pylist(rows, schema=CLEANED_SCHEMA)


def clean_results(cleaned: pa.Table) -> tuple[pa.Table, list[tuple[str, str]], CleanReport]:
    """A table from clean_batch as clean_documents returns it: the kept documents (DOCUMENT_SCHEMA),
    (source, reason) for those filtered out, and the report."""
    report = CleanReport()
    for row in cleaned.drop_columns(["text", "sections"]).to_pylist():
        report.documents_changed += int(row["changed"])
        report.header_footer_lines += row["header_footer_lines"]
        report.boilerplate_lines += row["boilerplate_lines"]
        report.languages[row["source"]] = row["language"]
        report.pii.update(json.loads(row["pii"]))
        report.pii_kept.extend(json.loads(row["pii_kept"]))
        if row["filtered_reason"] is not None:
            report.filtered.append((row["source"], row["filtered_reason"]))
    report.pii_kept = tally_kept(report.pii_kept)
    kept = cleaned.filter(cleaned["filtered_reason"].is_null()).select(DOCUMENT_SCHEMA.names)
    return kept, list(report.filtered), report


# --- chunk ----------------------------------------------------------------------------------------------------------


def chunk_batch(table: pa.Table, *, max_len: int, overlap: int, **options: Any) -> pa.Table:
    """The chunks of every document row (CHUNK_SCHEMA), in document order.

    `options` go to chunk_documents as keywords (a token counter, say); for Ray they must pickle."""
    chunks = chunk_documents(table_documents(table), max_len, overlap, **options)
    return pa.Table.from_pylist([c.to_dict() for c in chunks], schema=CHUNK_SCHEMA)

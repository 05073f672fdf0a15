"""Text shared by every loader: the Section span, encoding detection, whitespace normalising, and block assembly."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from charset_normalizer import from_bytes


@dataclass(frozen=True)
class Section:
    """A titled span of `Document.text`; for json/csv one record."""

    title: str
    start: int
    end: int


Block = tuple[str, str]  # (section title, section text)

_PAGE_TITLE = re.compile(r"page (\d+)")


def page_title(number: int) -> str:
    """The title of a PDF page's section: the PDF loader makes one section per page."""
    return f"page {number}"


def page_number(source: str, title: str) -> int | None:
    """The page a section is, for a PDF's "page N" sections; None for any other section or format."""
    match = _PAGE_TITLE.fullmatch(title)
    return int(match.group(1)) if match and source.lower().endswith(".pdf") else None


_BOMS = [  # UTF-32 first: its little-endian BOM starts with the UTF-16 one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
# Tried first, so a short file is not read as a rare code page: "café crème" in cp1252 is otherwise
# detected as cp1006 (Urdu) and the GBK "安装说明" as cp949 (Korean). Other encodings come second.
_PREFERRED = ["gb18030", "big5", "cp1252"]
# Control characters that text files do not hold (tab, newlines, VT, FF and ESC are allowed).
_CONTROL_BYTES = bytes([*range(0, 9), *range(0x0E, 0x1B), *range(0x1C, 0x20)])
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def _utf16_without_bom(raw: bytes) -> str | None:
    """UTF-16 without a BOM, recognised by NUL bytes on every other byte.

    ASCII characters have a NUL high byte: all of English text, and the spaces, digits and newlines of Chinese.
    """
    half = len(raw) // 2
    if len(raw) % 2 or half < 2:
        return None
    even, odd = raw[0::2].count(0), raw[1::2].count(0)
    for encoding, zeros, other in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if zeros >= 0.1 * half and other * 5 <= zeros:  # the other side's NULs: CJK like 一 (U+4E00)
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError:
                continue
            if len(_CONTROL_CHARS.findall(text)) <= 0.01 * len(text):
                return text
    return None


def _mostly_utf8(raw: bytes) -> str | None:
    """UTF-8 with a few stray bytes (a pasted cp1252 quote, a cut-off last character): keep it as UTF-8.

    In GBK, Big5 or cp1252 text few high bytes happen to form valid UTF-8, so valid ones outnumber bad ones 10:1
    only in real UTF-8.
    """
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = len(text) - len(text.encode("ascii", errors="ignore")) - bad
    return text if good >= max(10, 10 * bad) else None


def decode(raw: bytes) -> str:
    """Bytes to text in whatever encoding they are: BOMs, UTF-8, BOM-less UTF-16, then detection.

    Detection (charset-normalizer) covers GBK/GB18030, Big5, cp1252/Latin-1 and the other common code pages.
    Raises ValueError for binary data and for bytes that fit no encoding.
    """
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"not valid {encoding.removesuffix('-sig').upper()} text (bad byte at offset {e.start})"
                ) from None
    if b"\x00" in raw:
        text = _utf16_without_bom(raw)
        if text is None:
            raise ValueError("binary file (contains NUL bytes)")
        return text
    if (len(raw) - len(raw.translate(None, _CONTROL_BYTES))) * 100 > len(raw):  # over 1% control bytes
        raise ValueError("binary file (contains control bytes)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = _mostly_utf8(raw)
    if text is not None:
        return text
    match = from_bytes(raw, cp_isolation=_PREFERRED).best() or from_bytes(raw).best()
    if match is None:
        raise ValueError("unknown text encoding (or a binary file); save it as UTF-8")
    try:
        return raw.decode(match.encoding)
    except UnicodeDecodeError as e:  # detection samples the file; a later part may not fit
        raise ValueError(f"mixed or unknown text encoding (bad byte at offset {e.start}); save it as UTF-8") from None


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def assemble(blocks: list[Block]) -> tuple[str, list[Section]]:
    """Join normalised blocks with blank lines and record each block's span as a section."""
    parts: list[str] = []
    sections: list[Section] = []
    pos = 0
    for title, body in blocks:
        body = normalise(body)
        if not body.strip():
            continue
        if parts:
            pos += 2  # the "\n\n" separator
        sections.append(Section(title, pos, pos + len(body)))
        parts.append(body)
        pos += len(body)
    return "\n\n".join(parts), sections


def one_line(text: str) -> str:
    return " ".join(text.split())

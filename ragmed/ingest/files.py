"""Files as users keep them: which text encodings ragmed reads, and which files in a folder no one put there.

One place for both, so the CLI's term lists, the Manbyo tables and the corpus folders agree.
"""

from __future__ import annotations

import codecs
from pathlib import PurePath

#: the byte-order marks of UTF-16 (Excel's "Unicode text" saves a sheet so)
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _decoded(data: bytes, complete: bool, reject_nul: bool = False) -> tuple[str, str]:
    """(encoding, text): UTF-16 where its byte-order mark says so, else UTF-8 (a BOM dropped), else cp932
    as Japanese Windows saves text. Raises the UTF decoder's :class:`UnicodeDecodeError` when none fits;
    with ``reject_nul`` also when the cp932 reading holds a NUL (cp932 reads most bytes as something: a
    NUL says the file was not text)."""
    if data[:2] in UTF16_BOMS:
        return "utf-16", codecs.getincrementaldecoder("utf-16")().decode(data, final=complete)
    try:
        return "utf-8-sig", codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=complete)
    except UnicodeDecodeError as exc:
        try:
            text = codecs.getincrementaldecoder("cp932")().decode(data, final=complete)
        except UnicodeDecodeError:
            raise exc from None
        if reject_nul and "\x00" in text:
            raise exc from None
        return "cp932", text


def decode_text(data: bytes, reject_nul: bool = False) -> str:
    """A whole file's bytes as text, in the first encoding of :func:`_decoded` that reads them."""
    return _decoded(data, complete=True, reject_nul=reject_nul)[1]


def text_encoding(head: bytes) -> str:
    """The encoding to stream a file in, judged on its first bytes (a character cut at their end is no
    error; a wrong guess fails later, naming the offset)."""
    return _decoded(head, complete=False)[0]


def hidden(rel: PurePath) -> bool:
    """A file no one put there: under a hidden folder (.git, .ipynb_checkpoints), macOS's __MACOSX/ or an
    AppleDouble ``._name`` resource fork (binary, beside every file a Mac copies), or Excel's ``~$name``
    lock file. ``rel`` is relative to the folder (or zip) searched."""
    return any(part.startswith((".", "~$")) or part == "__MACOSX" for part in rel.parts)

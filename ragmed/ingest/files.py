"""Files as users keep them: which text encodings ragmed reads, and which files in a folder no one put there.

One place for both, so the CLI's term lists, the Manbyo tables and the corpus folders agree.
"""

from __future__ import annotations

from pathlib import PurePath

#: the byte-order marks of UTF-16 (Excel's "Unicode text" saves a sheet so)
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode_text(data: bytes, reject_nul: bool = False) -> str:
    """UTF-16 where its byte-order mark says so, else UTF-8 (a BOM dropped), else cp932 as Japanese
    Windows saves text. Raises the UTF decoder's :class:`UnicodeDecodeError` when none fits; with
    ``reject_nul`` also when the cp932 reading holds a NUL (cp932 reads most bytes as something: a NUL
    says the file was not text)."""
    if data[:2] in UTF16_BOMS:
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        try:
            text = data.decode("cp932")
        except UnicodeDecodeError:
            raise exc from None
        if reject_nul and "\x00" in text:
            raise exc from None
        return text


def hidden(rel: PurePath) -> bool:
    """A file no one put there: under a hidden folder (.git, .ipynb_checkpoints), macOS's __MACOSX/ or an
    AppleDouble ``._name`` resource fork (binary, beside every file a Mac copies), or Excel's ``~$name``
    lock file. ``rel`` is relative to the folder (or zip) searched."""
    return any(part.startswith((".", "~$")) or part == "__MACOSX" for part in rel.parts)

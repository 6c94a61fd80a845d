"""Moved to :mod:`ragmed.ingest.manbyo`; this name stays for code written against it."""

from ragmed.ingest.manbyo import *  # noqa: F403
from ragmed.ingest.manbyo import (  # noqa: F401
    COL_ICD,
    COL_NAME,
    COL_SURFACE,
    LEVELS,
    NO_CODE,
    ManbyoEntry,
    ManbyoFormatError,
    fetch_manbyo,
    load_manbyo,
    nfkc,
    split_names,
)

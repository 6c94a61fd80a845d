"""Moved to :mod:`ragmed.ingest.corpus`; this name stays for code written against it."""

from ragmed.ingest.corpus import *  # noqa: F403
from ragmed.ingest.corpus import (  # noqa: F401
    CorpusFormatError,
    CorpusOptions,
    chunk_documents,
    discover,
    load_documents,
    split_sentences,
)

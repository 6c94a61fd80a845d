"""Ingest stage: sources → node records (``{id, text, metadata}``), streamed.

:mod:`ragmed.ingest.manbyo` reads the Manbyo disease dictionary, :mod:`ragmed.ingest.corpus` reads
corpus files and chunks them. Both name the file and line of anything malformed; both read text in
the encodings, and skip the stray files, that :mod:`ragmed.ingest.files` names.
"""

"""``python -m ragmed.cli``: the same as the ``ragmed`` command."""

from ragmed.cli import app

app()

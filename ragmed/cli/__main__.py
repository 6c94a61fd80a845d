"""``python -m ragmed.cli``: the same command as ``ragmed``."""

from ragmed.cli import app

if __name__ == "__main__":  # pragma: no cover
    app()

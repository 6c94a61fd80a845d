"""The wire format of ragmed's OpenAI-compatible API, as pydantic models (requests, responses, stream
chunks, errors). OpenAI's fields keep OpenAI's names and meaning; ragmed's additions are top-level keys
(``sources``, ``citations``, ``ragmed``) that OpenAI clients expose as extra fields."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragmed.schema import Citation, LinkedDisease, RetrievalMode, Source


def _no_lone_surrogates(text: str, where: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where} is not valid Unicode text (an unpaired surrogate at character {exc.start})"
        ) from None
    return text


# --------------------------------------------------------------------------- requests


class TextPart(BaseModel):
    """A content part of a message: chat's ``text``, the Responses API's ``input_text`` (and
    ``output_text`` in an earlier answer sent back); other types (images, files, audio) are kept for the
    route to refuse."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None

    @field_validator("text")
    @classmethod
    def _valid_text(cls, value: str | None) -> str | None:
        return None if value is None else _no_lone_surrogates(value, "text")


class _Content(BaseModel):
    """A message's ``content``: a string or a list of parts, of which :attr:`TEXT_PARTS` are read."""

    model_config = ConfigDict(extra="allow")
    TEXT_PARTS: ClassVar[tuple[str, ...]] = ("text",)
    content: str | list[TextPart] | None = None

    @field_validator("content")
    @classmethod
    def _valid_content(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _no_lone_surrogates(value, "content")
        return value

    def text(self) -> str | None:
        """The message text; None when it holds non-text parts (images…), which ragmed does not take."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        if any(p.type not in self.TEXT_PARTS for p in self.content):
            return None
        return "".join(p.text or "" for p in self.content)


class ChatMessage(_Content):
    role: Literal["system", "developer", "user", "assistant", "tool"]


class RagOptions(BaseModel):
    """``extra_body={"ragmed": {...}}``: per-request retrieval options."""

    model_config = ConfigDict(extra="forbid")
    k: int | None = Field(None, ge=1, le=50)
    mode: RetrievalMode | None = None
    rag: bool = True


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False  # the openai client sends null for an option left unset


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = "response"
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: plain text, any JSON object, or JSON that fits a schema."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def schema_or_none(self) -> dict[str, Any] | None:
        """The JSON schema the answer must fit (None for plain text)."""
        schema = self.json_schema.json_schema if self.json_schema else None
        return answer_schema(self.type, schema, "response_format")


def answer_schema(kind: str, schema: dict[str, Any] | None, where: str) -> dict[str, Any] | None:
    """The JSON schema an answer must fit for an output format: none for text, any object for
    ``json_object``, the given schema for ``json_schema`` (where one is required)."""
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if schema is None:
        raise ValueError(f"{where} of type json_schema needs its schema")
    return schema


class ChatRequest(BaseModel):
    # Unknown OpenAI fields (user, logit_bias, …) are accepted and ignored, as vLLM does; fields whose
    # meaning ragmed cannot give (tools, logprobs) are refused by name rather than silently dropped.
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(1, ge=1, le=1)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    ragmed: RagOptions | None = None


class InputItem(_Content):
    """One item of a Responses ``input`` list: a message (``{"role", "content"}``, with or without
    ``"type": "message"``, an earlier response's output message included) or another item type, which
    the route refuses by name."""

    TEXT_PARTS: ClassVar[tuple[str, ...]] = ("input_text", "output_text", "text")
    type: str | None = None
    role: Literal["system", "developer", "user", "assistant"] | None = None


class TextFormat(BaseModel):
    """The Responses API's ``text.format``: what ``response_format`` is to chat completions, flattened
    (``{"type": "json_schema", "name", "schema", "strict"}``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    def schema_or_none(self) -> dict[str, Any] | None:
        return answer_schema(self.type, self.json_schema, "text.format")


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: TextFormat | None = None


class ResponsesRequest(BaseModel):
    """``POST /v1/responses``. ragmed keeps no state: the conversation comes whole in ``input`` (an
    earlier response's ``output`` appended to it works), and fields that need stored responses, tools or
    log probabilities are refused by name; other unknown fields are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[InputItem]
    instructions: str | None = None
    stream: bool | None = False
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_output_tokens: int | None = Field(None, ge=1)
    text: TextConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    background: bool | None = None
    include: list[str] | None = None
    top_logprobs: int | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    truncation: str | None = None
    ragmed: RagOptions | None = None

    @field_validator("input")
    @classmethod
    def _valid_input(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _no_lone_surrogates(value, "input")
        if not value:
            raise ValueError("input is an empty list")
        return value

    @field_validator("instructions")
    @classmethod
    def _valid_instructions(cls, value: str | None) -> str | None:
        return None if value is None else _no_lone_surrogates(value, "instructions")


class EmbeddingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_type: Literal["passage", "query"] = "passage"


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    ragmed: EmbeddingOptions | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_ids(cls, value: Any) -> Any:
        # OpenAI also takes token ids (a list of ints, or of lists of ints), which LangChain's
        # OpenAIEmbeddings sends by default: tiktoken's ids mean nothing to this server's embedder
        if isinstance(value, list) and value and all(isinstance(v, int | list) for v in value):
            raise ValueError(
                "input holds token ids; this server embeds text only (LangChain: "
                "OpenAIEmbeddings(check_embedding_ctx_length=False))"
            )
        return value


# --------------------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, usage: dict[str, int]) -> Usage:
        prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class RagmedExtras(BaseModel):
    """ragmed's own details of a RAG answer."""

    linked: list[LinkedDisease] = Field(default_factory=list)
    retrieved: int = 0
    packed: int = 0
    invalid_citations: list[int] = Field(default_factory=list)
    rag: bool = True
    upstream_model: str = ""
    prompt_hash: str = ""
    timings: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    trace: dict[str, Any] = Field(default_factory=dict)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    sources: list[Source] = Field(default_factory=list)
    citations: list[Citation] = Field(default_factory=list)
    ragmed: RagmedExtras | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event. The first carries ``sources`` (retrieval ends before generation starts), the one
    with ``finish_reason`` carries ``citations`` and ``ragmed``; ``usage`` rides on a last, choice-less
    chunk when the client asked for it."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    sources: list[Source] | None = None
    citations: list[Citation] | None = None
    ragmed: RagmedExtras | None = None


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: list[OutputText] = Field(default_factory=list)


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0

    @classmethod
    def of(cls, usage: dict[str, int]) -> ResponseUsage:
        chat = Usage.of(usage)
        return cls(
            input_tokens=chat.prompt_tokens,
            output_tokens=chat.completion_tokens,
            total_tokens=chat.total_tokens,
        )


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    """A Responses API response. ``sources`` rides on it from the stream's first event (retrieval is
    over before the first token), ``citations`` and ``ragmed`` once the answer is complete."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputMessage] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: None = None
    reasoning: None = None
    store: bool = False  # nothing is kept: GET /v1/responses/{id} has nothing to return
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    sources: list[Source] | None = None
    citations: list[Citation] | None = None
    ragmed: RagmedExtras | None = None


class ResponseEvent(BaseModel):
    """One event of a Responses stream (sent as ``event: <type>`` and ``data: <json>``): the response's
    lifecycle (``response.created`` … ``response.completed``), its message item and text part opened and
    closed, and the text's deltas — the order the official clients' stream helpers assemble."""

    type: str
    sequence_number: int
    response: ResponseObject | None = None
    output_index: int | None = None
    item: OutputMessage | None = None
    item_id: str | None = None
    content_index: int | None = None
    part: OutputText | None = None
    delta: str | None = None
    text: str | None = None
    logprobs: list[dict[str, Any]] | None = None
    # the ``error`` event's own fields
    code: str | None = None
    message: str | None = None
    param: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: dict[str, int]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, so clients raise their usual exceptions."""

    error: ErrorDetail

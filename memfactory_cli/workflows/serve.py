"""``memfactory serve``: an OpenAI-compatible server (``GET /v1/models``, ``POST /v1/chat/completions``) on FastAPI.

Two modes, so that a trained agent can be called like any chat model and the same command can host a local judge:

- ``agent`` (default): the memory agent, through :meth:`BaseAgent.respond` alone (any registered agent). The last
  message must be the user's; its last paragraph (after the last blank line) is the question, and everything before
  it (earlier messages' text first) is the document: MemAgent reads it chunk by chunk, Memory-R1 and RMM read it as
  a conversation (``Speaker: text`` lines) and answer from the bank they build. The memory trace (MemAgent: the
  memory after each chunk; the others: the memories the answer saw) comes back in the non-standard
  ``memfactory.memories`` field. An agent that cannot serve as configured says so when the server starts.
- ``model``: the bare model: the messages go through the model's chat template into one generate call.

Every malformed request gets an OpenAI-shaped JSON error (``{"error": {"message", "type", "param", "code"}}``) with a
4xx status; an unexpected failure is a 500 with the same shape, and the server keeps running. Generation is
serialised by a lock (one model, one request at a time).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memfactory_cli.agents.base import BaseAgent, Request
from memfactory_cli.config import load_recipe
from memfactory_cli.errors import UserError
from memfactory_cli.generation.base import Generator, SamplingParams
from memfactory_cli.workflows.common import eval_sampling, inference_model, load_policy, make_generator

MODES = ("agent", "model")
MAX_TOKENS_CAP = 8192
MAX_BODY_BYTES = 64 * 1024 * 1024


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send many optional fields; unknown ones are ignored
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stream: bool = False


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def split_document(messages: list[Message]) -> tuple[str, str]:
    """(document, question) from a chat: the last paragraph of the last user message is the question."""
    last = messages[-1]
    if last.role != "user":
        raise ApiError(400, "the last message must be the user's", param="messages")
    body, sep, question = last.text.strip().rpartition("\n\n")
    if not question.strip():
        raise ApiError(400, "the last user message is empty", param="messages")
    earlier = [m.text for m in messages[:-1] if m.role not in ("system", "developer") and m.text.strip()]
    return "\n\n".join([*earlier, body] if sep else earlier), question.strip()


@dataclass
class Service:
    """What the endpoints need: the served name, the mode, the model and tokenizer, the agent, default sampling."""

    name: str
    mode: str
    model: Any
    tokenizer: Any
    agent: BaseAgent
    sampling: SamplingParams
    max_batch: int = 64
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _sampling(self, req: ChatRequest) -> SamplingParams:
        if req.temperature == 0:
            return SamplingParams(do_sample=False)
        if req.temperature is None and req.top_p is None:
            return self.sampling
        base = self.sampling if self.sampling.do_sample else SamplingParams(do_sample=True)
        return dataclasses.replace(
            base, do_sample=True, temperature=req.temperature if req.temperature is not None else base.temperature,
            top_p=req.top_p if req.top_p is not None else base.top_p,
        )

    def complete(self, req: ChatRequest) -> dict[str, Any]:
        if req.model != self.name:
            raise ApiError(404, f"the model '{req.model}' does not exist; this server serves '{self.name}'", param="model", code="model_not_found")
        if req.stream:
            raise ApiError(400, "stream=true is not supported", param="stream")
        budget = req.max_completion_tokens or req.max_tokens
        generator = make_generator(self.model, self.tokenizer, self._sampling(req), self.max_batch)
        with self.lock:
            texts, finished, usage, extra = (self._agent if self.mode == "agent" else self._bare)(req, generator, budget)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop" if f else "length"}
            for i, (t, f) in enumerate(zip(texts, finished))
        ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]},
            "memfactory": {"mode": self.mode, **extra},
        }

    def _bare(self, req: ChatRequest, generator: Generator, budget: int | None):
        messages = [{"role": m.role, "content": m.text} for m in req.messages]
        settings = self.agent.answer_settings()
        try:
            thinking = settings.enable_thinking
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
        except Exception as exc:  # a template can reject a role order (e.g. two system messages)
            raise ApiError(400, f"the chat template rejected the messages: {str(exc).splitlines()[0]}", param="messages") from None
        prompt = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        completions = generator.generate([prompt] * req.n, budget or settings.max_answer_tokens)
        stop = set(generator.eos_ids)
        texts = [t.strip() for t in self.tokenizer.batch_decode(completions, skip_special_tokens=True)]
        finished = [bool(c) and c[-1] in stop for c in completions]
        return texts, finished, (len(prompt), sum(len(c) for c in completions)), {}

    def _agent(self, req: ChatRequest, generator: Generator, budget: int | None):
        document, question = split_document(req.messages)
        responses = self.agent.respond(Request(question, document), generator, budget, n=req.n)
        usage = (sum(r.usage[0] for r in responses), sum(r.usage[1] for r in responses))
        extra = {"memories": [r.trace for r in responses], "turns": [len(r.trajectory.turns) for r in responses]}
        return [r.answer for r in responses], [r.finished for r in responses], usage, extra


def create_app(service: Service):
    """The FastAPI app over a ``Service``; every error, ours or the framework's, is an OpenAI-shaped JSON body."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="memfactory", docs_url=None, redoc_url=None, openapi_url=None)

    def error(exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(ApiError(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where or None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", kind))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return error(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error"))

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            return error(ApiError(413, f"request body larger than {MAX_BODY_BYTES} bytes"))
        return await call_next(request)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.name, "object": "model", "created": 0, "owned_by": "memfactory"}]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> dict[str, Any]:
        return service.complete(req)

    return app


def build_service(recipe: str | None, overrides: list[str], model: str | None, mode: str, name: str | None) -> Service:
    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, not '{mode}'")
    cfg = load_recipe(recipe, overrides)
    policy = load_policy(cfg, model)
    problem = policy.agent.serve_problem() if mode == "agent" else None
    if problem:
        raise UserError(f"agent '{cfg.agent.name}' cannot serve requests: {problem}")
    served = name or policy.model_cfg.name_or_path.rstrip("/").split("/")[-1]
    lm = inference_model(cfg, policy)
    return Service(served, mode, lm, policy.tokenizer, policy.agent, eval_sampling(cfg.eval), max_batch=cfg.eval.batch_size)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections made before uvicorn takes over wait in the backlog instead of being refused
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class ServerThread:
    """Serve an app in a background thread: ``with ServerThread(app) as base_url: ...``; stopped on exit.

    Port 0 picks a free port. Used by the tests and by anything that needs a real local endpoint (a judge).
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 30.0):
        import uvicorn

        self.sock = _bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.start_timeout_s = start_timeout_s

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.base_url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def run(
    recipe: str | None,
    overrides: list[str],
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    mode: str = "agent",
    name: str | None = None,
) -> None:
    import uvicorn

    if not 0 <= port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {port}")
    sock = _bind(host, port)
    service = build_service(recipe, overrides, model, mode, name)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"warning: listening on {host}, beyond this machine; the server has no authentication")
    print(f"serving '{service.name}' ({service.mode}) at http://{host}:{sock.getsockname()[1]}/v1", flush=True)
    uvicorn.Server(uvicorn.Config(create_app(service), log_level="info")).run(sockets=[sock])

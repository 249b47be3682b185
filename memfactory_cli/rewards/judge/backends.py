"""Where judge replies come from: an OpenAI-compatible endpoint, or a local transformers model.

A backend turns a batch of chat conversations into one ``Reply`` each: the reply text, or ``None`` with the reason
it could not be had. It never invents a verdict; parsing and scoring happen in ``Judge``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from memfactory_cli.errors import UserError

T = TypeVar("T")
Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class Reply:
    text: str | None
    attempts: int = 1
    error: str | None = None


class Backend(Protocol):
    identity: str

    def complete(self, conversations: list[Conversation], max_tokens: int) -> list[Reply]: ...


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code, also when the caller is itself inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _httpx() -> Any:
    """httpx2 (what huggingface_hub >= 2 installs) or the original httpx; the API is the same."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        try:
            import httpx

            return httpx
        except ImportError:
            raise UserError("llm_judge: the openai backend needs httpx; pip install httpx") from None


class _Retry(Exception):
    """A transient failure: timeout, connection error, 429/5xx, or a body that is not a chat completion."""


class _Final(Exception):
    """A failure that retrying cannot fix for this item."""


class OpenAIBackend:
    """POST ``{base_url}/chat/completions``, ``concurrency`` requests in flight, each bounded by ``timeout_s``.

    Transient failures are retried ``max_retries`` times with exponential backoff and jitter (the slot is released
    while waiting). A 401/403/404 means the configuration is wrong and stops the run with a ``UserError``; other
    4xx answers (a prompt too long for the judge, say) are final for that item and give no verdict.
    """

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        api_key_env: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        temperature: float = 0.0,
    ):
        if not base_url:
            raise UserError("llm_judge: backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise UserError("llm_judge: backend 'openai' needs model (the name the endpoint serves)")
        if concurrency < 1 or timeout_s <= 0 or max_retries < 0 or backoff_s < 0:
            raise UserError("llm_judge: concurrency must be >= 1, timeout_s > 0, max_retries >= 0 and backoff_s >= 0")
        self._headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise UserError(f"llm_judge: environment variable {api_key_env} (api_key_env) is not set or empty")
            self._headers["Authorization"] = f"Bearer {key}"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.identity = f"openai:{model}"
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.temperature = temperature
        self.httpx = _httpx()
        self._jitter = random.Random()
        self._tls: Any = None

    def complete(self, conversations: list[Conversation], max_tokens: int) -> list[Reply]:
        if not conversations:
            return []
        return run_sync(self._complete_all(conversations, max_tokens))

    async def _complete_all(self, conversations: list[Conversation], max_tokens: int) -> list[Reply]:
        slots = asyncio.Semaphore(self.concurrency)
        limits = self.httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        if self._tls is None:
            self._tls = self.httpx.create_ssl_context()  # building it costs ~30 ms; a client per batch reuses it
        client = self.httpx.AsyncClient(timeout=self.timeout_s, limits=limits, headers=self._headers, verify=self._tls)
        async with client:
            return list(await asyncio.gather(*(self._complete(client, slots, c, max_tokens) for c in conversations)))

    async def _complete(self, client: Any, slots: asyncio.Semaphore, messages: Conversation, max_tokens: int) -> Reply:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": max_tokens}
        error = "unknown"
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt))
            try:
                async with slots:
                    return Reply(await self._post(client, body), attempt + 1)
            except _Retry as exc:
                error = str(exc)
            except _Final as exc:
                return Reply(None, attempt + 1, str(exc))
        return Reply(None, self.max_retries + 1, error)

    def _delay(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)) * self._jitter.uniform(0.5, 1.0)

    async def _post(self, client: Any, body: dict[str, Any]) -> str:
        httpx = self.httpx
        try:
            response = await asyncio.wait_for(client.post(self.url, json=body), self.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise _Retry("timeout") from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection ({type(exc).__name__})") from None
        status = response.status_code
        if status in (401, 403):
            raise UserError(f"llm_judge: {self.url} refused the request (HTTP {status}); check api_key_env")
        if status == 404:
            raise UserError(f"llm_judge: {self.url} answered HTTP 404 for model '{self.model}'; check base_url and model")
        if status == 429 or status >= 500:
            raise _Retry(f"http {status}")
        if status >= 400:
            raise _Final(f"http {status}")
        try:
            content = json.loads(response.content)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retry("garbage body") from None
        if not isinstance(content, str):
            raise _Retry("garbage body")
        return content


class HFBackend:
    """A local judge model, loaded once, that judges a whole batch in left-padded greedy ``generate`` calls."""

    def __init__(self, model: str | None, device: str = "auto", dtype: str = "auto", batch_size: int = 16,
                 enable_thinking: bool = False):
        if not model:
            raise UserError("llm_judge: backend 'hf' needs model (an alias, a local folder or a hub id)")
        if batch_size < 1:
            raise UserError("llm_judge: batch_size must be >= 1")
        self.name_or_path = model
        self.identity = f"hf:{model}"
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        self.enable_thinking = enable_thinking
        self._generator: Any = None

    def _load(self) -> Any:
        if self._generator is None:
            from memfactory_cli.config.schema import ModelConfig
            from memfactory_cli.generation.base import HFGenerator, SamplingParams
            from memfactory_cli.models.loading import load_model, load_tokenizer, resolve_device, resolve_model_path

            path = resolve_model_path(self.name_or_path)
            tokenizer = load_tokenizer(path)
            if not tokenizer.chat_template:
                raise UserError(f"llm_judge: judge model '{self.name_or_path}' has no chat template")
            device = resolve_device(self.device)
            model = load_model(ModelConfig(name_or_path=path, dtype=self.dtype), device, path, inference=True).eval()
            self._generator = HFGenerator(model, tokenizer, SamplingParams(do_sample=False), max_batch=self.batch_size)
        return self._generator

    def complete(self, conversations: list[Conversation], max_tokens: int) -> list[Reply]:
        if not conversations:
            return []
        generator = self._load()
        tok = generator.tokenizer
        texts = [
            tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True, enable_thinking=self.enable_thinking)
            for c in conversations
        ]
        prompts = tok(texts, add_special_tokens=False)["input_ids"]
        outputs = generator.generate(prompts, max_tokens)
        return [Reply(text) for text in tok.batch_decode(outputs, skip_special_tokens=True)]

"""A real OpenAI-compatible judge server on 127.0.0.1, for tests and benchmarks (no model, no network).

It answers ``POST /v1/chat/completions`` by reading the reference answers and the prediction(s) back out of the
judge prompt and calling a prediction correct when it equals a reference after SQuAD normalisation (or, when the
prompt asks for every reference, when each one occurs in it). It replies in the prompt's own format: ``True`` /
``False``, a sentence plus ``{"label": ...}``, or a sentence plus ``{"labels": [...]}`` for a groupwise prompt. A
``script(prediction, attempt) -> action`` injects faults per request (a groupwise request's "prediction" is its
predictions joined by " | ").

Actions: ``ok``; ``sleep`` (wait ``sleep_s``, then answer); ``500``; ``401``; ``garbage`` (200 with a non-JSON
body); ``nochoices`` (200 with JSON that is not a chat completion); ``drop`` (close the connection unanswered);
``reply:<text>`` (answer with that exact text).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from memfactory_cli.rewards.judge.templates import MATCH_MODES
from memfactory_cli.rewards.qa import normalize_answer

Script = Callable[[str, int], str]
_PREDICTION = re.compile(r"^Predicted answer: (.*)$", re.M)
_PREDICTIONS = re.compile(r"^Predicted answers:\n((?:\d+\. .*(?:\n|$))+)", re.M)
_REFERENCES = re.compile(r"^Reference answers:\n((?:- .*\n)+)", re.M)
# LongMemEval's prompts: "Correct Answer" / "Rubric" / "Explanation", then "Model Response"
_LONGMEMEVAL = re.compile(r"\n\n(?:Correct Answer|Rubric|Explanation): (.*)\n\nModel Response: (.*)\n\n", re.S)


def read_prompt(content: str) -> tuple[list[str], list[str]]:
    """(references, predictions) as the judge prompt states them; one prediction unless the prompt is groupwise."""
    lme = _LONGMEMEVAL.search(content)
    if lme is not None:
        return [lme.group(1)], [lme.group(2)]
    refs = _REFERENCES.search(content)
    one, group = _PREDICTION.search(content), _PREDICTIONS.search(content)
    if refs is None:
        raise ValueError("not a judge prompt")
    if one is not None:
        preds = [one.group(1)]
    elif group is not None:
        preds = [line.split(". ", 1)[1] for line in group.group(1).splitlines()]
    else:
        raise ValueError("not a judge prompt")
    return [line[2:] for line in refs.group(1).splitlines()], preds


class LoopbackJudge:
    """Use as a context manager; ``base_url`` is ready inside it and the server is gone after it."""

    def __init__(self, script: Script | None = None, delay_s: float = 0.0, sleep_s: float = 1.0):
        self.script = script or (lambda prediction, attempt: "ok")
        self.delay_s = delay_s
        self.sleep_s = sleep_s
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self.bodies)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> LoopbackJudge:
        judge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would hold the body ~40 ms

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/chat/completions":
                    self._send(404, b"{}")
                    return
                with judge._lock:
                    judge.in_flight += 1
                    judge.max_in_flight = max(judge.max_in_flight, judge.in_flight)
                try:
                    judge._handle(self, json.loads(body))
                finally:
                    with judge._lock:
                        judge.in_flight -= 1

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # the default backlog of 5 drops concurrent connects (a 1 s SYN retry each)

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handle(self, handler: Any, body: dict[str, Any]) -> None:
        content = body["messages"][-1]["content"]
        references, predictions = read_prompt(content)
        prediction = " | ".join(predictions)
        with self._lock:
            self.bodies.append(body)
            self.headers.append(dict(handler.headers))
            attempt = self.attempts[prediction]
            self.attempts[prediction] += 1
        action = self.script(prediction, attempt)
        if action == "sleep":
            time.sleep(self.sleep_s)
        elif action in ("500", "401"):
            handler._send(int(action), b'{"error": "injected"}')
            return
        elif action == "garbage":
            handler._send(200, b"<html>upstream hiccup</html>")
            return
        elif action == "nochoices":
            handler._send(200, b'{"object": "error", "message": "overloaded"}')
            return
        elif action == "drop":
            handler.close_connection = True
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        text = action[len("reply:") :] if action.startswith("reply:") else self._verdict(content, references, predictions)
        reply = {"object": "chat.completion", "model": body.get("model"),
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        handler._send(200, json.dumps(reply).encode())

    @staticmethod
    def _verdict(content: str, references: list[str], predictions: list[str]) -> str:
        refs = [normalize_answer(r) for r in references]
        need_all = MATCH_MODES["all"] in content

        def correct(prediction: str) -> bool:
            p = normalize_answer(prediction)
            return all(f" {r} " in f" {p} " for r in refs) if need_all else p in refs

        verdicts = [correct(p) for p in predictions]
        if "Answer yes or no only." in content:  # LongMemEval: the response must contain the answer
            return "yes" if any(f" {r} " in f" {normalize_answer(predictions[0])} " for r in refs) else "no"
        if "Output only True or False." in content:
            return str(verdicts[0])
        labels = ["CORRECT" if v else "WRONG" for v in verdicts]
        if "Predicted answers:" in content:
            return "Each prediction was compared with the references.\n" + json.dumps({"labels": labels})
        return f"The prediction {'matches' if verdicts[0] else 'does not match'} the references.\n" + json.dumps({"label": labels[0]})


def main() -> None:
    """``python -m memfactory_cli.rewards.judge.loopback [delay_s]``: print the base URL, serve until stdin closes.

    A separate process keeps the server's threads off the caller's GIL, as a real judge would be.
    """
    import sys

    with LoopbackJudge(delay_s=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()

"""The `Simulator`: its state, scripting, answering chat requests, the /_sim/ admin endpoints; `serve()`."""

from __future__ import annotations

import copy
import json
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from fpwatch.sim import anthropic as _anthropic
from fpwatch.sim import gemini as _gemini
from fpwatch.sim import responses as _responses
from fpwatch.sim.behaviour import _Behaviour, _pieces, _Source
from fpwatch.sim.httpd import _Server
from fpwatch.sim.openai import (
    _completion_body,
    _echoed,
    _fault_reply,
    _model_not_found,
    _precheck,
    _refusal,
    _replaced,
    _token_logprob,
)
from fpwatch.sim.scenario import JsonDict, _check_model_name, _faults, _key_loc, _validate_settings, validate_scenario
from fpwatch.sim.wire import (
    _authenticate,
    _ChatRequest,
    _credential,
    _hex_id,
    _match_route,
    _new_entry,
    _parse_json,
    _Reply,
    _split_target,
)

_DEFAULT_FAULT_DELAY = 30.0
# The headers respond() (in-process, no HTTP) takes a caller to have sent.
_IN_PROCESS_HEADERS = {"anthropic-version": _anthropic.VERSIONS[0]}
_MAX_LOG_ENTRIES = 100_000  # a long `fpwatch simulate` session must not grow without bound
_MIN_SHIFTED_LOGPROB = -0.0001
# Each dialect's faults in its own shapes; Chat Completions' (`_fault_reply`) for the rest.
_FAULT_REPLIES = {
    "anthropic": _anthropic._fault_reply,
    "gemini": _gemini._fault_reply,
    "responses": _responses._fault_reply,
}


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """A scriptable OpenAI-compatible server on loopback; see fpwatch/sim/scenario.py for scenarios.

    All mutable state sits behind one lock, which is never held while a request sleeps.
    """

    def __init__(
        self,
        scenario: dict[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        seed: int | None = None,
        log_requests: bool = True,
    ) -> None:
        self._host = host
        self._port = port
        self._api_key = api_key
        self._default_seed = seed
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._seed = 0
        self._settings: dict[str, JsonDict] = {}
        self._behaviours: dict[str, _Behaviour] = {}
        self._faults: dict[str, deque[JsonDict]] = {}
        self._phases: list[JsonDict] = []
        self._phases_applied = 0
        self._phase_start: float | None = None  # the phase clock starts when serving starts
        self._log: deque[JsonDict] = deque(maxlen=_MAX_LOG_ENTRIES)
        self._log_requests = log_requests  # off for benchmarks: no entry to build per request
        validated = validate_scenario(scenario if scenario is not None else {})
        with self._lock:
            self._install(validated)

    # ---- lifecycle

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread; the phase clock starts now."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        server = _Server((self._host, self._port), self)
        self._server = server
        self._stopping.clear()  # a stopped simulator can be started again (on a new port if port=0)
        with self._lock:
            self._phase_start = time.monotonic()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name=f"fpwatch-simulator:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping requests and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()  # idle keep-alive connections would otherwise hold their threads
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started; call start() first")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    # ---- scripting

    def set_scenario(self, scenario: dict[str, Any]) -> None:
        """Replace models, faults, phases and the RNG seed; restart the phase clock."""
        validated = validate_scenario(scenario)
        with self._lock:
            self._install(validated)

    def update_model(self, name: str, settings: dict[str, Any]) -> None:
        """Shallow-merge settings into one model (created from "*"'s settings when absent)."""
        where = _key_loc("models", _check_model_name(name, "models"))
        clean = _validate_settings(settings, where)
        with self._lock:
            self._apply_due_phases()
            self._merge_model(name, clean)

    def push_faults(self, name: str, faults: list[dict[str, Any]]) -> None:
        """Queue one-shot faults for the model's next requests, after any already pending."""
        where = _key_loc("models", _check_model_name(name, "models")) + ".faults"
        clean = _faults(faults, where)
        with self._lock:
            self._apply_due_phases()  # a due phase that sets faults must not replace these later
            self._faults.setdefault(name, deque()).extend(clean)

    def respond(self, body: dict[str, Any], *, path: str = "/v1/chat/completions") -> tuple[int, dict[str, Any]]:
        """Answer `body` as a POST to `path` would be answered, in-process: (status, JSON body).

        The same validation, rejections, faults, request log and random draws as over HTTP, but no
        auth (the caller is trusted: logged as "ok", or "none-required" without a key) and no
        sleeping (latency and timeout faults only count). Works whether or not the simulator was
        started; the first call starts the phase clock if nothing has. A fault without a JSON body
        gives ``(status, {"raw": text})`` (html, malformed) or ``(0, {})`` (disconnect); response
        headers such as Retry-After are not returned.
        """
        auth = "none-required" if self._api_key is None else "ok"
        target = _split_target(path)
        reply = self._serve_api("POST", target, body, auth, None, in_process=True, header=_IN_PROCESS_HEADERS.get)
        if reply.disconnect:
            return 0, {}
        if reply.raw is not None:
            return reply.status, {"raw": reply.raw.decode("utf-8")}
        payload: dict[str, Any] = reply.payload  # type: ignore[assignment]  # API replies carry JSON objects
        return reply.status, payload

    def requests(self) -> list[dict[str, Any]]:
        """Copies of the request log, oldest first (admin requests are not logged)."""
        with self._lock:
            entries = [dict(entry) for entry in self._log]
        # Nested values (body_keys, a client's odd `seed`) are never mutated once logged, so the
        # deep copy can happen outside the lock and a large log does not stall live requests.
        copies = copy.deepcopy(entries)
        for entry in copies:
            entry["body_keys"] = list(entry["body_keys"])
        return copies

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # ---- state (every method below expects the lock to be held)

    def _install(self, validated: JsonDict) -> None:
        seed = validated["seed"] if validated["seed"] is not None else self._default_seed
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)  # recorded, so a run can be replayed
        self._seed = seed
        self._rng.seed(seed)
        self._settings, self._behaviours, self._faults = {}, {}, {}
        for name, settings in validated["models"].items():
            own = dict(settings)
            self._faults[name] = deque(own.pop("faults", []))
            self._settings[name] = own
            self._behaviours[name] = _Behaviour.compile(own)
        self._phases = sorted(validated["phases"], key=lambda phase: phase["at"])
        self._phases_applied = 0
        self._phase_start = time.monotonic() if self._server is not None else None

    def _merge_model(self, name: str, settings: JsonDict) -> None:
        patch = dict(settings)
        if "faults" in patch:
            self._faults[name] = deque(patch.pop("faults"))
        base = self._settings.get(name, self._settings.get("*", {}))
        merged = {**base, **patch}
        self._settings[name] = merged
        self._behaviours[name] = _Behaviour.compile(merged)

    def _apply_due_phases(self) -> None:
        # Phases are applied lazily, when state is next read: no timer thread to manage or race with.
        if self._phase_start is None or self._phases_applied >= len(self._phases):
            return
        elapsed = time.monotonic() - self._phase_start
        while self._phases_applied < len(self._phases) and self._phases[self._phases_applied]["at"] <= elapsed:
            for name, settings in self._phases[self._phases_applied]["models"].items():
                self._merge_model(name, settings)
            self._phases_applied += 1

    def _behaviour_for(self, model: str) -> _Behaviour | None:
        return self._behaviours.get(model) or self._behaviours.get("*")

    def _next_fault(self, model: str, behaviour: _Behaviour) -> JsonDict | None:
        queue = self._faults.get(model)
        if not queue and model not in self._settings:
            queue = self._faults.get("*")  # unlisted models share the "*" queue
        if queue:
            return queue.popleft()
        if behaviour.error_rate and self._rng.random() < behaviour.error_rate:
            return dict(self._rng.choice(behaviour.error_kinds))
        return None

    def _snapshot(self) -> JsonDict:
        with self._lock:
            self._apply_due_phases()
            models: dict[str, JsonDict] = {}
            for name, settings in self._settings.items():
                models[name] = copy.deepcopy(settings)
                if self._faults.get(name):
                    models[name]["faults"] = copy.deepcopy(list(self._faults[name]))
            phases = copy.deepcopy(self._phases[self._phases_applied :])
            return {"seed": self._seed, "models": models, "phases": phases}

    # ---- answering API requests

    def _handle_api(
        self,
        method: str,
        target: str,
        authorization: str | None,
        api_key: str | None,
        raw: bytes,
        header: Callable[[str], str | None] = lambda name: None,
    ) -> _Reply:
        body = _parse_json(raw)
        url = urlsplit(target)
        if _match_route(method, url).kind.startswith("gemini"):  # x-goog-api-key or ?key=, never Authorization
            authorization, api_key = None, _gemini._credential(header, url)
        elif _match_route(method, url).kind == "anthropic":  # x-api-key, or a Bearer key (the SDK's 2.x way)
            api_key = header("x-api-key")
        auth, sent_key = _authenticate(self._api_key, authorization, api_key)
        credential = _credential(authorization, api_key)
        return self._serve_api(method, url, body, auth, sent_key, credential=credential, header=header)

    def _serve_api(
        self,
        method: str,
        url: SplitResult,
        body: object,
        auth: str,
        sent_key: str | None,
        *,
        in_process: bool = False,
        credential: str | None = None,
        header: Callable[[str], str | None] = lambda name: None,
    ) -> _Reply:
        """Everything after reading the request, shared by HTTP and `respond()`."""
        route = _match_route(method, url)
        anthropic = route.kind == "anthropic"
        request_id = _anthropic._request_id() if anthropic else "req_" + _hex_id(32)
        gemini = route.kind.startswith("gemini")
        if gemini:
            early: _Reply | _ChatRequest | None = _gemini._precheck(route, body, auth)
        elif anthropic:
            early = _anthropic._precheck(route, body, auth, header("anthropic-version"), request_id)
        elif route.kind == "responses":
            early = _responses._precheck(route, body, auth, sent_key)
        else:
            early = _precheck(method, url.path, route, body, auth, sent_key)
        if isinstance(early, _ChatRequest):
            early.credential = credential
        entry: JsonDict | None = None
        if self._log_requests and gemini:
            entry = _gemini._log_entry(method, url, body, auth, request_id, route.deployment)
        elif self._log_requests:
            body_model = body.get("model") if isinstance(body, dict) else None
            model = route.deployment or (body_model if isinstance(body_model, str) else None)
            entry = _new_entry(method, url.path, model, body, auth, request_id)
        with self._lock:
            if entry is not None:
                self._log.append(entry)
            if in_process and self._phase_start is None:
                self._phase_start = time.monotonic()
            self._apply_due_phases()
            if isinstance(early, _Reply):
                reply = early
            elif early is None:
                reply = _Reply(200, self._model_list())
            else:
                reply = self._answer_chat(early, request_id)
            if entry is not None:
                entry["status"] = None if reply.disconnect else reply.status
                entry["fault"] = reply.fault
        if anthropic:
            reply.headers.setdefault("request-id", request_id)
            reply.provider_headers = False  # no openai-* headers
        elif not gemini:  # the Gemini API sends no request id
            reply.headers.setdefault("x-request-id", request_id)
        return reply

    def _model_list(self) -> JsonDict:
        data = [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fpwatch-simulator"}
            for name in self._settings
            if name != "*"
        ]
        return {"object": "list", "data": data}

    def _answer_chat(self, req: _ChatRequest, request_id: str) -> _Reply:
        behaviour = self._behaviour_for(req.model)
        gemini = req.route.kind == "gemini"
        anthropic = req.route.kind == "anthropic"
        responses = req.route.kind == "responses"
        if behaviour is None and anthropic:
            return _anthropic._not_found(req.model, request_id)
        if behaviour is None:
            return _gemini._not_found(req.model) if gemini else _model_not_found(req.model, bool(req.route.deployment))
        if behaviour.rejects:
            if anthropic:
                refusal = _anthropic._refusal(req, behaviour.rejects, request_id)
            elif responses:
                refusal = _responses._refusal(req, behaviour.rejects)
            else:
                refusal = (_gemini._refusal if gemini else _refusal)(req, behaviour.rejects)
            if refusal is not None:
                return refusal
        fault = self._next_fault(req.model, behaviour)
        delay = behaviour.delay(self._rng)
        if fault is not None and "replace" in fault:  # a malformed answer: a complete one, fields replaced
            reply = _Reply(200, _replaced(self._completion(req, behaviour), fault["replace"]), fault=fault["kind"])
        elif fault is not None and fault["kind"] != "timeout":
            reply = _FAULT_REPLIES.get(req.route.kind, _fault_reply)(fault, req.model, request_id)
        else:
            reply = _Reply(200, self._completion(req, behaviour))
            if fault is not None:
                reply.fault = "timeout"
                delay += fault.get("delay", _DEFAULT_FAULT_DELAY)
        if gemini:
            reply.provider_headers = False  # no openai-* headers from Google
        if "request_id" in behaviour.echo_key and req.credential and reply.status == 200:
            reply.headers["request-id" if anthropic else "x-request-id"] = f"req_{req.credential}"
        reply.delay = delay
        return reply

    def _completion(self, req: _ChatRequest, behaviour: _Behaviour) -> JsonDict:
        rng = self._rng
        answerer = behaviour.answerer(rng)
        fingerprint = answerer.fingerprint(req.model, rng)  # before the answer: replicas may differ
        replica = answerer.replicas.get(fingerprint) if answerer.replicas else None
        lookup, shift = replica if replica is not None else (answerer.lookup, answerer.logprob_shift)
        source = lookup.find(req.model, req.prompt)
        answer = source.draw(rng)
        pieces = _pieces(answer)
        finish = "stop"
        if req.limit is not None and len(pieces) > req.limit:
            pieces = pieces[: req.limit]
            answer = "".join(pieces)
            finish = "length"
        logprobs = (
            self._logprobs(pieces, source, req.top_logprobs, answerer.logprob_jitter, shift)
            if req.logprobs and "logprobs" not in behaviour.ignores
            else None
        )
        resolved = answerer.resolve(req.model, rng)
        if req.route.kind == "anthropic":  # no fingerprint or logprobs on the wire: the draw only picked the replica
            tier = answerer.echoes.get("service_tier", "standard")
            message = _anthropic._message_body(req, answer, len(pieces), finish == "length", resolved, tier)
            if behaviour.echo_key and req.credential:
                return _anthropic._echoed(message, req.credential, behaviour.echo_key)
            return message
        if req.route.kind == "responses":  # no fingerprint on the wire: the echoed settings stand for it
            response = _responses._response_body(
                req, answer, len(pieces), finish == "length", resolved, logprobs, answerer.echoes
            )
            if behaviour.echo_key and req.credential:
                return _responses._echoed(response, req.credential, behaviour.echo_key)
            return response
        if req.route.kind == "gemini":  # no fingerprint on the wire: the draw above only picked the replica
            body = _gemini._content_body(req, answer, len(pieces), finish == "length", resolved, logprobs)
            if behaviour.echo_key and req.credential:
                return _gemini._echoed(body, req.credential, behaviour.echo_key)
            return body
        body = _completion_body(req, answer, finish, len(pieces), logprobs, resolved, fingerprint)
        return _echoed(body, req.credential, behaviour.echo_key) if behaviour.echo_key and req.credential else body

    def _logprobs(self, pieces: list[str], source: _Source, top_n: int, jitter: float, shift: float) -> JsonDict:
        """First token: ln P(first token) under the answer distribution; later tokens: near-certain.

        `shift` moves every first token but the most likely one (capped at -0.0001).
        """
        if not pieces:
            return {"content": [], "refusal": None}
        rng = self._rng
        first = pieces[0]
        ranked = source.first_tokens[:top_n]
        most_likely = source.first_tokens[0][0]
        # One value per token, so the chosen token and its top_logprobs entry agree; the chosen token
        # draws its noise first, then the ranked tokens in order.
        logprobs = source.first_logprob
        values: dict[str, float] = {}
        for token in [first, *[token for token, _ in ranked]]:
            if token in values:
                continue
            value = logprobs[token] + (rng.gauss(0.0, jitter) if jitter else 0.0)
            moved = shift and token != most_likely
            values[token] = min(_MIN_SHIFTED_LOGPROB, value + shift) if moved else min(0.0, value)
        chosen = values[first]
        top = [(token, values[token]) for token, _ in ranked]
        top.sort(key=lambda item: -item[1])
        content = [_token_logprob(first, chosen, top)]
        for piece in pieces[1:]:
            value = min(0.0, -0.001 + (rng.gauss(0.0, jitter) if jitter else 0.0))
            content.append(_token_logprob(piece, value, [(piece, value)] if top_n else []))
        return {"content": content, "refusal": None}

    # ---- admin endpoints

    def _handle_admin(self, method: str, path: str, raw: bytes) -> _Reply:
        try:
            return self._admin_route(method, path, raw)
        except ValueError as exc:
            return _admin_reply(400, {"error": str(exc)})

    def _admin_route(self, method: str, path: str, raw: bytes) -> _Reply:
        if path == "/_sim/scenario":
            if method == "GET":
                return _admin_reply(200, self._snapshot())
            if method == "PUT":
                self.set_scenario(_admin_json(raw))
                return _admin_reply(200, self._snapshot())
            return _admin_not_allowed(method, path, "GET, PUT")
        if path == "/_sim/requests":
            if method == "GET":
                return _admin_reply(200, self.requests())
            if method == "DELETE":
                self.clear_requests()
                return _admin_reply(200, {"cleared": True})
            return _admin_not_allowed(method, path, "GET, DELETE")
        prefix = "/_sim/models/"
        if path.startswith(prefix) and len(path) > len(prefix):
            return self._admin_model(method, path[len(prefix) :], raw)
        return _admin_reply(404, {"error": f"no admin endpoint {method} {path}"})

    def _admin_model(self, method: str, rest: str, raw: bytes) -> _Reply:
        if rest.endswith("/faults"):
            if method != "POST":
                return _admin_not_allowed(method, f"/_sim/models/{rest}", "POST")
            name = unquote(rest[: -len("/faults")])
            self.push_faults(name, _admin_json(raw))
            with self._lock:
                pending = len(self._faults.get(name, ()))
            return _admin_reply(200, {"model": name, "pending_faults": pending})
        if method != "PATCH":
            return _admin_not_allowed(method, f"/_sim/models/{rest}", "PATCH")
        name = unquote(rest)
        self.update_model(name, _admin_json(raw))
        return _admin_reply(200, {"model": name, "settings": self._snapshot()["models"][name]})


def _admin_reply(status: int, payload: object) -> _Reply:
    return _Reply(status, payload, provider_headers=False)


def _admin_not_allowed(method: str, path: str, allowed: str) -> _Reply:
    reply = _admin_reply(405, {"error": f"{method} is not allowed on {path}; use {allowed}"})
    reply.headers["Allow"] = allowed
    return reply


def _admin_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None


# --------------------------------------------------------------------------- serving


def serve(host: str, port: int, scenario: dict[str, Any] | None, api_key: str | None, seed: int | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (for `fpwatch simulate`)."""
    simulator = Simulator(scenario, host=host, port=port, api_key=api_key, seed=seed)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        simulator.start()
        print(f"fpwatch simulator listening on {simulator.base_url}", flush=True)
        while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
            pass
    finally:
        simulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

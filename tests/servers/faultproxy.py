"""Fault injection: an HTTP proxy between walship and a store, on a schedule.

    proxy = FaultProxy(upstream_port, flavor="s3")
    proxy.plan("reset", method="PUT", times=2)      # the next 2 PUTs: RST, not forwarded
    proxy.plan("reset_after", method="PUT")         # forward, then RST instead of the answer
    proxy.plan("503", times=3)                      # 503 SlowDown / ServerBusy / JSON error
    proxy.plan("stall", method="GET", seconds=5)    # half the body, then silence, then RST
    proxy.outage("reset")                           # every request until proxy.clear()

Rules are matched in order; a rule with ``times`` runs out. ``log`` keeps
(method, path, action) of every request so tests can count attempts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .httpproxy import Handler, Proxy, Request, Response

ACTIONS = ("pass", "reset", "reset_after", "403", "500", "503", "slowdown", "stall", "truncate")


@dataclass
class Rule:
    action: str
    method: str | None
    path_contains: str | None
    times: int | None
    seconds: float


def _error_body(flavor: str, status: int, action: str) -> tuple[str, bytes]:
    if status == 403:
        if flavor == "gcs":
            return "application/json", b'{"error": {"code": 403, "message": "injected denial"}}'
        code = "AuthorizationPermissionMismatch" if flavor == "azure" else "AccessDenied"
        return "application/xml", (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            "<Message>injected denial</Message></Error>"
        ).encode()
    if flavor == "gcs":
        return "application/json", (
            f'{{"error": {{"code": {status}, "message": "injected {action}"}}}}'.encode()
        )
    if flavor == "azure":
        code = "ServerBusy" if status == 503 else "InternalError"
        return "application/xml", (
            f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>injected {action}</Message></Error>"
        ).encode()
    code = {"slowdown": "SlowDown", "503": "ServiceUnavailable"}.get(action, "InternalError")
    return "application/xml", (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected {action}</Message><RequestId>x</RequestId></Error>"
    ).encode()


class FaultProxy(Proxy):
    def __init__(self, upstream_port: int, *, flavor: str = "s3") -> None:
        super().__init__(upstream_port)
        self.flavor = flavor
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, str]] = []

    def plan(
        self,
        action: str,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int | None = 1,
        seconds: float = 0.0,
    ) -> None:
        assert action in ACTIONS, action
        with self.lock:
            self.rules.append(Rule(action, method, path_contains, times, seconds))

    def outage(self, action: str = "reset", **kw: object) -> None:
        self.plan(action, times=None, **kw)  # type: ignore[arg-type]

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.log.clear()

    def count(self, method: str, action: str | None = None) -> int:
        with self.lock:
            return sum(1 for m, _, a in self.log if m == method and (action is None or a == action))

    def _pick(self, req: Request) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.method and rule.method != req.method:
                    continue
                if rule.path_contains and rule.path_contains not in req.path:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
                return rule
        return None

    def handle_request(self, h: Handler, req: Request) -> None:
        rule = self._pick(req)
        action = rule.action if rule else "pass"
        with self.lock:
            self.log.append((req.method, req.path, action))
        if action == "pass":
            return super().handle_request(h, req)
        if action == "reset":
            return h.reset()
        if action == "reset_after":
            h.forward(req)  # the store gets and applies the whole request ...
            return h.reset()  # ... but the client never learns the outcome
        if action in ("403", "500", "503", "slowdown"):
            status = {"403": 403, "500": 500}.get(action, 503)
            ctype, body = _error_body(self.flavor, status, action)
            reason = {403: "Forbidden", 500: "Internal Server Error"}.get(status, "Unavailable")
            headers = [("Content-Type", ctype)]
            if self.flavor == "azure":
                code = "AuthorizationPermissionMismatch" if status == 403 else "ServerBusy"
                headers.append(("x-ms-error-code", code))
            if req.method == "HEAD":
                body = b""
            return h.send(Response(status, reason, headers, body))
        resp = h.forward(req)
        assert rule is not None
        if action == "truncate" or (action == "stall" and len(resp.body) < 2):
            half = resp.body[: len(resp.body) // 2]
            self._send_partial(h, resp, half)
            return h.reset()
        # stall: headers and half the body, then nothing for `seconds`, then RST
        half = resp.body[: len(resp.body) // 2]
        self._send_partial(h, resp, half)
        time.sleep(rule.seconds)
        return h.reset()

    @staticmethod
    def _send_partial(h: Handler, resp: Response, part: bytes) -> None:
        h.send_response_only(resp.status, resp.reason)
        for k, v in resp.headers:
            if k.lower() in ("connection", "transfer-encoding", "keep-alive"):
                continue
            h.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in resp.headers):
            h.send_header("Content-Length", str(len(resp.body)))
        h.end_headers()
        h.wfile.write(part)
        h.wfile.flush()

"""Enforces GCS ``ifGenerationMatch=0`` in front of fake-gcs-server.

fake-gcs-server accepts the precondition but does not reliably enforce it. This
proxy makes uploads carrying ``ifGenerationMatch=0`` conditional for real:
under one lock it asks the server whether the object exists and answers 412
(as GCS does) if so, else forwards the upload. Resumable uploads are checked
when their final chunk arrives. Tests thus prove that walship *sends* the
precondition and maps its 412; an upload without the precondition would
silently overwrite.

It also answers resumable-upload status queries (``Content-Range: bytes */*``)
as GCS does (308 with the persisted ``Range``, or the finished object), which
fake-gcs-server does not implement: it would finish the upload instead.
"""

from __future__ import annotations

import json
import threading
import urllib.parse

from .httpproxy import Handler, Proxy, Request, Response

PRECONDITION_FAILED = json.dumps(
    {
        "error": {
            "code": 412,
            "message": "At least one of the pre-conditions you specified did not hold.",
            "errors": [{"reason": "conditionNotMet", "message": "Precondition Failed"}],
        }
    }
).encode()


def _multipart_name(req: Request) -> str | None:
    ctype = req.header("Content-Type") or ""
    if "boundary=" not in ctype:
        return None
    boundary = ctype.split("boundary=", 1)[1].strip().strip('"').encode()
    parts = req.body.split(b"--" + boundary)
    for part in parts:
        head, _, body = part.partition(b"\r\n\r\n")
        if b"application/json" in head.lower():
            try:
                name = json.loads(body.strip()).get("name")
            except ValueError:
                return None
            return str(name) if name else None
    return None


class GcsPreconditionProxy(Proxy):
    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.lock = threading.Lock()
        self.sessions: dict[str, tuple[str, str]] = {}
        self.persisted: dict[str, int] = {}
        self.finished: dict[str, Response] = {}
        self.enforced = 0

    def _exists(self, h: Handler, bucket: str, name: str) -> bool:
        path = (
            f"/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o/"
            f"{urllib.parse.quote(name, safe='')}"
        )
        resp = h.forward(Request("GET", path, [("Host", f"127.0.0.1:{self.port}")], b""))
        return resp.status == 200

    def _refuse(self, h: Handler) -> None:
        self.enforced += 1
        h.send(
            Response(
                412,
                "Precondition Failed",
                [("Content-Type", "application/json; charset=UTF-8")],
                PRECONDITION_FAILED,
            )
        )

    def _track(self, upload_id: str, crange: str, resp: Response) -> None:
        with self.lock:
            if resp.status in (200, 201):
                self.finished[upload_id] = resp
            elif resp.status == 308:
                end = crange.split(" ", 1)[1].split("/", 1)[0].split("-")[1]
                self.persisted[upload_id] = int(end) + 1

    def _status(self, h: Handler, upload_id: str, crange: str) -> None:
        with self.lock:
            done = self.finished.get(upload_id)
            have = self.persisted.get(upload_id, 0)
        if done is not None:
            return h.send(done)
        if not crange.endswith("/*") and int(crange.rsplit("/", 1)[1]) == have:
            # "bytes */N" with everything sent: finish the (possibly empty-tail) upload
            resp = h.forward(Request("PUT", h.path, [("Content-Range", crange)], b""))
            self._track(upload_id, crange, resp)
            return h.send(resp)
        headers = [("Content-Length", "0")]
        if have:
            headers.append(("Range", f"bytes=0-{have - 1}"))
        return h.send(Response(308, "Resume Incomplete", headers, b""))

    def handle_request(self, h: Handler, req: Request) -> None:
        url = urllib.parse.urlsplit(req.path)
        query = urllib.parse.parse_qs(url.query)
        parts = url.path.split("/")
        # /upload/storage/v1/b/{bucket}/o
        is_upload = url.path.startswith("/upload/storage/v1/b/") and len(parts) >= 7
        if not is_upload:
            return super().handle_request(h, req)
        bucket = urllib.parse.unquote(parts[5])
        upload_type = (query.get("uploadType") or [""])[0]
        conditional = (query.get("ifGenerationMatch") or [""])[0] == "0"
        if req.method == "POST" and upload_type == "resumable":
            resp = h.forward(req)
            if conditional and resp.status in (200, 201):
                name = (query.get("name") or [""])[0]
                if not name and req.body:
                    name = str(json.loads(req.body).get("name", ""))
                for k, v in resp.headers:
                    if k.lower() == "location":
                        q = urllib.parse.parse_qs(urllib.parse.urlsplit(v).query)
                        upload_id = (q.get("upload_id") or [""])[0]
                        with self.lock:
                            self.sessions[upload_id] = (bucket, name)
            return h.send(resp)
        if req.method == "PUT" and upload_type == "resumable":
            upload_id = (query.get("upload_id") or [""])[0]
            crange = req.header("Content-Range") or ""
            if crange.startswith("bytes */"):
                return self._status(h, upload_id, crange)
            final = not crange.endswith("/*")
            with self.lock:
                target = self.sessions.get(upload_id)
            if target is not None and final:
                with self.lock:
                    if self._exists(h, *target):
                        self.sessions.pop(upload_id, None)
                        return self._refuse(h)
                    resp = h.forward(req)
                    if resp.status in (200, 201):
                        self.sessions.pop(upload_id, None)
            else:
                resp = h.forward(req)
            self._track(upload_id, crange, resp)
            return h.send(resp)
        if req.method == "POST" and conditional:
            name = (query.get("name") or [""])[0] or _multipart_name(req) or ""
            with self.lock:
                if self._exists(h, bucket, name):
                    return self._refuse(h)
                resp = h.forward(req)
            return h.send(resp)
        return super().handle_request(h, req)

"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the S3 server (tests only).

Each request is, with seeded probabilities, answered with ``503 SlowDown``, cut off with a
connection reset, delayed, or forwarded untouched. The Host header is forwarded as received, so
SigV4 signatures made for the proxy's address stay valid. Bounded: it serves until stopped.

Multipart completion (``POST <key>?uploadId=...``, CompleteMultipartUpload) can be given its own
fault, ``on_complete``, for its first ``complete_faults`` requests (later ones are forwarded):

- ``"503"``: answered with 503 SlowDown; the upload stays incomplete upstream.
- ``"500"``: answered with 500 InternalError; the upload stays incomplete upstream.
- ``"reset"``: cut off before forwarding; the upload stays incomplete upstream.
- ``"reset_after"``: forwarded (the object becomes visible upstream), then the answer is cut
  off: the client cannot know that the completion succeeded.

``counts`` also counts the multipart requests seen: ``create_mpu``, ``part``, ``complete``,
``abort``.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
            b"<Message>We encountered an internal error. Please try again.</Message></Error>")
COMPLETE_FAULTS = ("503", "500", "reset", "reset_after")


def multipart_kind(method: str, path: str) -> str | None:
    """Which multipart request this is, if any (``create_mpu``, ``part``, ``complete``, ``abort``)."""
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    if method == "POST" and "uploads" in query:
        return "create_mpu"
    if "uploadId" in query:
        if method == "PUT" and "partNumber" in query:
            return "part"
        return {"POST": "complete", "DELETE": "abort"}.get(method)
    return None


class FaultProxy:
    def __init__(self, upstream: str, seed: int, p503: float = 0.0, preset: float = 0.0,
                 pdelay: float = 0.0, delay: float = 0.5, on_complete: str | None = None,
                 complete_faults: int = 1 << 30) -> None:
        if on_complete not in (None, *COMPLETE_FAULTS):
            raise ValueError(f"on_complete must be one of {COMPLETE_FAULTS}")
        host, port = upstream.replace("http://", "").split(":")
        self.upstream = (host, int(port))
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.p503, self.preset, self.pdelay, self.delay = p503, preset, pdelay, delay
        self.on_complete, self.complete_faults = on_complete, complete_faults
        self.counts = {"forwarded": 0, "503": 0, "reset": 0, "delayed": 0, "create_mpu": 0,
                       "part": 0, "complete": 0, "abort": 0, "complete_faulted": 0}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._draw(multipart_kind(self.command, self.path))
                if fault in ("503", "500"):
                    answer = SLOWDOWN if fault == "503" else INTERNAL
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                if fault == "reset":
                    self._reset()
                    return
                if fault == "delay":
                    time.sleep(proxy.delay)
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault == "reset_after":  # done upstream; the client never hears of it
                    self._reset()
                    return
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                # A HEAD answer has no body but the object's length: pass that one on.
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _reset(self) -> None:
                # RST instead of FIN: the client sees "connection reset by peer".
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _draw(self, multipart: str | None = None) -> str:
        with self.lock:
            if multipart:
                self.counts[multipart] += 1
            if (multipart == "complete" and self.on_complete
                    and self.counts["complete_faulted"] < self.complete_faults):
                self.counts["complete_faulted"] += 1
                return self.on_complete
            r = self.rng.random()
            if r < self.p503:
                fault = "503"
            elif r < self.p503 + self.preset:
                fault = "reset"
            elif r < self.p503 + self.preset + self.pdelay:
                fault = "delayed"
            else:
                fault = "forwarded"
            self.counts[fault] += 1
            return "delay" if fault == "delayed" else fault

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

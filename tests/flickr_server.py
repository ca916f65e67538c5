"""A local stand-in for Flickr's REST endpoint, for offline tests and the benchmark.

It listens on 127.0.0.1 (a random free port), answers ``flickr.photos.geo.getLocation`` in
Flickr's own formats (JSON when flickrapi asks ``format=json``, XML for ``format=rest``),
counts every call, and shuts itself down after ``lifetime_s`` seconds or ``max_requests``
requests, whichever comes first, so a failed test never leaves it running.

Behaviour per photo id (``photos`` dict):
  (lat, lon)             -> success with that location (accuracy 16, no country)
  (lat, lon, acc, name)  -> success with Flickr's accuracy level and country name
  ("error", code, msg)   -> Flickr error ``code`` (e.g. 95 "SSL is required", 112 "Method not
                            found", 116 "Bad URL found", or a code Flickr does not document)
  "no_location"          -> Flickr error 2 "Photo has no location information"
  "not_found"            -> Flickr error 1 "Photo not found" (deleted or private)
  ("http", code, n)      -> HTTP ``code`` (e.g. 500, 429) for the first n calls, then the
                            location in ``fallback`` (default (0, 0)) -- transient failures
  unknown photo id       -> error 1
A consumer key not in ``valid_keys`` gets error 100 "Invalid API Key (Key has invalid format)".
"""
from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FlickrStub:
    def __init__(self, photos, *, valid_keys=("testkey",), lifetime_s=120.0, max_requests=100_000,
                 fallback=(0.0, 0.0)):
        self.photos = dict(photos)
        self.valid_keys = set(valid_keys)
        self.calls = Counter()  # photo id -> number of getLocation calls
        self.http_calls = 0
        self.max_requests = max_requests
        self.fallback = fallback
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output quiet
                pass

            def _params(self):
                q = parse_qs(urlsplit(self.path).query)
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    q.update(parse_qs(self.rfile.read(n).decode("utf-8")))
                return {k: v[0] for k, v in q.items()}

            def do_GET(self):
                self._answer(self._params())

            def do_POST(self):
                self._answer(self._params())

            def _send(self, code, body, ctype):
                data = body.encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, p):
                with stub._lock:
                    stub.http_calls += 1
                    over = stub.http_calls > stub.max_requests
                if over:
                    self._send(503, "stub request budget spent", "text/plain")
                    return
                auth = self.headers.get("Authorization", "")
                m = re.search(r'oauth_consumer_key="([^"]*)"', auth)
                key = m.group(1) if m else p.get("api_key", "")
                fmt = p.get("format", "rest")
                if key not in stub.valid_keys:
                    self._error(fmt, 100, "Invalid API Key (Key has invalid format)")
                    return
                if p.get("method") != "flickr.photos.geo.getLocation":
                    self._error(fmt, 112, f"Method \"{p.get('method')}\" not found")
                    return
                pid = p.get("photo_id", "")
                with stub._lock:
                    stub.calls[pid] += 1
                    n = stub.calls[pid]
                b = stub.photos.get(pid, "not_found")
                if isinstance(b, tuple) and b and b[0] == "http":
                    _, code, times = b
                    if n <= times:
                        self._send(code, "<html>try again later</html>", "text/html")
                        return
                    b = stub.fallback
                if b == "no_location":
                    self._error(fmt, 2, "Photo has no location information.")
                elif isinstance(b, tuple) and b and b[0] == "error":
                    self._error(fmt, b[1], b[2])
                elif b == "not_found" or not isinstance(b, tuple):
                    self._error(fmt, 1, "Photo not found")
                else:
                    lat, lon, acc, country = (*b, 16, None) if len(b) == 2 else b
                    self._ok(fmt, pid, lat, lon, acc, country)

            def _ok(self, fmt, pid, lat, lon, acc=16, country=None):
                if fmt == "json":
                    loc = {"latitude": f"{lat:.6f}", "longitude": f"{lon:.6f}", "accuracy": str(acc),
                           "context": "0"}
                    if country is not None:  # Flickr's own reverse geocoding, as getLocation returns it
                        loc["country"] = {"_content": country, "place_id": "x", "woeid": "1"}
                    body = json.dumps({"photo": {"id": pid, "location": loc}, "stat": "ok"})
                    self._send(200, body, "application/json")
                else:
                    body = (f'<?xml version="1.0" encoding="utf-8" ?>\n<rsp stat="ok">\n'
                            f'<photo id="{pid}"><location latitude="{lat:.6f}" longitude="{lon:.6f}" '
                            f'accuracy="{acc}" context="0" /></photo>\n</rsp>\n')
                    self._send(200, body, "text/xml")

            def _error(self, fmt, code, msg):
                if fmt == "json":
                    self._send(200, json.dumps({"stat": "fail", "code": code, "message": msg}), "application/json")
                else:
                    body = (f'<?xml version="1.0" encoding="utf-8" ?>\n<rsp stat="fail">\n'
                            f'<err code="{code}" msg="{msg}" />\n</rsp>\n')
                    self._send(200, body, "text/xml")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/rest/"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    def start(self):
        self._thread.start()
        self._timer.start()
        return self

    def stop(self):
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def total_calls(self):
        return sum(self.calls.values())

"""The transport over HTTP/1.1: one keep-alive connection, KServe v2 with binary tensors."""

from __future__ import annotations

import http.client
import json

from tsrepo.client import failures, kserve
from tsrepo.client.transport import Protocol, Transport, config_text, model_path, repository_path
from tsrepo.errors import ClientError


class HttpTransport(Transport):
    protocol = Protocol.HTTP

    def __init__(self, address, timeout: float):
        super().__init__(address, timeout)
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(response, body bytes) for any status; only wire failures raise."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.address.host, self.address.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                resp = self._conn.getresponse()
                return resp, resp.read()
            except failures.STALE_CONNECTION:
                self.close()  # a keep-alive connection the server dropped: retry once on a fresh one
                if attempt:
                    raise self._fail(failures.LOST, path, "the server closed the connection") from None
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.close()
                raise self._fail(failures.from_exception(e), path, getattr(e, "strerror", None) or str(e)) from None
        raise AssertionError("unreachable")

    def _fail(self, f: failures.Failure, path: str, detail: str) -> ClientError:
        if f is failures.TIMEOUT:
            return f.error(f"{self.url}{path}: no answer within {self.timeout:g} s")
        if f is failures.BAD_ANSWER:
            return f.error(f"{self.url}{path}: the answer is not KServe v2 HTTP (is this the right port?): {detail}")
        if f is failures.REFUSED_CONNECTION:
            detail = "connection refused"
        return f.error(f"server not reachable at {self.url}: {detail}")

    def _checked(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        resp, data = self.request(method, path, body, headers)
        if resp.status != 200:
            f = failures.from_http_status(resp.status)
            raise f.error(f"{self.url}{path}: HTTP {resp.status}: {kserve.error_text(data)}")
        return resp, data

    def _json(self, data: bytes, path: str):
        try:
            return json.loads(data or b"null")
        except ValueError:
            raise failures.BAD_ANSWER.error(f"{self.url}{path}: the answer is not JSON: {data[:200]!r}") from None

    def get_json(self, path: str):
        return self._json(self._checked("GET", path)[1], path)

    def post_json(self, path: str, body: dict):
        data = self._checked("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})[1]
        return self._json(data, path)

    def _status(self, path: str) -> int:
        return self.request("GET", path)[0].status

    def live(self) -> bool:
        return self._status("/v2/health/live") == 200

    def server_ready(self) -> bool:
        return self._status("/v2/health/ready") == 200

    def model_ready(self, model: str, version: int | None = None) -> bool:
        return self._status(model_path(model, version) + "/ready") == 200

    def metadata(self, model: str) -> dict:
        return self.get_json(model_path(model))

    def config(self, model: str) -> dict:
        return self.get_json(model_path(model) + "/config")

    def infer(self, model, version, inputs, outputs):
        body, hlen = kserve.encode_infer(inputs, outputs)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(hlen)}
        path = model_path(model, version) + "/infer"
        resp, data = self._checked("POST", path, body, headers)
        hl = resp.getheader("Inference-Header-Content-Length")
        try:
            return kserve.decode_infer(data, int(hl) if hl else None)
        except (ValueError, KeyError, TypeError) as e:
            raise failures.BAD_ANSWER.error(f"{self.url}{path}: cannot decode the answer: {e}") from None

    def statistics(self, model: str) -> dict:
        return self.get_json(model_path(model) + "/stats")

    def repository_index(self) -> list[dict]:
        return self.post_json("/v2/repository/index", {}) or []

    def load(self, model: str, config: dict | str | None = None) -> None:
        body = {"parameters": {"config": config_text(config)}} if config is not None else {}
        self.post_json(repository_path(model, "load"), body)

    def unload(self, model: str) -> None:
        self.post_json(repository_path(model, "unload"), {})

"""The transport's repository calls and the one failure mapping, against small fake servers."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from typing import ClassVar

import pytest

from tsrepo.client import failures, loadgen, transport
from tsrepo.errors import ServerRefused, ServerTimeout, ServerUnreachable
from tsrepo.serve.ports import free_port


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Recorder.seen.append((self.path, json.loads(body or b"{}")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_load_sends_the_config_override_as_kserve_parameters_and_unload_its_own_path():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with transport.connect(f"127.0.0.1:{server.server_address[1]}", "http", 2) as client:
            client.load("m", {"max_batch_size": 2})
            client.load("m")
            client.unload("m")
    finally:
        server.shutdown()
    assert _Recorder.seen == [
        ("/v2/repository/models/m/load", {"parameters": {"config": '{"max_batch_size": 2}'}}),
        ("/v2/repository/models/m/load", {}),
        ("/v2/repository/models/m/unload", {}),
    ]


def test_the_load_loop_counts_failures_from_the_transports_mapping():
    assert failures.from_exception(ConnectionRefusedError()).error is ServerUnreachable
    assert failures.from_exception(TimeoutError()).error is ServerTimeout
    assert failures.from_grpc_code("StatusCode.DEADLINE_EXCEEDED").error is ServerTimeout
    assert failures.from_grpc_code("UNAVAILABLE").unreachable
    assert failures.from_grpc_code("INVALID_ARGUMENT") == failures.Failure(ServerRefused, "gRPC INVALID_ARGUMENT")
    assert failures.from_http_status(400) == failures.Failure(ServerRefused, "HTTP 400")

    conn = loadgen.HttpConnection("127.0.0.1", free_port())
    with pytest.raises(loadgen.RequestFailed) as e:
        asyncio.run(conn.send(b"GET / HTTP/1.1\r\n\r\n"))
    assert e.value.failure is failures.REFUSED_CONNECTION
    records = loadgen.Records()
    records.add(1.0, 0.1, e.value.failure)
    records.add(2.0, 0.1, failures.from_http_status(400))
    assert records.errors == {"connection refused": 1, "HTTP 400": 1} and records.last_connection_error == 1.0


def test_grpc_to_nothing_is_unreachable_not_a_timeout():
    with pytest.raises(ServerUnreachable, match="server not reachable"):
        transport.connect(f"127.0.0.1:{free_port()}", "grpc", 5).server_ready()


def test_an_unknown_protocol_is_a_usage_error():
    from tsrepo.errors import UsageError

    with pytest.raises(UsageError, match="--protocol"):
        transport.connect("127.0.0.1:1", "https")

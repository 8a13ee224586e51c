"""The KServe v2 client pieces: binary tensor encoding, and the three kinds of failure kept apart."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import numpy as np
import pytest

from tsrepo.client import kserve, transport
from tsrepo.errors import ServerRefused, ServerTimeout, ServerUnreachable
from tsrepo.serve.ports import free_port


def test_binary_request_carries_every_tensor_and_decodes_back():
    arrays = {
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "x": np.linspace(0, 1, 4, dtype=np.float32).reshape(2, 2),
        "mask": np.array([[True], [False]]),
    }
    body, head_len = kserve.encode_infer(arrays, ["out"])
    header = json.loads(body[:head_len])
    assert [i["name"] for i in header["inputs"]] == ["ids", "x", "mask"]
    assert [i["datatype"] for i in header["inputs"]] == ["INT64", "FP32", "BOOL"]
    assert sum(i["parameters"]["binary_data_size"] for i in header["inputs"]) == len(body) - head_len
    assert header["outputs"] == [{"name": "out", "parameters": {"binary_data": True}}]
    # A response in the same format decodes to the same arrays (strings included).
    names = np.array([b"cat", b"bird"], dtype=np.object_)
    raw_names = b"".join(len(s).to_bytes(4, "little") + s for s in names)
    response_head = json.dumps(
        {
            "outputs": [
                {"name": "x", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
                {
                    "name": "labels",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw_names)},
                },
            ]
        }
    ).encode()
    decoded = kserve.decode_infer(response_head + arrays["x"].tobytes() + raw_names, len(response_head))
    np.testing.assert_array_equal(decoded["x"], arrays["x"])
    assert decoded["labels"].tolist() == [b"cat", b"bird"]


def test_nothing_listening_is_unreachable():
    with pytest.raises(ServerUnreachable, match="connection refused"):
        transport.connect(f"127.0.0.1:{free_port()}", "http", timeout=2).metadata("m")


def test_a_silent_server_is_a_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections (backlog) and never answers
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ServerTimeout, match="no answer within 0.5 s"):
            transport.connect(url, "http", timeout=0.5).metadata("m")


def test_an_error_answer_is_refused_with_the_servers_message():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"error": "Request for unknown model: 'm' is not found"}).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ServerRefused, match="HTTP 400: Request for unknown model: 'm' is not found"):
            transport.connect(url, "http", timeout=2).metadata("m")
    finally:
        server.shutdown()

"""The load generator's own gRPC client (HTTP/2 by hand) against a real tritonserver's gRPC port."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tsrepo.client import grpc_wire, loadgen
from tsrepo.client.address import parse_address
from tsrepo.serve.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _success_count(url: str, model: str) -> int:
    stats = grpcclient.InferenceServerClient(url).get_inference_statistics(model, as_json=True)
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))


def _channel(url: str, model: str, inputs: list[dict]) -> grpc_wire.Channel:
    address = parse_address(url)
    return grpc_wire.Channel(address.host, address.port, loadgen.grpc_requests(model, inputs))


async def _calls(channel: grpc_wire.Channel, count: int, in_flight: int) -> list[BaseException | None]:
    """`count` calls, `in_flight` at a time; the failure of each (None for a success)."""
    results: list[BaseException | None] = []

    async def user(start: int) -> None:
        for i in range(start, count, in_flight):
            try:
                await channel.send(i)
                results.append(None)
            except loadgen.RequestFailed as e:
                results.append(e)

    try:
        await asyncio.wait_for(asyncio.gather(*(user(u) for u in range(in_flight))), timeout=60)
    finally:
        await channel.close()
    return results


def test_concurrent_calls_are_all_answered_and_counted_by_the_server(example_server):
    x = {"input_ids": np.arange(16, dtype=np.int64).reshape(1, 16)}
    before = _success_count(example_server.grpc_url, "text_encoder")
    results = asyncio.run(_calls(_channel(example_server.grpc_url, "text_encoder", [x]), 300, 12))
    assert results == [None] * 300
    assert _success_count(example_server.grpc_url, "text_encoder") - before == 300


def test_requests_larger_than_the_flow_control_window_wait_for_it_and_arrive_whole(example_server):
    # 8 x 3x64x64 float32 = 393,216 bytes a request: six times HTTP/2's initial 65,535-byte window and
    # 24 frames of 16 KiB, four of them in flight on one connection.
    rng = np.random.default_rng(0)
    sets = [{"image": rng.standard_normal((8, 3, 64, 64), dtype=np.float32)} for _ in range(2)]
    before = _success_count(example_server.grpc_url, "resnet_small")
    results = asyncio.run(_calls(_channel(example_server.grpc_url, "resnet_small", sets), 12, 4))
    assert results == [None] * 12
    assert _success_count(example_server.grpc_url, "resnet_small") - before == 12


def test_a_refused_request_fails_with_the_servers_code_and_the_connection_stays_usable(example_server):
    wrong = {"input_ids": np.zeros((1, 16), dtype=np.float32)}  # the model takes int64
    right = {"input_ids": np.zeros((1, 16), dtype=np.int64)}
    channel = _channel(example_server.grpc_url, "text_encoder", [wrong, right])

    async def run():
        outcomes = []
        for i in range(4):
            try:
                await channel.send(i)
                outcomes.append("ok")
            except loadgen.RequestFailed as e:
                outcomes.append(e.failure.kind)
        connection = channel.connection
        await channel.close()
        return outcomes, connection

    outcomes, connection = asyncio.run(run())
    assert outcomes == ["gRPC INVALID_ARGUMENT", "ok", "gRPC INVALID_ARGUMENT", "ok"]
    assert connection is not None and connection.next_id == 9  # one connection carried all four


def test_nothing_listening_is_a_refused_connection():
    channel = grpc_wire.Channel("127.0.0.1", free_port(), [b""])
    (failure,) = asyncio.run(_calls(channel, 1, 1))
    assert isinstance(failure, loadgen.RequestFailed) and failure.failure.kind == "connection refused"


def test_an_http1_port_fails_the_call_instead_of_hanging(example_server):
    # Triton's HTTP/1.1 port answers the HTTP/2 preface with an error and closes.
    address = parse_address(example_server.http_url)
    channel = grpc_wire.Channel(address.host, address.port, loadgen.grpc_requests("din", [{}]))
    (failure,) = asyncio.run(_calls(channel, 1, 1))
    assert isinstance(failure, loadgen.RequestFailed)
    assert failure.failure.kind == "bad answer"  # its first frame is not SETTINGS: refused at once

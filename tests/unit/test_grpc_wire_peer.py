"""The gRPC client's HTTP/2 behaviours that a healthy Triton does not show on demand (a refused stream,
a stream limit of 1, a cancelled call), against a minimal HTTP/2 peer on loopback written for the test.
The same client against the real tritonserver: tests/integration/test_grpc_wire.py."""

from __future__ import annotations

import asyncio

from hpack import Encoder

from tsrepo.client import grpc_wire as w
from tsrepo.client.loadgen import RequestFailed


class Peer:
    """Speaks just enough server-side HTTP/2: its SETTINGS, then per request stream either an answer
    (HEADERS, DATA, trailers with grpc-status 0) or what `plan` says for that stream's turn."""

    def __init__(self, plan: list[str], max_streams: int | None = None, settings_delay: float = 0.0):
        self.plan = list(plan)
        self.settings_delay = settings_delay  # per new stream, in order: "ok", "refuse", "hang"
        self.max_streams = max_streams
        self.open_now = 0
        self.most_open = 0
        self.resets: list[tuple[int, int]] = []
        self.tasks: list[asyncio.Future] = []
        self.encoder = Encoder()
        self.encoder.header_table_size = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(w.PREFACE))
        await asyncio.sleep(self.settings_delay)  # a server slow to say its limits
        settings = b"" if self.max_streams is None else (3).to_bytes(2, "big") + self.max_streams.to_bytes(4, "big")
        writer.write(w.frame(w.SETTINGS, 0, 0, settings))
        try:
            while True:
                head = await reader.readexactly(9)
                length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
                sid = int.from_bytes(head[5:9], "big")
                payload = await reader.readexactly(length)
                if kind == w.HEADERS:
                    self.open_now += 1
                    self.most_open = max(self.most_open, self.open_now)
                elif kind == w.RST_STREAM:
                    self.resets.append((sid, int.from_bytes(payload, "big")))
                    self.open_now -= 1
                elif kind == w.DATA and flags & w.END_STREAM:
                    # Answered beside the reading, so that calls the client sends meanwhile are seen open.
                    self.tasks.append(
                        asyncio.ensure_future(self.answer(writer, sid, self.plan.pop(0) if self.plan else "ok"))
                    )
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def answer(self, writer, sid: int, what: str) -> None:
        if what == "hang":
            return
        if what == "refuse":
            self.open_now -= 1
            writer.write(w.frame(w.RST_STREAM, 0, sid, w.REFUSED_STREAM.to_bytes(4, "big")))
            return
        await asyncio.sleep(0.01)  # long enough for other calls to pile up behind a stream limit
        self.open_now -= 1
        head = self.encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
        trailers = self.encoder.encode([("grpc-status", "0")])
        writer.write(
            w.frame(w.HEADERS, w.END_HEADERS, sid, head)
            + w.frame(w.DATA, 0, sid, w.grpc_message(b""))
            + w.frame(w.HEADERS, w.END_HEADERS | w.END_STREAM, sid, trailers)
        )


async def _with_peer(peer: Peer, body):
    server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = w.Channel("127.0.0.1", port, [b"request"])
    try:
        return await asyncio.wait_for(body(channel), timeout=10)
    finally:
        await channel.close()
        server.close()


def test_a_refused_stream_is_sent_again_and_succeeds():
    peer = Peer(["refuse", "refuse", "ok"])
    asyncio.run(_with_peer(peer, lambda ch: ch.send(0)))
    assert peer.plan == []  # three streams: two refused, the third answered


def test_a_call_refused_every_time_fails_as_lost_after_three_tries():
    peer = Peer(["refuse"] * 5)

    async def body(ch):
        try:
            await ch.send(0)
        except RequestFailed as e:
            return e.failure.kind
        return "ok"

    assert asyncio.run(_with_peer(peer, body)) == "connection lost"
    assert len(peer.plan) == 2


def test_the_servers_stream_limit_holds_calls_back_instead_of_getting_them_refused():
    peer = Peer([], max_streams=1, settings_delay=0.1)

    async def body(ch):
        await asyncio.gather(*(ch.send(i) for i in range(6)))

    asyncio.run(_with_peer(peer, body))
    assert peer.most_open == 1


def test_a_call_cancelled_in_flight_resets_its_stream():
    peer = Peer(["hang", "ok"])

    async def body(ch):
        task = asyncio.ensure_future(ch.send(0))
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await ch.send(1)  # the connection still serves
        await asyncio.sleep(0.05)

    asyncio.run(_with_peer(peer, body))
    assert peer.resets == [(1, w.CANCEL)]

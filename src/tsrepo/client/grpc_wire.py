"""gRPC's ModelInfer over HTTP/2 written by hand, for the load generator's hot loop.

Why not grpcio: it costs a Python client 170-200 µs of CPU per unary call (measured alone: aio 200 µs,
sync futures 173 µs, with requests serialised once and responses left unparsed), 2-3x perf_analyzer's
C++ client; where client and server share cores that CPU comes out of the server's throughput, and
bench measured 0.52-0.81x perf_analyzer's infer/s. A unary gRPC call is two frames out (HEADERS, DATA)
and three in (HEADERS, DATA, trailing HEADERS): here the request's header block is the same bytes for
every call and each message is serialised once, so a call is one socket write, and the answer is read
only as far as its grpc-status.

What it implements of HTTP/2 (RFC 9113) and HPACK (RFC 7541), client side, cleartext (h2c with prior
knowledge, what grpcio's insecure channel speaks): the preface and SETTINGS, acknowledged both ways;
a header table size of 0 advertised, so the server's header blocks decode without state and are cached
by their bytes (hpack decodes the rare new one); flow control both ways (a request larger than the
windows waits for WINDOW_UPDATE, split at the peer's MAX_FRAME_SIZE; the receive windows are opened
to 2^31-1 and topped up); PING acknowledged; RST_STREAM, GOAWAY and a lost connection fail the
affected calls; CONTINUATION and padding read; the peer's MAX_CONCURRENT_STREAMS respected (calls wait for
the server's first SETTINGS); a call refused unprocessed (REFUSED_STREAM, or above a GOAWAY's last stream id)
is sent again, up to 3 times; a call cancelled in flight resets its stream; a peer whose first frame is not
SETTINGS, or that sends a frame longer than 16 KiB, is not HTTP/2 ("bad answer", at once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tsrepo.client import failures

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 1, 2, 3, 4, 5
MAX_WINDOW = 2**31 - 1
OUR_MAX_FRAME = 16384  # we advertise no larger SETTINGS_MAX_FRAME_SIZE: a longer frame is not HTTP/2
REFUSED_STREAM, CANCEL = 0x7, 0x8
RETRIES = 3  # a call the server refused unprocessed (REFUSED_STREAM, or above a GOAWAY's last id) is sent again
LAST_STREAM_ID = 2**31 - 1
INFER_PATH = b"/inference.GRPCInferenceService/ModelInfer"

# grpc status codes by number (the gRPC spec's table), as failures.from_grpc_code names them.
GRPC_CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
# RST_STREAM error codes to grpc codes, as the gRPC HTTP/2 spec maps them (REFUSED_STREAM is sent again).
H2_ERRORS = {0x8: "CANCELLED", 0xB: "RESOURCE_EXHAUSTED", 0xC: "PERMISSION_DENIED"}


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """HPACK's prefixed integer (RFC 7541 5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: bytes) -> bytes:
    """An HPACK string literal, raw (not Huffman-coded)."""
    return _integer(len(value), 7, 0x00) + value


def _literal(name_index: int, value: bytes) -> bytes:
    """A literal header field without indexing, its name from the static table, its value raw."""
    return _integer(name_index, 4, 0x00) + _string(value)


def request_headers(authority: str, path: bytes = INFER_PATH) -> bytes:
    """The header block of every call: nothing enters the server's dynamic table, so it never changes."""
    return (
        b"\x83"  # :method POST (static 3)
        + b"\x86"  # :scheme http (static 6)
        + _literal(4, path)  # :path
        + _literal(1, authority.encode())  # :authority
        + _literal(31, b"application/grpc")  # content-type
        + b"\x00"
        + _string(b"te")
        + _string(b"trailers")  # a literal with a new name: te is not in the table
    )


def grpc_message(payload: bytes) -> bytes:
    """A length-prefixed gRPC message, uncompressed."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


@dataclass
class Answer:
    """What a header block says: the HTTP status and, in trailers, the grpc-status and message."""

    http_status: int | None
    grpc_status: int | None
    message: str


class HeaderBlocks:
    """Header blocks to Answers. With a table size of 0 a block's meaning depends only on its bytes, so
    each distinct block is decoded once (the success trailers are the same bytes on every call)."""

    def __init__(self):
        from hpack import Decoder

        self.decoder = Decoder()
        self.decoder.max_allowed_table_size = 0
        self.decoder.header_table_size = 0
        self.cache: dict[bytes, Answer] = {}

    def read(self, block: bytes) -> Answer:
        answer = self.cache.get(block)
        if answer is None:
            headers = dict(self.decoder.decode(block))
            status = headers.get(":status")
            grpc_status = headers.get("grpc-status")
            answer = Answer(
                int(status) if status and status.isdigit() else None,
                int(grpc_status) if grpc_status and grpc_status.isdigit() else None,
                headers.get("grpc-message", ""),
            )
            if len(self.cache) > 256:
                self.cache.clear()
            self.cache[block] = answer
        return answer


@dataclass
class Stream:
    future: asyncio.Future
    window: int
    pending: memoryview | None = None  # request bytes still to send (flow control)
    http_status: int | None = None
    grpc_status: int | None = None
    headers_seen: bool = False


class ProtocolViolation(Exception):
    pass


class Unprocessed(Exception):
    """The server did not process the call (RFC 9113 8.7): safe to send again, on a usable connection."""


class Connection(asyncio.Protocol):
    """One HTTP/2 connection carrying any number of concurrent unary calls."""

    def __init__(self, authority: str, path: bytes = INFER_PATH):
        self.block = request_headers(authority, path)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.send_window = 65535
        self.peer_initial_window = 65535
        self.peer_max_frame = 16384
        self.peer_max_streams = 2**31
        self.buffer = bytearray()
        self.continuing: tuple[int, bytearray, bool] | None = None
        self.received = 0
        self.broken: failures.Failure | None = None
        self.going_away = False
        self.slot_waiters: list[asyncio.Future] = []
        self.headers = HeaderBlocks()
        # The server's first SETTINGS: calls wait for it, so that its stream limit is known before a burst.
        self.ready: asyncio.Future = self.loop.create_future()

    # ---- connection life

    def connection_made(self, transport):
        self.transport = transport
        settings = b"".join(
            k.to_bytes(2, "big") + v.to_bytes(4, "big")
            for k, v in ((HEADER_TABLE_SIZE, 0), (ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, MAX_WINDOW))
        )
        opened = (MAX_WINDOW - 65535).to_bytes(4, "big")  # the connection's receive window, to the maximum
        transport.write(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, opened))

    def connection_lost(self, exc):
        # Closed before the server's SETTINGS: what listens there is not an HTTP/2 server (Triton's HTTP/1.1
        # port closes on the preface without a word).
        self._break(failures.LOST if self.ready.done() else failures.BAD_ANSWER)

    def _break(self, failure: failures.Failure) -> None:
        if self.broken is None:
            self.broken = failure
        if not self.ready.done():
            self.ready.set_exception(failures.RequestFailed(failure))
            self.ready.exception()  # retrieved: no "never retrieved" warning when nobody waits
        for stream in self.streams.values():
            if not stream.future.done():
                stream.future.set_exception(failures.RequestFailed(failure))
        self.streams.clear()
        for w in self.slot_waiters:
            if not w.done():
                w.set_result(None)
        self.slot_waiters.clear()
        if self.transport is not None:
            self.transport.close()

    @property
    def usable(self) -> bool:
        return self.broken is None and not self.going_away and self.next_id < LAST_STREAM_ID

    def close(self) -> None:
        if self.transport is not None and self.broken is None:
            self.transport.write(frame(GOAWAY, 0, 0, bytes(8)))  # last id 0: we accept no server streams
        self._break(failures.LOST)

    # ---- calls

    async def call(self, message: bytes) -> None:
        """One unary call with a complete gRPC message; raises failures.RequestFailed on failure, or
        Unprocessed when the server refused it without processing it."""
        if not self.ready.done():
            await self.ready
        while len(self.streams) >= self.peer_max_streams and self.usable:
            waiter = self.loop.create_future()
            self.slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._wake_slots()  # pass on a wake-up this cancelled waiter may have taken
                raise
        if not self.usable:
            if self.broken is None:
                raise Unprocessed()  # going away or out of stream ids: another connection takes it
            raise failures.RequestFailed(self.broken)
        sid = self.next_id
        self.next_id += 2
        stream = Stream(self.loop.create_future(), self.peer_initial_window)
        self.streams[sid] = stream
        head = frame(HEADERS, END_HEADERS, sid, self.block)
        size = len(message)
        if size <= stream.window and size <= self.send_window and size <= self.peer_max_frame:
            self.send_window -= size
            stream.window -= size
            self.transport.write(head + frame(DATA, END_STREAM, sid, message))
        else:
            self.transport.write(head)
            stream.pending = memoryview(message)
            self._pump(sid, stream)
        try:
            await stream.future
        except asyncio.CancelledError:
            # The load stopped with this call in flight: tell the server, and free the stream.
            self._finish(sid, None, reset=CANCEL)
            raise

    def _wake_slots(self) -> None:
        free = self.peer_max_streams - len(self.streams)
        while self.slot_waiters and free > 0:
            waiter = self.slot_waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def _pump(self, sid: int, stream: Stream) -> None:
        """Send as much of a large request as the windows allow."""
        data = stream.pending
        while data is not None:
            size = min(len(data), stream.window, self.send_window, self.peer_max_frame)
            if size <= 0 and len(data):
                break
            chunk, data = data[:size], data[size:]
            last = len(data) == 0
            self.transport.write(frame(DATA, END_STREAM if last else 0, sid, bytes(chunk)))
            stream.window -= size
            self.send_window -= size
            if last:
                data = None
        stream.pending = data

    def _finish(self, sid: int, failure: failures.Failure | Exception | None, reset: int | None = None) -> None:
        stream = self.streams.pop(sid, None)
        if stream is None:
            return
        if stream.pending is not None and reset is None:
            reset = 0  # the answer ended while the request was still being sent: close our side (NO_ERROR)
        if reset is not None and self.broken is None and self.transport is not None:
            self.transport.write(frame(RST_STREAM, 0, sid, reset.to_bytes(4, "big")))
        if not stream.future.done():
            if failure is None:
                stream.future.set_result(None)
            elif isinstance(failure, Exception):
                stream.future.set_exception(failure)
            else:
                stream.future.set_exception(failures.RequestFailed(failure))
        self._wake_slots()
        if self.going_away and not self.streams and self.transport is not None:
            self.transport.close()

    # ---- frames in

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos, end = 0, len(buf)
        try:
            while end - pos >= 9:
                length = int.from_bytes(buf[pos : pos + 3], "big")
                kind, flags = buf[pos + 3], buf[pos + 4]
                if length > OUR_MAX_FRAME or (not self.ready.done() and kind != SETTINGS):
                    # Not HTTP/2 (an HTTP/1.1 port answers "HTTP/1.1 400 ..."), or a server without its preface.
                    raise ProtocolViolation("not an HTTP/2 server")
                if end - pos - 9 < length:
                    break
                sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                start = pos + 9
                pos = start + length
                if kind == DATA:
                    self._on_data(sid, flags, length)
                elif kind == HEADERS or kind == CONTINUATION:
                    self._on_headers(kind, sid, flags, bytes(buf[start:pos]))
                elif kind == SETTINGS:
                    if not flags & ACK:
                        self._on_settings(bytes(buf[start:pos]))
                elif kind == WINDOW_UPDATE:
                    self._on_window_update(sid, int.from_bytes(buf[start:pos], "big") & 0x7FFFFFFF)
                elif kind == PING:
                    if not flags & ACK:
                        self.transport.write(frame(PING, ACK, 0, bytes(buf[start:pos])))
                elif kind == RST_STREAM:
                    code = int.from_bytes(buf[start:pos], "big")
                    if code == REFUSED_STREAM:
                        self._finish(sid, Unprocessed())
                    else:
                        self._finish(sid, failures.from_grpc_code(H2_ERRORS.get(code, "INTERNAL")))
                elif kind == GOAWAY:
                    self._on_goaway(bytes(buf[start:pos]))
                elif kind == PUSH_PROMISE:
                    raise ProtocolViolation("PUSH_PROMISE after ENABLE_PUSH=0")
                # PRIORITY and unknown frame types are ignored, as RFC 9113 requires.
        except Exception:  # a peer that does not speak HTTP/2 (or hpack could not decode it)
            del buf[:]
            self._break(failures.BAD_ANSWER)
            return
        del buf[:pos]

    def _on_data(self, sid: int, flags: int, length: int) -> None:
        self.received += length
        if self.received > MAX_WINDOW // 2:
            self.transport.write(frame(WINDOW_UPDATE, 0, 0, self.received.to_bytes(4, "big")))
            self.received = 0
        if flags & END_STREAM:
            self._end(sid)

    def _on_headers(self, kind: int, sid: int, flags: int, payload: bytes) -> None:
        if kind == HEADERS:
            if self.continuing is not None:
                raise ProtocolViolation("HEADERS inside a header block")
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            if not flags & END_HEADERS:
                self.continuing = (sid, bytearray(payload), bool(flags & END_STREAM))
                return
            self._on_block(sid, payload, bool(flags & END_STREAM))
            return
        if self.continuing is None or self.continuing[0] != sid:
            raise ProtocolViolation("CONTINUATION outside a header block")
        self.continuing[1].extend(payload)
        if flags & END_HEADERS:
            sid, block, ended = self.continuing
            self.continuing = None
            self._on_block(sid, bytes(block), ended)

    def _on_block(self, sid: int, block: bytes, ended: bool) -> None:
        answer = self.headers.read(block)  # always decoded: HPACK state must see every block
        stream = self.streams.get(sid)
        if stream is not None:
            if not stream.headers_seen:
                stream.headers_seen = True
                stream.http_status = answer.http_status
            if answer.grpc_status is not None:
                stream.grpc_status = answer.grpc_status
        if ended:
            self._end(sid)

    def _end(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        if stream.http_status not in (None, 200) and stream.grpc_status is None:
            self._finish(sid, failures.from_http_status(stream.http_status))
        elif stream.grpc_status == 0:
            self._finish(sid, None)
        elif stream.grpc_status is None:
            self._finish(sid, failures.from_grpc_code("UNKNOWN"))  # no status: the gRPC spec says UNKNOWN
        else:
            code = GRPC_CODES[stream.grpc_status] if stream.grpc_status < len(GRPC_CODES) else "UNKNOWN"
            self._finish(sid, failures.from_grpc_code(code))

    def _on_settings(self, payload: bytes) -> None:
        for i in range(0, len(payload) - 5, 6):
            key, value = int.from_bytes(payload[i : i + 2], "big"), int.from_bytes(payload[i + 2 : i + 6], "big")
            if key == INITIAL_WINDOW_SIZE:
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == MAX_FRAME_SIZE:
                self.peer_max_frame = value
            elif key == MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = max(1, value)
        self.transport.write(frame(SETTINGS, ACK, 0))
        if not self.ready.done():
            self.ready.set_result(None)
        self._wake_slots()
        self._pump_all()

    def _on_window_update(self, sid: int, increment: int) -> None:
        if sid == 0:
            self.send_window += increment
            self._pump_all()
            return
        stream = self.streams.get(sid)
        if stream is not None:
            stream.window += increment
            if stream.pending is not None:
                self._pump(sid, stream)

    def _pump_all(self) -> None:
        for sid, stream in list(self.streams.items()):
            if stream.pending is not None:
                self._pump(sid, stream)

    def _on_goaway(self, payload: bytes) -> None:
        last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        self.going_away = True
        # Calls above the last id the server took were not processed: sent again on another connection.
        # The ones it took end on their own (or with the connection).
        for sid in [s for s in self.streams if s > last]:
            self._finish(sid, Unprocessed())
        if not self.streams and self.transport is not None:
            self.transport.close()


class Channel:
    """The calls of one load process, over one connection, opened again when lost (as grpcio's channel)."""

    def __init__(self, host: str, port: int, messages: list[bytes]):
        self.host, self.port = host, port
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.messages = [grpc_message(m) for m in messages]
        self.connection: Connection | None = None
        self.opening: asyncio.Future | None = None

    async def _connect(self) -> Connection:
        conn = self.connection
        if conn is not None and conn.usable:
            return conn
        if self.opening is None:  # one connect for all the users waiting on it
            self.opening = asyncio.ensure_future(self._open())
        opening = self.opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self.opening is opening:
                self.opening = None

    async def _open(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Connection(self.authority), self.host, self.port)
        except OSError as e:
            raise failures.RequestFailed(failures.from_exception(e)) from None
        old, self.connection = self.connection, conn
        if old is not None and old.broken is None:  # out of stream ids: it ends once its calls have
            old.going_away = True
            if not old.streams:
                old.close()
        return conn

    async def send(self, index: int) -> None:
        message = self.messages[index % len(self.messages)]
        for _ in range(RETRIES):
            conn = self.connection
            if conn is None or not conn.usable:
                conn = await self._connect()
            try:
                await conn.call(message)
                return
            except Unprocessed:
                continue
        raise failures.RequestFailed(failures.LOST)

    async def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

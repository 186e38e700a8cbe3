#!/usr/bin/env python3
"""An evapi app in Python (asyncio, the standard library only).

It connects to an evapi socket (Kamailio's evapi module, evapi-server, or
evapi-sim), reads netstring-framed events, and answers every suspend event
(async relay) by a rule on the request URI's user part:

- an odd number (sip:1001@...) is busy:   {"code": 486, "reason": "Busy Here"}
- an even number (sip:1002@...) goes on:  {"code": 200, "reason": "OK",
                                          "route": "gw1", "acct": "1002"}
- no number at all is refused:            {"code": 403, "reason": "Forbidden"}

The answer names the suspended transaction with the event's own tindex and
tlabel (docs/protocol.md). Run it against the simulator's cases
(examples/python/scenario.json) as CI does:

    evapi-sim run examples/python/scenario.json &
    python3 examples/python/busy_odd.py --addr 127.0.0.1:8448

--wrong swaps the rule (odd goes on, even is busy): the cases then fail, each
naming its call.
"""

import argparse
import asyncio
import json
import re
import sys

MAX_FRAME = 1 << 20  # the longest event taken (1 MiB); a longer one is an error


async def read_netstring(reader: asyncio.StreamReader) -> bytes | None:
    """One netstring (`LEN:BYTES,`), or None at a clean end of the stream."""
    try:
        head = await reader.readuntil(b":")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip() == b"":
            return None
        raise ValueError("the stream ended inside a netstring length") from e
    digits = head[:-1].strip()
    if not digits.isdigit() or len(digits) > 10:
        raise ValueError(f"not a netstring length: {digits[:20]!r}")
    length = int(digits)
    if length > MAX_FRAME:
        raise ValueError(f"netstring of {length} bytes is over {MAX_FRAME}")
    body = await reader.readexactly(length + 1)
    if body[-1:] != b",":
        raise ValueError("netstring without its closing comma")
    return body[:-1]


def netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


def decide(event: dict, wrong: bool) -> dict:
    """The rule: what to answer to one suspend event."""
    user = re.match(r"sips?:(\d+)@", str(event.get("ru", "")))
    if user is None:
        return {"code": 403, "reason": "Forbidden"}
    odd = int(user.group(1)) % 2 == 1
    if odd != wrong:
        return {"code": 486, "reason": "Busy Here"}
    return {"code": 200, "reason": "OK", "route": "gw1", "acct": user.group(1)}


async def serve(addr: str, wrong: bool, wait: float) -> int:
    host, _, port = addr.rpartition(":")
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            reader, writer = await asyncio.open_connection(host or "127.0.0.1", int(port))
            break
        except OSError as e:
            if asyncio.get_running_loop().time() >= deadline:
                print(f"busy_odd: cannot connect to {addr}: {e}", file=sys.stderr)
                return 2
            await asyncio.sleep(0.1)
    answered = 0
    try:
        while (frame := await read_netstring(reader)) is not None:
            try:
                event = json.loads(frame)
            except ValueError:
                continue  # not JSON: not ours to answer
            if not isinstance(event, dict) or "tindex" not in event or "tlabel" not in event:
                continue  # not a suspend event
            answer = {"tindex": event["tindex"], "tlabel": event["tlabel"]}
            answer.update(decide(event, wrong))
            writer.write(netstring(json.dumps(answer, separators=(",", ":")).encode()))
            answered += 1
            await writer.drain()
    except (ValueError, asyncio.IncompleteReadError, ConnectionError) as e:
        print(f"busy_odd: connection to {addr} ended: {e}", file=sys.stderr)
    finally:
        writer.close()
    print(f"busy_odd: answered {answered}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:8448", help="the evapi socket (HOST:PORT)")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to keep trying to connect")
    parser.add_argument("--wrong", action="store_true", help="swap the rule (to see cases fail)")
    args = parser.parse_args()
    return asyncio.run(serve(args.addr, args.wrong, args.wait))


if __name__ == "__main__":
    sys.exit(main())

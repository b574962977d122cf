"""The SMTP load generator: a raw asyncio client, run as its own process.

Why raw and separate: aiosmtplib's client was measured at about the server's own
CPU per message (310-650 µs), so a client sharing the server's core or loop halves
what is measured. This one costs ~150 µs per message.

    python bench/smtp_client.py PORT[,PORT...] LOADFILE K [lmtp]

LOADFILE is a pickle of waves, each a list of (rcpt, dot-stuffed payload).
Waves are delivered in order, each fully answered before the next starts
(the corpus's delivery contract); inside a wave K sessions (reused
connections) take the next message from a shared queue. With several ports
(several gateway instances, as a sender sees several MX hosts) the K
sessions are opened round-robin across them and the 250s are also counted
per port. Latency is from the
end of DATA (the payload and its final ".") to the reply. Only 250 counts as
accepted; other codes are counted by class. Prints one JSON object.
With ``lmtp`` it speaks LMTP (RFC 2033: LHLO; one recipient, so one reply
after DATA), as an MTA hands mail to the gateway's LMTP listener.
Where the server's EHLO (LHLO) offers PIPELINING (RFC 2920) the client sends
MAIL, RCPT and DATA in one write and then reads their three replies, as
Postfix's SMTP and LMTP clients do; otherwise it waits for each reply. The
JSON's ``pipelined`` counts the sessions that pipelined.
Stdlib only, bounded by a 600 s overall timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys
import time
from collections import Counter

# A session: its reader, writer, port, and whether the server offered PIPELINING.
Session = tuple[asyncio.StreamReader, asyncio.StreamWriter, int, bool]


async def run(
    ports: list[int], waves: list[list[tuple[str, bytes]]], conc: int, lmtp: bool = False
) -> dict[str, object]:
    lat: list[float] = []
    tx: list[float] = []  # MAIL FROM to the reply after DATA: the SMTP transaction alone
    codes: Counter[str] = Counter()
    per_port: Counter[str] = Counter()
    sessions: list[Session] = []

    async def opened(port: int) -> Session:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await reply(r)
        w.write(b"LHLO bench.client.test\r\n" if lmtp else b"EHLO bench.client.test\r\n")
        offered: list[bytes] = []
        await reply(r, offered)
        return r, w, port, any(line[4:].strip().upper() == b"PIPELINING" for line in offered)

    async def reply(r: asyncio.StreamReader, lines: list[bytes] | None = None) -> bytes:
        """The last line of one reply (``lines``: all of them appended)."""
        while True:
            line = await r.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            if lines is not None:
                lines.append(line)
            if line[3:4] != b"-":
                return line

    async def worker(session: Session, queue: list[tuple[str, bytes]]) -> None:
        r, w, port, pipelining = session

        async def group(commands: list[tuple[bytes, bytes]]) -> bool:
            """Commands (each with the reply code it wants) in one write, then a reply each
            (RFC 2920; one command: a client that waits for each reply); the first refusal
            is counted and the transaction reset."""
            w.write(b"".join(command for command, _ in commands))
            answers = [await reply(r) for _ in commands]
            for line, (_, want) in zip(answers, commands, strict=True):
                if not line.startswith(want):
                    codes[line[:3].decode()] += 1
                    w.write(b"RSET\r\n")
                    await reply(r)
                    return False
            return True

        while queue:
            rcpt, payload = queue.pop()
            t_mail = time.perf_counter()
            transaction = [
                (b"MAIL FROM:<load@bench.client.test>\r\n", b"250"),
                (b"RCPT TO:<" + rcpt.encode() + b">\r\n", b"250"),
                (b"DATA\r\n", b"354"),
            ]
            refused = False
            for part in [transaction] if pipelining else [[step] for step in transaction]:
                if not await group(part):
                    refused = True
                    break
            if refused:
                continue
            w.write(payload)
            t0 = time.perf_counter()
            line = await reply(r)
            code = line[:3].decode()
            codes[code] += 1
            if code == "250":
                t1 = time.perf_counter()
                per_port[str(port)] += 1
                lat.append(t1 - t0)
                tx.append(t1 - t_mail)

    for i in range(conc):
        sessions.append(await opened(ports[i % len(ports)]))
    t0, cpu0, busy0 = time.perf_counter(), time.process_time(), machine_busy()
    sent = 0
    for wave in waves:
        queue = list(reversed(wave))  # pop() from the end keeps file order
        sent += len(wave)
        await asyncio.gather(*(worker(s, queue) for s in sessions))
    secs = time.perf_counter() - t0
    cpu, busy = time.process_time() - cpu0, machine_busy() - busy0
    for _, w, _, _ in sessions:
        w.write(b"QUIT\r\n")
        w.close()
    lat.sort()
    tx.sort()

    def pct(q: float, values: list[float] = lat) -> float | None:
        if not values:
            return None
        return values[min(len(values) - 1, max(0, round(q * len(values) + 0.5) - 1))] * 1000

    accepted = codes.get("250", 0)
    return {
        "sent": sent,
        "accepted": accepted,
        "codes": dict(codes),
        "accepted_per_port": dict(per_port),
        "pipelined": sum(1 for s in sessions if s[3]),
        "secs": secs,
        # this client's own CPU, and every process's on the machine, over ``secs``
        "client_cpu_s": cpu,
        "machine_busy_s": busy,
        "rate": accepted / secs if secs else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": lat[-1] * 1000 if lat else None,
        "tx_p50_ms": pct(0.50, tx),
        "tx_p99_ms": pct(0.99, tx),
    }


def machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot (every process on the machine)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user..steal; guest is counted in user already
    return busy / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ports = [int(p) for p in sys.argv[1].split(",")]
    path, conc = sys.argv[2], int(sys.argv[3])
    with open(path, "rb") as f:
        waves = pickle.load(f)
    lmtp = sys.argv[4:5] == ["lmtp"]
    result = asyncio.run(asyncio.wait_for(run(ports, waves, conc, lmtp), 600))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

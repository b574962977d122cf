"""Figure 6a: peak RSS of the daemon with 32 concurrent ~10 MB messages.

Each message carries a ~7 MB random attachment (base64, ~9.5 MB on the wire,
under the 10 MiB limit), so clamd (real, one for the figure) scans it and the
gateway parses, stores and fsyncs it. 32 sessions send one message each at
once. Peak RSS is VmHWM from /proc/<pid>/status after the last reply, of the daemon
and of its parse workers added up (a worker holds the parsed copy). Beside
it, in the same run, the bare aiosmtpd sink under the same load: what merely
receiving 32 such messages costs in Python.
"""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from typing import Any

from bench.common import Mail, Sink, peak_rss, run_load, summary, workdir, write_load
from tests.daemon import Daemon

MiB = 2**20


def big_mail(i: int, attachment: int) -> bytes:
    data = base64.encodebytes(os.urandom(attachment)).replace(b"\n", b"\r\n")
    head = (
        f"From: Big Sender {i} <big{i}@client.test>\r\nTo: support@acme.test\r\n"
        f"Subject: the logs you asked for ({i})\r\n"
        f"Message-ID: <big.{i}.{uuid.uuid4().hex}@client.test>\r\n"
        "Date: Mon, 04 Mar 2024 08:06:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHere they are.\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="logs-{i}.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return head + data + b"--b--\r\n"


def fig6a(conc: int, attachment: int, runs: int) -> dict[str, Any]:
    from tests.clamd_harness import running_clamd

    raw = []
    with workdir("fig6a") as tmp, running_clamd(tmp / "clamd") as clamd:
        mails = [Mail(0, "support@acme.test", big_mail(i, attachment), True) for i in range(conc)]
        load = write_load(mails, tmp / "load.pkl")
        size = len(mails[0].data)
        del mails
        for r in range(runs):
            sink = Sink()
            try:
                sink_res = run_load(sink.port, load, conc)
                sink_rss = peak_rss(sink.proc.pid)
            finally:
                sink.stop()
            gw = Daemon(Path(tmp) / f"gw-{r}", scanner=clamd.address).start()
            try:
                assert gw.proc is not None
                start_rss = peak_rss(gw.proc.pid)
                res = run_load(gw.port, load, conc)
                rss = peak_rss(gw.proc.pid)
                own = peak_rss(gw.proc.pid, own=True)
            finally:
                gw.stop()
            row = {
                "peak_rss": rss,
                "peak_rss_daemon_alone": own,
                "rss_after_start": start_rss,
                "sink_peak_rss": sink_rss,
                "codes": res["codes"],
                "sink_codes": sink_res["codes"],
                "secs": res["secs"],
            }
            raw.append(row)
            print(
                f"  run {r + 1}: {conc} x {size / MiB:.1f} MiB: gateway peak RSS "
                f"{rss / MiB:.0f} MiB (after start {start_rss / MiB:.0f}), sink "
                f"{sink_rss / MiB:.0f} MiB, codes {res['codes']}",
                flush=True,
            )
    return {
        "concurrency": conc,
        "message_bytes": size,
        "peak_rss": summary([x["peak_rss"] for x in raw]),
        "peak_rss_daemon_alone": summary([x["peak_rss_daemon_alone"] for x in raw]),
        "rss_after_start": summary([x["rss_after_start"] for x in raw]),
        "sink_peak_rss": summary([x["sink_peak_rss"] for x in raw]),
        "ratio_gateway_sink": summary([x["peak_rss"] / x["sink_peak_rss"] for x in raw]),
        "secs": summary([x["secs"] for x in raw]),
        "raw": raw,
    }

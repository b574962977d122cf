"""Issue 11's proof: three gateway instances on one PostgreSQL, one of them SIGKILLed midway.

Everything is real: the session's PostgreSQL cluster, three ``gateway run``
processes sharing one database (and one secret and key file, as docs/scaling.md
says every instance must), a real clamd, a real Dovecot mailbox that all three
are configured to poll, and an aiosmtpd sink as the tenants' outbound account.
The generated corpus goes over SMTP, each message to one instance at random and
one in ten to a second one too (the same mail reaching two MX hosts); a client
whose instance is gone tries the next, as a sending MTA tries the next MX.

Midway the instance holding the mailbox's lease is SIGKILLed, while the mailbox
has mail waiting and the outbox is busy. Then: every accepted message is stored
once; every acknowledgement reaches the sink once (a mail the dead instance
was sending at the kill may arrive twice, with one Message-ID: at-least-once,
the receiver can tell); the mailbox is drained exactly once by the instance that
took the lease over; the scorecard is as good as with one instance.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import smtplib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from routing.secrets import load_keyring
from tests.clamd_harness import Clamd
from tests.corpus import generate
from tests.daemon import Daemon
from tests.dovecot_harness import Dovecot
from tests.mail import make_mail
from tests.pg_harness import session_cluster
from tests.smtp_sink import Sink
from tests.test_corpus import TAG, _envelope_sender, assert_every_class_right

IMAP_USER, IMAP_PASSWORD = "support", "secret"
IMAP_MAILS = 40
# The mailbox's own tenant, so the corpus's scorecard (acme, globex) stays that of one instance.
INITECH = """
[[tenants]]
slug = "initech"
name = "Initech"
addresses = ["help@initech.test"]
tag_prefix = "INI"
"""


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    s = Sink(tmp_path).start()
    yield s
    s.stop()


@pytest.fixture
def imap(dovecot_factory) -> Dovecot:  # type: ignore[no-untyped-def]
    return dovecot_factory({IMAP_USER: IMAP_PASSWORD})


def _instances(
    tmp_path: Path, url: str, clamd: Clamd, sink: Sink, imap: Dovecot, n: int = 3
) -> list[Daemon]:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "secret.key").write_text(secrets.token_hex(32))
    keys = load_keyring(shared / "keys.toml")
    enc = {
        t: keys.encrypt(sink.password, tenant=t, field="password")
        for t in ("acme", "globex", "initech")
    }
    imap_pw = keys.encrypt(IMAP_PASSWORD, tenant="initech", field="password")

    def outbound(tenant: str) -> str:
        return f"""
[tenants.outbound]
host = "127.0.0.1"
port = {sink.port}
security = "starttls"
username = "{sink.user}"
password = "{enc[tenant]}"
ca_file = "{sink.ca_file}"
"""

    box = f"""
[[tenants.imap]]
host = "127.0.0.1"
port = {imap.port}
security = "none"
username = "{IMAP_USER}"
password = "{imap_pw}"
poll_interval = 1
timeout = 5
"""
    out = []
    for i in range(n):
        gateway = (
            f'instance = "gw{i}"\nlease_seconds = 3\n'
            f'secret_file = "{shared / "secret.key"}"\nkey_file = "{shared / "keys.toml"}"'
        )
        out.append(
            Daemon(
                tmp_path / f"gw{i}",
                scanner=clamd.address,
                database_url=url,
                blobs="database",  # what docs/scaling.md recommends: no shared folder
                gateway_extra=gateway,
                acme_extra=outbound("acme"),
                extra=outbound("globex")
                + INITECH
                + box
                + outbound("initech")
                + "\n[outbound]\nretry_base = 0.2\nretry_max = 1\npoll_interval = 0.2\n"
                "timeout = 5\nclaim_lease = 12\n",
            )
        )
    return out


def _send(live: list[Daemon], first: Daemon, raw: bytes, to: str) -> tuple[int, str, Daemon]:
    """Deliver as an MTA with several MX hosts would: ``first``, then any other live one."""
    for d in [first, *[x for x in live if x is not first]]:
        if d.proc is None or d.proc.poll() is not None:
            continue
        try:
            code, text = d.send(raw, to=to, sender=_envelope_sender(raw))
        except (OSError, smtplib.SMTPException):
            continue
        if code < 400 or code >= 500:
            return code, text, d
    raise AssertionError("no instance took the message")


def _lease_holder(d: Daemon, name_prefix: str) -> str | None:
    rows = d.query(
        "SELECT holder FROM leases WHERE name LIKE ? AND expires_at > now()", f"{name_prefix}%"
    )
    return rows[0][0] if rows else None


def test_three_instances_one_killed_nothing_lost_nothing_twice(
    tmp_path: Path, clamd: Clamd, sink: Sink, imap: Dovecot
) -> None:
    corpus = tmp_path / "corpus"
    exp = generate(corpus, count=300, seed=11)
    cluster = session_cluster()
    url = cluster.url(cluster.new_database("multi"))
    gws = _instances(tmp_path, url, clamd, sink, imap)
    rng = random.Random(11)
    try:
        for d in gws:
            d.start()
        live = list(gws)
        by_file = {m["file"]: m for m in exp["messages"]}
        root_thread = {t["root_file"]: tid for tid, t in exp["threads"].items()}
        thread_ref: dict[str, str] = {}
        sent: dict[str, bytes] = {}
        answers: dict[str, list[int]] = {}
        doubled = 0
        imap_mails = [
            make_mail(sender=f"imap{i}@client.test", to="help@initech.test", subject=f"IMAP {i}")
            for i in range(IMAP_MAILS)
        ]
        killed: Daemon | None = None
        in_flight_at_kill: set[str] = set()
        waves = exp["waves"]
        for wave in range(waves):
            if wave == waves // 2:
                # Mail waits in the mailbox; kill whoever is polling it, mid-drain.
                for raw in imap_mails[: IMAP_MAILS // 2]:
                    imap.save(IMAP_USER, raw)
                holder = _lease_holder(gws[0], "imap:")
                assert holder is not None, [d.log_text() for d in gws]
                _wait(lambda: imap.count(IMAP_USER) < IMAP_MAILS // 2, timeout=20)
                killed = gws[int(holder.removeprefix("gw"))]
                killed.kill()
                live.remove(killed)
                in_flight_at_kill = {
                    r[0]
                    for r in gws[0].query(
                        "SELECT message_id FROM outbox WHERE status = 'sending' AND claimed_by = ?",
                        holder,
                    )
                }
                for raw in imap_mails[IMAP_MAILS // 2 :]:
                    imap.save(IMAP_USER, raw)
            names = sorted(f for f in by_file if f.startswith(f"w{wave:02d}-"))
            for name in names:
                raw = (corpus / name).read_bytes()
                raw = TAG.sub(lambda g: thread_ref.get(g.group(1).decode(), "x").encode(), raw)
                sent[name] = raw
                targets = [rng.choice(gws)]
                if rng.random() < 0.1:  # the same mail to a second MX host
                    targets.append(rng.choice([d for d in gws if d is not targets[0]]))
                    doubled += 1
                for first in targets:
                    code, text, _ = _send(live, first, raw, by_file[name]["to"])
                    answers.setdefault(name, []).append(code)
                    if name in root_thread and code == 250:
                        refs = first.refs(text)  # none for a duplicate
                        if refs:
                            thread_ref[root_thread[name]] = refs[0]
        assert killed is not None and doubled > 0
        reader = live[0]

        # -- IMAP: drained, by the instance that took the lease over -------------------
        assert _wait(lambda: imap.count(IMAP_USER) == 0, timeout=90), reader.log_text()
        new_holder = _lease_holder(reader, "imap:")
        assert new_holder is not None and new_holder != f"gw{gws.index(killed)}"
        for raw in imap_mails:
            sha = hashlib.sha256(raw).hexdigest()
            n = reader.query("SELECT count(*) FROM messages WHERE raw_sha256 = ?", sha)[0][0]
            assert n == 1

        # -- every accepted message stored once ------------------------------------------
        assert all(c == 250 for codes in answers.values() for c in codes), {
            n: c for n, c in answers.items() if any(x != 250 for x in c)
        }
        per_key = reader.query(
            "SELECT tenant, message_key, count(*) FROM messages GROUP BY tenant, message_key "
            "HAVING count(*) > 1"
        )
        assert per_key == []
        for name, raw in sent.items():
            sha = hashlib.sha256(raw).hexdigest()
            n = reader.query("SELECT count(*) FROM messages WHERE raw_sha256 = ?", sha)[0][0]
            assert n <= 1, name

        # -- every blob a row names is a row of the one database, and none is a file ---
        unbacked = reader.query(
            "SELECT count(*) FROM (SELECT raw_sha256 AS sha FROM messages UNION "
            "SELECT sha256 FROM attachments) named "
            "WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.sha256 = named.sha)"
        )
        assert unbacked[0][0] == 0
        for raw in imap_mails[:3]:  # taken by whichever instance held the mailbox
            assert reader.blob(hashlib.sha256(raw).hexdigest()) == raw
        assert not [p for d in gws for p in (d.home / "var" / "blobs").rglob("*")]

        # -- the outbox drains; each mail reaches the sink once -------------------------
        def drained() -> bool:
            q = "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"
            return reader.query(q)[0][0] == 0

        assert _wait(drained, timeout=120), reader.log_text()
        q = "SELECT message_id FROM outbox WHERE status = 'sent'"
        sent_ids = {r[0] for r in reader.query(q)}
        with sink.lock:
            got = Counter(str(r.msg["Message-ID"]) for r in sink.received)
        assert set(got) == sent_ids
        twice = {mid for mid, n in got.items() if n > 1}
        assert twice <= in_flight_at_kill, twice - in_flight_at_kill
        acks = reader.query("SELECT count(*) FROM outbox WHERE kind = 'ack'")[0][0]
        assert acks > 0

        # -- and the scorecard is that of one instance ------------------------------------
        assert_every_class_right(reader, exp, sent, frozenset({"initech"}))
    finally:
        for d in gws:
            d.kill()

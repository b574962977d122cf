"""GDPR access and erasure against a store filled through real SMTP (issue 8's proof).

A real daemon scanning with a real clamd takes mail from two clients who
share a ticket and an attachment, a web sign-in, an agent's reply and an
infected mail; then ``gateway gdpr export`` and ``gateway gdpr erase`` run as
an admin would, while the daemon keeps running. Afterwards the database
file, its WAL, the blob folder and the daemon's log are searched byte by
byte for the erased address.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from tests.clamd_harness import EICAR, Clamd
from tests.daemon import Daemon
from tests.mail import make_mail
from tests.test_web_client import Browser, _link, _request_link, _sign_in

CAROL, DAVE = "carol@client.test", "dave@client.test"
SHARED = b"%PDF-1.4 the same manual, sent by both clients\n" * 20
CAROL_ONLY = b"carol's own scan of her invoice\n" * 20
CAROL_LATER = b"carol's second file\n" * 20


@pytest.fixture
def gw(tmp_path: Path, clamd: Clamd, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """``[gateway] blobs`` as the test asks (indirect parameter), else the files."""
    d = Daemon(
        tmp_path / "gw",
        blobs=getattr(request, "param", "files"),
        scanner=clamd.address,
        http_extra="insecure_cookies = true",
    ).start()
    yield d
    d.stop()


def _send(d: Daemon, data: bytes, sender: str, to: str = "support@acme.test") -> str:
    code, text = d.send(data, to=to, sender=sender)
    assert code == 250, text
    return text


def _ref(d: Daemon, reply: str) -> str:
    """The ticket of the mail a 250 named (the reply names no ticket, issue 16)."""
    return d.ref(reply)


def _agent_reply_address(d: Daemon, ref: str) -> str:
    for (body,) in d.query("SELECT body FROM outbox WHERE kind = 'notice' ORDER BY id DESC"):
        msg = message_from_bytes(body, policy=default)
        if f"[{ref}]" in str(msg["Subject"]):
            return str(msg["Reply-To"])
    raise AssertionError(f"no notice for {ref}")


def _fill(d: Daemon) -> dict[str, str]:
    """Carol alone on one ticket; Carol (cc) and Dave on another, sharing a file."""
    alone = _ref(
        d,
        _send(
            d,
            make_mail(
                sender=f"Carol Client <{CAROL}>",
                subject="My invoice",
                body="Please fix my invoice. Carol",
                attachments=[
                    ("manual.pdf", "application/pdf", SHARED),
                    ("invoice.txt", "text/plain", CAROL_ONLY),
                ],
            ),
            CAROL,
        ),
    )
    shared = _ref(
        d,
        _send(
            d,
            make_mail(
                sender=f"Dave Other <{DAVE}>",
                subject="Printer on floor 3",
                body=f"The printer is broken; my colleague {CAROL} saw it too.",
                headers={"Cc": f"Carol Client <{CAROL}>"},
                attachments=[("manual.pdf", "application/pdf", SHARED)],
            ),
            DAVE,
        ),
    )
    _send(
        d,
        make_mail(
            sender=f"Carol Client <{CAROL}>",
            subject=f"Re: [{shared}] Printer on floor 3",
            body="Yes, it is broken. Call me, Carol",
            attachments=[("photo.bin", "application/octet-stream", CAROL_LATER)],
        ),
        CAROL,
    )
    agent_to = _agent_reply_address(d, shared)
    _send(
        d,
        make_mail(
            sender="Alice Agent <alice@acme.test>",
            to=agent_to,
            subject=f"Re: [{shared}] Printer on floor 3",
            body="#close\nFixed it, thanks Dave and Carol.",
        ),
        "alice@acme.test",
        to=agent_to,
    )
    # An infected mail is refused, leaving only an audit entry naming her.
    code, _ = d.send(
        make_mail(
            sender=CAROL,
            subject="virus",
            attachments=[("e.com", "application/octet-stream", EICAR)],
        ),
        sender=CAROL,
    )
    assert code == 554
    # She signs in on the web, reads her ticket and downloads the shared file.
    b = Browser(d)
    assert _request_link(b, CAROL)[0] == 200
    assert _sign_in(b, _link(d, CAROL))[0] == 303
    assert b.get(f"/t/acme/tickets/{alone}")[0] == 200
    sha = __import__("hashlib").sha256(SHARED).hexdigest()
    assert b.get(f"/t/acme/tickets/{alone}/files/{sha}")[0] == 200
    # And she is a client of another vendor too.
    other = _ref(
        d, _send(d, make_mail(sender=CAROL, to="help@globex.test"), CAROL, "help@globex.test")
    )
    return {"alone": alone, "shared": shared, "globex": other}


def _mentions(d: Daemon, needle: bytes) -> list[str]:
    """Every file under the data folder, and the daemon's log, that contains ``needle``;
    on PostgreSQL (whose files are the server's) also ``var/gateway.db`` when a live row
    of any table does, so the erasure is checked at the row level there."""
    rx = re.compile(re.escape(needle), re.I)
    files = [p for p in (d.home / "var").rglob("*") if p.is_file()] + [d.log_path]
    found = sorted(str(p.relative_to(d.home)) for p in files if rx.search(p.read_bytes()))
    if d.pg_database is not None:
        like = f"%{needle.decode()}%"
        checks = [
            f"SELECT 1 FROM {r[0]} x WHERE x::text ILIKE ? LIMIT 1"
            for r in d.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]  # a row as text shows bytea as hex: the outbox's mail bodies are read as text too
        checks.append("SELECT 1 FROM outbox WHERE encode(body, 'escape') ILIKE ? LIMIT 1")
        checks.append("SELECT 1 FROM blobs WHERE encode(data, 'escape') ILIKE ? LIMIT 1")
        if any(d.query(sql, like) for sql in checks):
            found = sorted([*found, "var/gateway.db"])
    return found


@pytest.mark.parametrize("gw", ["files", "database"], indirect=True)
def test_export_erase_and_nothing_left(gw: Daemon, tmp_path: Path) -> None:
    refs = _fill(gw)
    sha = {
        k: __import__("hashlib").sha256(v).hexdigest()
        for k, v in {"shared": SHARED, "mine": CAROL_ONLY, "later": CAROL_LATER}.items()
    }
    assert gw.query("SELECT count(*) FROM audit_events WHERE action = 'ticket.status'")[0][0] == 1
    downloads = gw.query(
        "SELECT actor FROM audit_events WHERE action = 'web.attachment_downloaded'"
    )
    assert [r[0] for r in downloads] == [CAROL]
    viewed = "SELECT count(*) FROM audit_events WHERE action = 'web.ticket_viewed'"
    assert gw.count_reaching(viewed, 1) == 1  # the view's row, written in a batch

    # -- export: a zip with her tickets, messages, files and audit entries -------------
    out = tmp_path / "carol.zip"
    res = gw.cli("gdpr", "export", CAROL, "--tenant", "acme", "--out", str(out))
    assert res.returncode == 0, res.stderr
    with zipfile.ZipFile(out) as z:
        data = json.loads(z.read("export.json"))
        assert sorted(t["ref"] for t in data["tickets"]) == sorted([refs["alone"], refs["shared"]])
        assert {p["role"] for p in data["participation"]} == {"client", "cc"}
        mine = [m for m in data["messages"] if m["written_by_them"]]
        assert len(mine) == 2 and all(m["raw_file"] for m in mine)
        files = {a["filename"]: z.read(a["file"]) for m in mine for a in m["attachments"]}
        assert files == {"manual.pdf": SHARED, "invoice.txt": CAROL_ONLY, "photo.bin": CAROL_LATER}
        assert b"Please fix my invoice" in z.read(mine[0]["raw_file"])
        actions = {a["action"] for a in data["audit_events"]}
        assert {"ticket.created", "message.infected", "web.login", "web.ticket_viewed"} <= actions
        assert data["sign_in_links"] and data["web_sessions"]
        assert all(m["ticket"] != refs["globex"] for m in data["messages"])  # other vendor's
    stdout_json = json.loads(gw.cli("gdpr", "export", CAROL, "--tenant", "acme").stdout)
    assert len(stdout_json["messages"]) == len(data["messages"])

    # -- erase from acme while the daemon runs ---------------------------------------
    before = _mentions(gw, CAROL.encode())
    assert any(p.startswith("var/gateway.db") for p in before)  # the file or its WAL
    if gw.blobs == "files":
        assert any(p.startswith("var/blobs/") for p in before)
    else:  # no file at all: the raw mail and attachments are rows
        assert not (gw.home / "var" / "blobs").exists()
    res = gw.cli("gdpr", "erase", CAROL, "--tenant", "acme")
    assert res.returncode == 0, res.stderr
    text = res.stdout.decode()
    assert f"tickets deleted (no one else on them): {refs['alone']}" in text
    assert f"tickets kept for other participants: {refs['shared']}" in text

    tickets = {r["ref"] for r in gw.query("SELECT ref FROM tickets WHERE tenant = 'acme'")}
    assert refs["alone"] not in tickets and refs["shared"] in tickets
    people = gw.query("SELECT address FROM participants WHERE tenant = 'acme'")
    assert CAROL not in {r[0] for r in people} and DAVE in {r[0] for r in people}
    # Dave's message and his copy of the shared file stay; hers are gone.
    dave = gw.query("SELECT id, text FROM messages WHERE from_addr = ?", DAVE)
    assert len(dave) == 1 and "my colleague addr:" in dave[0]["text"]
    assert [r[0] for r in gw.query("SELECT sha256 FROM attachments WHERE tenant = 'acme'")] == [
        sha["shared"]
    ]
    assert gw.blob(sha["shared"]) == SHARED
    assert gw.blob(sha["mine"]) is None and gw.blob(sha["later"]) is None
    shell = gw.query(
        "SELECT m.text, m.subject, m.flags FROM messages m JOIN tickets t ON t.id = m.ticket_id "
        "WHERE t.ref = ? AND m.from_addr LIKE 'addr:%'",
        refs["shared"],
    )
    assert [(r[0], r[1], "erased" in r[2]) for r in shell] == [("", "", True)]
    # The tombstone names her by pseudonym only, the one `gdpr hash` gives.
    token = gw.cli("gdpr", "hash", CAROL).stdout.decode().strip()
    tomb = gw.query("SELECT detail FROM audit_events WHERE action = 'gdpr.erased'")
    assert json.loads(tomb[0][0])["subject"] == token
    # Another vendor's data about her is theirs to erase, not acme's.
    assert gw.query("SELECT count(*) FROM participants WHERE address = ?", CAROL)[0][0] == 1

    # -- and from globex; then the address is nowhere in the files or the logs -------
    res = gw.cli("gdpr", "erase", CAROL, "--tenant", "globex")
    assert res.returncode == 0, res.stderr
    assert "no file under" in res.stdout.decode()
    assert _mentions(gw, CAROL.encode()) == []
    assert _mentions(gw, b"Carol Client") == []
    assert _mentions(gw, token.encode())  # only the pseudonym is left
    assert "var/gateway.db" in _mentions(gw, DAVE.encode())  # Dave is untouched (compacted)
    # The web session she had is over, server-side.
    assert gw.query("SELECT count(*) FROM web_sessions")[0][0] == 0


def test_commands_answer_in_one_line(gw: Daemon) -> None:
    for args, code in (
        (("gdpr", "erase", "carol@client.test", "--tenant", "nope"), 64),
        (("gdpr", "export", "not-an-address", "--tenant", "acme"), 64),
        (("gdpr", "erase", "support@acme.test", "--tenant", "acme"), 64),
        (("purge", "--tenant", "nope"), 64),
    ):
        res = gw.cli(*args)
        assert res.returncode == code, (args, res.stderr)
        assert res.stderr.decode().count("\n") == 1 and b"Traceback" not in res.stderr


def test_secret_rotation_and_refusals_are_audited(tmp_path: Path) -> None:
    from routing.secrets import load_keyring

    home = tmp_path / "gw"
    secret = load_keyring(home / "var" / "keys.toml").encrypt(
        "s3cret-pw", tenant="acme", field="password"
    )
    outbound = f'[tenants.outbound]\nhost = "127.0.0.1"\nport = 9\npassword = "{secret}"\n'
    d = Daemon(home, acme_extra=outbound).start()
    try:
        res = d.cli("secrets", "rotate")
        assert res.returncode == 0, res.stderr
        kid = res.stdout.decode().split()[-1]
        rows = d.query(
            "SELECT tenant, actor, detail FROM audit_events WHERE action = ?", "secrets.rotated"
        )
        assert [(r[0], r[1].startswith("admin"), json.loads(r[2])) for r in rows] == [
            ("acme", True, {"key_id": kid})
        ]
        # A refusal after routing (here: a loop, too many Received lines) is audited too.
        hops = "".join(
            f"Received: from h{i}.test by h{i + 1}.test; Mon, 4 Mar 2024\r\n" for i in range(60)
        )
        code, _ = d.send(hops.encode() + make_mail(sender=DAVE), sender=DAVE)
        assert code == 554
        rows = d.query(
            "SELECT tenant, actor, detail FROM audit_events WHERE action = ?", "message.rejected"
        )
        assert [(r[0], r[1]) for r in rows] == [("acme", DAVE)]
        assert json.loads(rows[0][2])["reply"].startswith("554 5.4.0")
    finally:
        d.stop()

"""Who can claim to be whom: issue 16's mail attacks against a running daemon.

Each test is the attack as an outsider sends it (real SMTP to ``gateway run``),
with the senders' domains published by a real DNS server (dnsmasq on
127.0.0.1, tests/dns_harness.py) and mail signed by dkimpy with keys made
here; nothing is mocked. Every test also sends the genuine mail the attack
imitates, so it shows the difference the check makes, not a gateway that
ignores everyone.

The zone: ``shop.test`` (the client's domain) and ``acme.test`` (the tenant's,
so its agents') publish ``p=reject``, a DKIM key and an SPF that 127.0.0.1
fails: only their signed mail passes. ``evil.test`` lets 127.0.0.1 send and
signs its own mail: the attacker authenticates as themselves, never as
anyone else.
"""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default
from email.utils import make_msgid
from pathlib import Path

import pytest

from tests.daemon import Daemon
from tests.dns_harness import Dns, dkim_key, dkim_sign, running_dns

SHOP_KEY, SHOP_RECORD = dkim_key()
ACME_KEY, ACME_RECORD = dkim_key()
EVIL_KEY, EVIL_RECORD = dkim_key()

ZONE = {
    "shop.test": "v=spf1 ip4:192.0.2.1 -all",
    "sel._domainkey.shop.test": SHOP_RECORD,
    "_dmarc.shop.test": "v=DMARC1; p=reject",
    "acme.test": "v=spf1 ip4:192.0.2.2 -all",
    "sel._domainkey.acme.test": ACME_RECORD,
    "_dmarc.acme.test": "v=DMARC1; p=reject",
    "evil.test": "v=spf1 ip4:127.0.0.1 -all",
    "sel._domainkey.evil.test": EVIL_RECORD,
    "client.test": "v=spf1 ip4:127.0.0.1 -all",  # the SMTP client's HELO name
}
KEYS = {"shop.test": SHOP_KEY, "acme.test": ACME_KEY, "evil.test": EVIL_KEY}
CAROL, ALICE = "carol@shop.test", "alice@acme.test"
# A tenant rule that any message from the client would act on: a forged one must not.
RULE = """
[[tenants.rules]]
name = "refunds"
when = { body = "IBAN" }
then = { priority = "urgent" }
"""


@pytest.fixture(scope="module")
def dns() -> Iterator[Dns]:
    with running_dns(ZONE) as server:
        yield server


@pytest.fixture
def gw(dns: Dns, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(
        tmp_path / "gw", gateway_extra=f'dns_resolver = "{dns.address}"\n', acme_extra=RULE
    ).start()
    yield d
    d.stop()


def _mail(
    sender: str,
    body: str,
    *,
    subject: str = "Refund",
    to: str = "support@acme.test",
    mid: str | None = None,
    headers: str = "",
    signed_by: str | None = None,
) -> bytes:
    """A mail From ``sender``; ``signed_by``: the domain whose key signs it (None: unsigned)."""
    text = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid or make_msgid(domain='mail.test')}\r\n{headers}\r\n{body}\r\n"
    ).encode()
    return dkim_sign(text, signed_by, KEYS[signed_by]) if signed_by else text


def _open(d: Daemon) -> str:
    """Carol's genuine first mail (signed by shop.test): the ticket and its ref."""
    code, text = d.send(
        _mail(CAROL, "My order never came.", mid="<c-1@shop.test>", signed_by="shop.test"),
        sender=CAROL,
    )
    assert code == 250 and "ACME" not in text, text  # the 250 names no ticket
    return d.ref(text)


def _ticket(d: Daemon, ref: str) -> tuple[object, ...]:
    """What a message could change on the ticket: status, priority, assignee, clocks."""
    (row,) = d.query(
        "SELECT status, priority, assignee, sla_pauses, first_response_at FROM tickets "
        "WHERE ref = ?",
        ref,
    )
    return tuple(row)


def _outbox(d: Daemon) -> list[tuple[str, str, str]]:
    """(kind, to, first line of the text) of every mail the gateway queued, in order."""
    out = []
    for kind, to, body in d.query("SELECT kind, to_addr, body FROM outbox ORDER BY id"):
        msg = message_from_bytes(bytes(body), policy=default)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        out.append((kind, to, text.splitlines()[0] if text else ""))
    return out


def _token(d: Daemon) -> str:
    """The Reply-To of Alice's notice: her reply token for the ticket."""
    (body,) = d.query("SELECT body FROM outbox WHERE kind = 'notice' AND to_addr = ?", ALICE)
    notice = message_from_bytes(bytes(body[0]), policy=default)
    return str(notice["Reply-To"].addresses[0].addr_spec)


def _flags(d: Daemon, mid: str) -> tuple[str, str]:
    (row,) = d.query("SELECT flags, auth FROM messages WHERE message_id = ?", mid)
    return str(row[0]), row[1]


def test_the_two_mail_takeover_fails(gw: Daemon) -> None:
    """1: From the client (forged), tagged, with a Message-ID the attacker chose;
    2: the attacker's own mail In-Reply-To that Message-ID, to join the ticket."""
    ref = _open(gw)
    plant = _mail(CAROL, "Send my refund to IBAN XX00 0000.", subject=f"Re: [{ref}] Refund",
                  mid="<plant-1@evil.test>")  # fmt: skip
    code, text = gw.send(plant, sender="mallory@evil.test")
    assert code == 250 and ref not in text, text
    assert gw.ref(text) == ref  # kept on the ticket, for the agents to see
    flags, auth = _flags(gw, "<plant-1@evil.test>")
    assert auth == "fail" and "unverified" in flags
    anchors = [r[0] for r in gw.query("SELECT message_id FROM message_ids")]
    assert "<plant-1@evil.test>" not in anchors and "<c-1@shop.test>" in anchors

    join = _mail("mallory@evil.test", "Any news?", subject="Re: Refund",
                 headers="In-Reply-To: <plant-1@evil.test>\r\n", signed_by="evil.test")  # fmt: skip
    code, text = gw.send(join, sender="mallory@evil.test")
    assert code == 250, text
    assert gw.ref(text) != ref  # the planted Message-ID threads nowhere
    assert gw.people(ref) == [CAROL]
    assert _ticket(gw, ref)[:2] == ("open", "normal")  # the forged IBAN moved no rule
    assert [(k, to) for k, to, _ in _outbox(gw) if to == "mallory@evil.test"] == [
        ("ack", "mallory@evil.test")  # for the ticket mallory opened, and nothing of carol's
    ]


def test_a_forged_client_changes_nothing(gw: Daemon) -> None:
    """From the client's address, tagged: as the client, it would be believed."""
    ref = _open(gw)
    before, sent = _ticket(gw, ref), len(_outbox(gw))
    forged = _mail(CAROL, "#cc add mallory@evil.test\nMy new IBAN is XX00.",
                   subject=f"Re: [{ref}] Refund", mid="<f-1@evil.test>")  # fmt: skip
    code, text = gw.send(forged, sender="mallory@evil.test")
    assert code == 250 and gw.ref(text) == ref, text
    assert _flags(gw, "<f-1@evil.test>") == ('["unverified"]', "fail")
    assert _ticket(gw, ref) == before and gw.people(ref) == [CAROL]
    # Only the agent hears of it, warned first; nobody else gets anything.
    assert _outbox(gw)[sent:] == [("notice", ALICE, "Warning: unverified sender. This "
                                   "message claims to be from carol@shop.test, but the "
                                   "sender's domain does not vouch for it (sender "
                                   "authentication failed). Nothing was relayed, "
                                   "acknowledged or changed by it.")]  # fmt: skip

    # The same words, signed by carol's domain: carol, and the rule acts.
    genuine = _mail(CAROL, "My new IBAN is XX00.", subject=f"Re: [{ref}] Refund",
                    mid="<c-2@shop.test>", signed_by="shop.test")  # fmt: skip
    assert gw.ref(gw.send(genuine, sender=CAROL)[1]) == ref
    assert _flags(gw, "<c-2@shop.test>") == ("[]", "pass")
    assert _ticket(gw, ref)[1] == "urgent"


def test_a_forged_agent_is_not_relayed_and_changes_nothing(gw: Daemon) -> None:
    """From the agent, to the agent's reply address (a leaked notice), not signed by
    the agent's domain: with the token alone it would speak for the tenant."""
    ref = _open(gw)
    token = _token(gw)
    before, sent = _ticket(gw, ref), len(_outbox(gw))
    forged = _mail(ALICE, "#close\n#cc add mallory@evil.test\nPlease pay to IBAN XX00.",
                   subject="Re: Refund", to=token, mid="<fa-1@evil.test>")  # fmt: skip
    code, text = gw.send(forged, to=token, sender="mallory@evil.test")
    assert code == 250 and gw.ref(text) == ref, text
    flags, auth = _flags(gw, "<fa-1@evil.test>")
    assert auth == "fail" and "agent-unauthenticated" in flags and "unverified" in flags
    assert _ticket(gw, ref) == before and gw.people(ref) == [CAROL]  # no #close, no #cc
    # Not relayed; the agent whose From it forged is the one who must hear of it.
    new = _outbox(gw)[sent:]
    assert [(k, to) for k, to, _ in new] == [("notice", ALICE)], new
    assert new[0][2].startswith("Warning: unverified sender."), new

    # Alice's own reply, signed by acme.test, is relayed and its #close runs.
    genuine = _mail(ALICE, "#close\nYour parcel is on its way.", subject="Re: Refund",
                    to=token, mid="<a-1@acme.test>", signed_by="acme.test")  # fmt: skip
    assert gw.ref(gw.send(genuine, to=token, sender=ALICE)[1]) == ref
    assert _flags(gw, "<a-1@acme.test>") == ("[]", "pass")
    assert [(k, to) for k, to, _ in _outbox(gw)][-1] == ("relay", CAROL)
    assert _ticket(gw, ref)[0] == "closed"


def test_a_token_with_another_unauthenticated_from_still_tells_the_agent(gw: Daemon) -> None:
    """The agent's reply address with the client's (forged) From: refused, and the agent
    is told, even though the From also fails authentication."""
    ref = _open(gw)
    token = _token(gw)
    before, sent = _ticket(gw, ref), len(_outbox(gw))
    forged = _mail(CAROL, "#cc add mallory@evil.test\nPay to IBAN XX00.", subject="Re: Refund",
                   to=token, mid="<ft-1@evil.test>")  # fmt: skip
    code, text = gw.send(forged, to=token, sender="mallory@evil.test")
    assert code == 250 and gw.ref(text) == ref, text
    flags, auth = _flags(gw, "<ft-1@evil.test>")
    assert auth == "fail" and "agent-token-from-mismatch" in flags and "unverified" in flags
    assert _ticket(gw, ref) == before and gw.people(ref) == [CAROL]
    new = _outbox(gw)[sent:]
    assert new == [("refusal", ALICE, f"Your reply on {ref} was NOT sent to the client.")], new

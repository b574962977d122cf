"""Sender authentication against a real DNS server (dnsmasq on 127.0.0.1) and mail
signed by dkimpy with keys made here; nothing mocked.

The zone: ``good.test`` publishes SPF for 127.0.0.1, a DKIM key and ``p=reject``;
``bank.test`` publishes ``p=reject`` and an SPF that 127.0.0.1 fails; ``evil.test``
lets 127.0.0.1 send and signs its own mail; ``nopolicy.test`` has no DMARC record
and an SPF that fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default
from email.utils import make_msgid
from pathlib import Path

import pytest

from gateway.intake.auth import Authenticator, trusted_id
from parsers.types import Envelope, RawMessage
from routing.auth import AuthVerdict
from routing.config import load_config
from routing.errors import ConfigError
from tests.daemon import Daemon
from tests.dns_harness import Dns, closed_port, dkim_key, dkim_sign, running_dns

GOOD_KEY, GOOD_RECORD = dkim_key()
EVIL_KEY, EVIL_RECORD = dkim_key()
NOPOLICY_KEY, NOPOLICY_RECORD = dkim_key()

ZONE = {
    "good.test": "v=spf1 ip4:127.0.0.1 -all",
    "sel._domainkey.good.test": GOOD_RECORD,
    "_dmarc.good.test": "v=DMARC1; p=reject",
    "bank.test": "v=spf1 ip4:192.0.2.1 -all",
    "_dmarc.bank.test": "v=DMARC1; p=reject",
    "evil.test": "v=spf1 ip4:127.0.0.1 -all",
    "sel._domainkey.evil.test": EVIL_RECORD,
    "nopolicy.test": "v=spf1 -all",
    "sel._domainkey.nopolicy.test": NOPOLICY_RECORD,
    "client.test": "v=spf1 ip4:127.0.0.1 -all",  # the SMTP client's HELO name
}


@pytest.fixture(scope="module")
def dns() -> Iterator[Dns]:
    with running_dns(ZONE) as server:
        yield server


def _mail(from_addr: str, *, sign: tuple[str, bytes] | None = None, headers: str = "") -> bytes:
    text = (
        f"{headers}From: {from_addr}\r\nTo: support@acme.test\r\nSubject: auth test\r\n"
        f"Message-ID: {make_msgid(domain='t.test')}\r\n\r\nHello.\r\n"
    ).encode()
    if sign is not None:
        text = dkim_sign(text, *sign)
    return text


def _config(tmp_path: Path, resolver: str, timeout: float = 3.0, trusted: str = ""):  # type: ignore[no-untyped-def]
    smtp = f'[smtp]\ntrusted_authserv_id = "{trusted}"\n' if trusted else ""
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\nhostname = "gw.test"\ndns_resolver = "{resolver}"\n'
        f"dns_timeout = {timeout}\n{smtp}"
        '[[tenants]]\nslug = "acme"\nname = "Acme"\naddresses = ["support@acme.test"]\n'
        'tag_prefix = "ACME"\n'
    )
    return load_config(path)


def _check(config, data: bytes, mail_from: str, from_addr: str) -> AuthVerdict:  # type: ignore[no-untyped-def]
    raw = RawMessage(Envelope(mail_from, ("support@acme.test",), "127.0.0.1"), data, "smtp")
    trusted = config.smtp.trusted_authserv_id
    return asyncio.run(Authenticator(config).verdict(raw, from_addr, trusted, "client.test"))


def test_aligned_dkim_and_spf_pass(dns: Dns, tmp_path: Path) -> None:
    data = _mail("alice@good.test", sign=("good.test", GOOD_KEY))
    v = _check(_config(tmp_path, dns.address), data, "alice@good.test", "alice@good.test")
    assert (v.summary, v.spf, v.dkim, v.dmarc) == ("pass", "pass", "pass", "pass")
    assert v.header.startswith("gw.test;"), v.header  # our own authserv-id
    assert "dmarc=pass header.from=good.test" in v.header
    assert "spf=pass smtp.mailfrom=alice@good.test" in v.header
    assert "spf=pass smtp.helo=client.test" in v.header


def test_forged_from_of_a_reject_domain_fails_dmarc(dns: Dns, tmp_path: Path) -> None:
    """SPF and DKIM pass, but for evil.test: nothing aligns with the bank's From."""
    data = _mail("ceo@bank.test", sign=("evil.test", EVIL_KEY))
    v = _check(_config(tmp_path, dns.address), data, "mallory@evil.test", "ceo@bank.test")
    assert (v.spf, v.dkim, v.dmarc, v.summary) == ("pass", "pass", "fail", "fail")


def test_no_policy_and_both_spf_and_dkim_failing_is_a_fail(dns: Dns, tmp_path: Path) -> None:
    signed = _mail("bob@nopolicy.test", sign=("nopolicy.test", NOPOLICY_KEY))
    tampered = signed.replace(b"Hello.", b"Pay to IBAN XX00.")  # after signing
    v = _check(_config(tmp_path, dns.address), tampered, "bob@nopolicy.test", "bob@nopolicy.test")
    assert (v.spf, v.dkim, v.dmarc, v.summary) == ("fail", "fail", "none", "fail")
    # the same signed mail untouched passes by DKIM alone, though SPF still fails
    v = _check(_config(tmp_path, dns.address), signed, "bob@nopolicy.test", "bob@nopolicy.test")
    assert (v.spf, v.dkim, v.dmarc, v.summary) == ("fail", "pass", "none", "pass")


def test_dns_down_is_a_temperror_never_a_pass(tmp_path: Path) -> None:
    """Mail that would pass with DNS (signed, aligned) is a temperror without it."""
    data = _mail("alice@good.test", sign=("good.test", GOOD_KEY))
    config = _config(tmp_path, f"127.0.0.1:{closed_port()}", timeout=0.5)
    v = _check(config, data, "alice@good.test", "alice@good.test")
    assert (v.spf, v.dkim, v.dmarc, v.summary) == ("temperror",) * 4


def test_no_resolver_and_no_trusted_header_is_auth_none(tmp_path: Path) -> None:
    data = _mail("alice@good.test", headers="Authentication-Results: gw.test; dmarc=pass\r\n")
    v = _check(_config(tmp_path, "none"), data, "alice@good.test", "alice@good.test")
    assert (v.summary, v.header) == ("none", "")


def test_trusted_front_mta_header_is_believed_without_dns(tmp_path: Path) -> None:
    top = (
        "Authentication-Results: mx.front.test; spf=pass smtp.mailfrom=alice@good.test;\r\n"
        " dkim=pass header.d=good.test; dmarc=pass header.from=good.test\r\n"
    )
    config = _config(tmp_path, "none", trusted="mx.front.test")
    v = _check(config, _mail("alice@good.test", headers=top), "alice@good.test", "alice@good.test")
    assert (v.summary, v.dmarc) == ("pass", "pass")
    assert v.header.startswith("mx.front.test;")


def test_forged_results_below_the_trusted_one_and_other_ids_are_ignored(tmp_path: Path) -> None:
    config = _config(tmp_path, "none", trusted="mx.front.test")
    top = (
        "Authentication-Results: mx.front.test; dmarc=fail header.from=bank.test\r\n"
        "Received: from mail.evil.test by mx.front.test (Postfix)\r\n"  # the front's own
    )
    forged = (
        "Authentication-Results: mx.front.test; spf=pass smtp.mailfrom=ceo@bank.test;"
        " dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test\r\n"
    )
    v = _check(config, _mail("ceo@bank.test", headers=top + forged), "", "ceo@bank.test")
    assert "dmarc=pass" not in v.header, v.header
    assert (v.summary, v.dmarc) == ("fail", "fail")
    # Only other ids (the sender's own words): nothing is believed.
    other = "Authentication-Results: mx.other.test; dmarc=pass header.from=bank.test\r\n"
    v = _check(config, _mail("ceo@bank.test", headers=other), "", "ceo@bank.test")
    assert v.summary == "none"
    # A forged one on top of the mail (with our trusted id) when our MTA wrote none.
    v = _check(config, _mail("ceo@bank.test", headers=other + forged), "", "ceo@bank.test")
    assert v.summary == "pass"  # indistinguishable: why the front MTA must strip them


def test_daemon_stores_the_verdict_and_tickets_show_says_it(dns: Dns, tmp_path: Path) -> None:
    """SMTP end to end: the verdict is written with the message and shown per message."""
    d = Daemon(tmp_path / "gw", gateway_extra=f'dns_resolver = "{dns.address}"\n').start()
    try:
        code, text = d.send(_mail("alice@good.test", sign=("good.test", GOOD_KEY)),
                            sender="alice@good.test")  # fmt: skip
        assert code == 250, text
        code, text = d.send(_mail("ceo@bank.test", sign=("evil.test", EVIL_KEY)),
                            sender="mallory@evil.test")  # fmt: skip
        assert code == 250, text
        rows = d.query("SELECT from_addr, auth, auth_results FROM messages ORDER BY id")
        assert [(r[0], r[1]) for r in rows] == [
            ("alice@good.test", "pass"),
            ("ceo@bank.test", "fail"),
        ]
        assert rows[0][2].startswith("gw.test;") and "dmarc=pass" in rows[0][2]
        refs = [r[0] for r in d.query("SELECT ref FROM tickets ORDER BY id")]
        shown = d.cli("tickets", "show", refs[0])
        assert shown.returncode == 0, shown.stderr
        assert b"auth=pass" in shown.stdout, shown.stdout
        shown = d.cli("tickets", "show", refs[1])
        assert b"auth=fail" in shown.stdout, shown.stdout
        # The forged bank mail is kept for the agents, but nobody is answered for it.
        acks = "SELECT count(*) FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
        acks += "WHERE t.ref = ? AND o.kind = 'ack'"
        assert [d.query(acks, ref)[0][0] for ref in refs] == [1, 0]
        notices = "SELECT o.body FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
        notices += "WHERE t.ref = ? AND o.kind = 'notice'"
        first = [
            message_from_bytes(bytes(d.query(notices, ref)[0][0]), policy=default)
            .get_body(("plain",))
            .get_content()
            .splitlines()[0]
            for ref in refs
        ]
        assert not first[0].startswith("Warning"), first[0]
        assert first[1].startswith("Warning: unverified sender."), first[1]
        flags = d.query("SELECT flags FROM messages ORDER BY id")
        assert "unverified" in str(flags[1][0]) and "unverified" not in str(flags[0][0])
    finally:
        d.stop()


def test_config_check_says_tenants_run_unauthenticated(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "gw")  # the test default: dns_resolver = "none"
    out = d.cli("config", "check")
    assert b"unauthenticated" in out.stdout + out.stderr, out


def test_route_explain_shows_the_verdict(tmp_path: Path) -> None:
    """Behind a front MTA: explain believes its header as the pipeline would."""
    d = Daemon(tmp_path / "gw")
    d.config.write_text(
        d.config.read_text().replace("[smtp]\n", '[smtp]\ntrusted_authserv_id = "mx.front.test"\n')
    )
    top = (
        "Authentication-Results: mx.front.test; dmarc=fail header.from=bank.test\r\n"
        "Received: from mail.evil.test by mx.front.test (Postfix)\r\n"
    )
    forged = "Authentication-Results: mx.front.test; dmarc=pass header.from=bank.test\r\n"
    eml = tmp_path / "forged.eml"
    eml.write_bytes(_mail("ceo@bank.test", headers=top + forged))
    out = d.cli("route", "explain", str(eml))
    assert out.returncode == 0, out.stderr
    assert b"auth=fail   mx.front.test; dmarc=fail" in out.stdout, out.stdout
    assert b"dmarc=pass" not in out.stdout, out.stdout  # the forgery under the Received
    # no front MTA configured and no DNS: the headers are the sender's words
    d.config.write_text(d.config.read_text().replace('trusted_authserv_id = "mx.front.test"\n', ""))
    out = d.cli("route", "explain", str(eml))
    assert out.returncode == 0 and b"auth    auth=none\n" in out.stdout, out.stdout


def test_each_way_in_has_its_own_trusted_id(tmp_path: Path) -> None:
    """[smtp] for SMTP and ingest; each IMAP mailbox its provider's, found by host and
    the tenant address it drains (a plus-token address too)."""
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[gateway]\nhostname = "gw.test"\n[smtp]\ntrusted_authserv_id = "mx.front.test"\n'
        '[[tenants]]\nslug = "acme"\naddresses = ["support@acme.test"]\ntag_prefix = "ACME"\n'
        '[[tenants.imap]]\nhost = "imap.provider.test"\nusername = "u"\n'
        'trusted_authserv_id = "mx.provider.test"\n'
    )
    config = load_config(path)
    tenants = list(config.tenants)

    def way(source: str, peer: str, rcpt: str = "support@acme.test") -> str:
        return trusted_id(config, RawMessage(Envelope("", (rcpt,), peer), b"", source), tenants)

    assert way("smtp", "192.0.2.1") == way("ingest", "") == "mx.front.test"
    assert way("imap", "imap:imap.provider.test") == "mx.provider.test"
    assert way("imap", "imap:imap.provider.test", "support+t1-abc@acme.test") == "mx.provider.test"
    assert way("imap", "imap:other.test") == ""  # not a mailbox of ours: nothing trusted
    bad = path.read_text().replace('"mx.front.test"', "5")
    path.write_text(bad)
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('dns_resolver = "dns.example:53"', "gateway.dns_resolver"),
        ('dns_resolver = "127.0.0.1"', "gateway.dns_resolver"),
        ("dns_timeout = 0", "gateway.dns_timeout"),
    ],
)
def test_bad_resolver_settings_are_config_errors(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[gateway]\nhostname = "gw.test"\n{line}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(problem in p for p in err.value.problems), err.value.problems
    path.write_text('[gateway]\nhostname = "gw.test"\ndns_resolver = "[::1]:5353"\n')
    assert load_config(path).dns_resolver == "[::1]:5353"

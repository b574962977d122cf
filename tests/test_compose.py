"""What the gateway writes: templates an admin can override, headers robots respect."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from outbound.compose import Templates, acknowledgement, thread_index
from parsers import parse
from routing.commands import split_commands
from routing.config import Tenant

ACME = Tenant(slug="acme", name="Acme Support", addresses=("support@acme.test",), tag_prefix="ACME")
GLOBEX = Tenant(slug="globex", name="Globex", addresses=("help@globex.test",), tag_prefix="GLOBEX")


def _ack(tenant: Tenant, templates: Templates, subject: str = "Drucker kaputt — Zürich") -> bytes:
    return acknowledgement(
        tenant=tenant,
        hostname="gw.test",
        ref="ACME-7",
        subject=subject,
        to_addr="zoe@client.test",
        to_name="Zoë Ünal",
        reply_address="support+t7-abc@acme.test",
        in_reply_to="<orig@client.test>",
        now=datetime(2026, 11, 23, tzinfo=UTC),
        templates=templates,
    ).body


def test_a_tenant_template_overrides_ours_and_only_for_that_tenant(tmp_path: Path) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "ack.txt.j2").write_text("Moin {{ name }}, Ticket {{ ref }}.\n")
    t = Templates(tmp_path)
    acme = message_from_bytes(_ack(ACME, t), policy=default)
    assert acme.get_content().replace("\r\n", "\n") == "Moin Zoë Ünal, Ticket ACME-7.\n"
    globex = message_from_bytes(_ack(GLOBEX, t), policy=default)
    assert "we have received your message" in globex.get_content()


def test_the_ack_reads_back_as_an_auto_reply_in_the_clients_thread() -> None:
    raw = _ack(ACME, Templates())
    p = parse(raw)
    assert p.kind == "auto_reply" and p.auto_submitted == "auto-replied"
    assert p.subject == "[ACME-7] Drucker kaputt — Zürich" and p.from_addr == "support@acme.test"
    assert p.thread_hints.in_reply_to == "<orig@client.test>" and p.loop_markers == ("gw.test",)
    msg = message_from_bytes(raw, policy=default)
    assert msg["Thread-Index"] == thread_index("acme", "ACME-7") and msg["Thread-Topic"]
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_header_injection_through_the_subject_is_flattened() -> None:
    raw = _ack(ACME, Templates(), subject="hi\r\nBcc: victim@x.test")
    msg = message_from_bytes(raw, policy=default)
    assert msg["Bcc"] is None and "Bcc: victim" in msg["Subject"]


def test_commands_only_count_on_leading_lines() -> None:
    cmds, text = split_commands("#close\n#priority high\n\nThanks!\n#note is not a command here")
    assert (cmds.status, cmds.priority, cmds.note) == ("closed", "high", False)
    assert text == "Thanks!\n#note is not a command here"
    cmds, text = split_commands("#hashtag first\nhello")
    assert not cmds.any and text == "#hashtag first\nhello"
    cmds, _ = split_commands("#priority whenever")
    assert cmds.priority is None and cmds.problems


def test_the_ack_points_to_the_portal_only_when_there_is_one() -> None:
    def text(portal: str) -> str:
        mail = acknowledgement(
            tenant=ACME,
            hostname="gw.test",
            ref="ACME-7",
            subject="Hi",
            to_addr="zoe@client.test",
            to_name="",
            reply_address="support+t7-abc@acme.test",
            in_reply_to=None,
            now=datetime(2026, 11, 23, tzinfo=UTC),
            portal=portal,
        )
        return message_from_bytes(mail.body, policy=default).get_content()

    assert "https://help.acme.test/t/acme/" in text("https://help.acme.test/t/acme/")
    assert "browser" not in text("")

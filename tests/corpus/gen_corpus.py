#!/usr/bin/env python3
"""Generate a seeded, system-neutral corpus of raw helpdesk emails (.eml).

Usage:
    python3 gen_corpus.py OUTDIR [--count N] [--seed S]
                          [--tenant acme=support@acme.test --tenant globex=help@globex.test]

Writes OUTDIR/<wave>-<seq>.eml (CRLF line endings, RFC 5322) and
OUTDIR/expectations.json describing what a correct helpdesk does with each
message. Only the standard library is used, so any gateway can reuse it.

Delivery contract (read this before feeding the corpus to a system):

* Deliver in file-name order. Files are grouped in *waves* (the `wNN-`
  prefix). A message only depends on messages of earlier waves, so a system
  that processes a whole batch at once (or in arbitrary order, like a maildir
  scan) still sees every parent before its replies if each wave is fully
  ingested before the next is delivered.
* Some replies quote the ticket's subject tag, which only the system under
  test knows (django-helpdesk: `[acme-12]`, ours: `[ACME-1234]`). Such files
  contain the literal placeholder `{{TAG:<thread>}}` (pure ASCII, outside any
  encoded-word: in the Subject, or in the returned headers inside a DSN) and
  carry `needs_tag` in the expectations. The feeder replaces it, right before delivery, with the tag
  of the ticket that holds that thread's root message, as the system would
  have mailed it to the client (the brackets are already in the file). If the
  system has no such ticket, use `unknown`.
* `to` in the expectations is the envelope recipient / mailbox to deliver to.

Expectation semantics (field `expect`):
  action       new_ticket | followup | ignore | duplicate
  thread       the thread (= ticket) the message belongs to; for `ignore` the
               ticket it may be *recorded* on (never a new ticket)
  answer       whether an automatic acknowledgement to the sender is right
               (false for auto-replies, bounces and duplicates: RFC 3834, loops)
  subject      decoded subject; for new_ticket the expected ticket title
  body_marker  decoded text that must appear verbatim in the stored body
  attachments  list of {name, sha256, size, content_type, inline}
  sender       the address the ticket/follow-up must be attributed to
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import os
import quopri
import random
import struct
import sys
import zlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

DEFAULT_TENANTS = [("acme", "support@acme.test"), ("globex", "help@globex.test")]

FIRST_NAMES = [
    ("Alice", "alice"),
    ("Bob", "bob"),
    ("Chloé", "chloe"),
    ("Dmitri", "dmitri"),
    ("Erik", "erik"),
    ("Fatima", "fatima"),
    ("Günter", "guenter"),
    ("Hana", "hana"),
    ("Ines", "ines"),
    ("José", "jose"),
    ("Kenji", "kenji"),
    ("Lena", "lena"),
    ("Mårten", "maarten"),
    ("Nina", "nina"),
    ("Oskar", "oskar"),
    ("Priya", "priya"),
    ("Quentin", "quentin"),
    ("Renée", "renee"),
    ("Søren", "soeren"),
    ("Tomás", "tomas"),
    ("Ulla", "ulla"),
    ("Víctor", "victor"),
    ("Wen", "wen"),
    ("Yuki", "yuki"),
]
LAST_NAMES = [
    "Müller",
    "Smith",
    "Novák",
    "Dubois",
    "Tanaka",
    "García",
    "Kowalski",
    "O'Brien",
    "Jansen",
    "Rossi",
    "Łukasz",
    "Nguyen",
]
DOMAINS = [
    "initech.test",
    "hooli.test",
    "umbrella.test",
    "stark.test",
    "wayne.test",
    "wonka.test",
    "tyrell.test",
    "cyberdyne.test",
    "soylent.test",
    "vandelay.test",
]

TOPICS = [
    "Printer on 3rd floor jammed",
    "Password reset",
    "Invoice question",
    "VPN drops every hour",
    "Cannot log in to portal",
    "Refund request",
    "Laptop battery swollen",
    "Shipment not arrived",
    "Wrong item delivered",
    "Licence key not accepted",
    "Email quota exceeded",
    "Calendar sync broken",
    "Need access to shared drive",
    "Error 500 on checkout",
    "Change billing address",
]

# Text that must survive decoding, per charset. Every character is encodable in it.
PHRASES = {
    "utf-8": [
        "Zürich café ✓ Ελληνικά 中文 🙂",
        "naïve résumé — 東京 ★ Łódź",
        "Straße ½ € “quotes” ✔",
    ],
    "us-ascii": ["plain ascii text only", "nothing special here"],
    "iso-8859-1": ["Größe: ½ déjà vu, naïve façade", "Grüße aus Köln, Ångström ±5°"],
    "windows-1252": ["Preis: 12 € „Anführung“ – ok", "Price: 30 € • “smart” ‘quotes’ …"],
    "shift_jis": [
        "プリンターが動きません。至急対応お願いします",
        "請求書の金額が違います（第３四半期）",
    ],
}
WINDOWS_PATHS = [
    r"C:\Users\nina\AppData\Local\Temp\setup.log",
    r"\\fileserver\new\reports\2024\x64\build.txt",
    r"HKEY_LOCAL_MACHINE\SOFTWARE\Acme\uninstall",
]

# Class mixes (each entry appears with the given weight, round-robin shuffled).
ROOT_BODIES = [
    ("plain-utf8-qp", 10),
    ("plain-utf8-8bit", 8),
    ("plain-ascii-winpath", 5),
    ("html-only", 8),
    ("alternative", 8),
    ("latin1-8bit", 4),
    ("latin1-qp", 4),
    ("cp1252-8bit", 3),
    ("cp1252-qp", 3),
    ("sjis-base64", 3),
    ("sjis-8bit", 2),
    ("att-pdf", 8),
    ("att-pdf-rfc2231-name", 3),
    ("att-pdf-ew-name", 2),
    ("att-text-log", 3),
    ("att-xlsx", 2),
    ("inline-cid-image", 5),
    ("no-message-id", 2),
]
REPLY_BODIES = [
    ("plain-utf8-qp", 6),
    ("plain-utf8-8bit", 4),
    ("latin1-qp", 2),
    ("html-only", 3),
    ("alternative", 3),
    ("att-pdf", 3),
    ("inline-cid-image", 1),
]
REPLY_MODES = [("in-reply-to", 8), ("references-only", 4), ("tag-only", 5), ("tag+references", 3)]
SUBJECT_STYLES = [
    ("ascii", 10),
    ("ew-utf8-b", 3),
    ("ew-utf8-q", 2),
    ("ew-latin1-q", 2),
    ("raw-utf8", 1),
]
AUTOREPLY_VARIANTS = ["rfc3834-tagged", "rfc3834-untagged", "exchange-ooo", "precedence-only"]
BOUNCE_VARIANTS = ["postfix-dsn", "exim-dsn"]
DUP_VARIANTS = ["dup-root", "dup-reply"]
FORGED_VARIANTS = ["forged-tag", "forged-in-reply-to"]


def weighted_cycle(rng: random.Random, items):
    """Yield classes forever, each block holding every class `weight` times, shuffled.

    Round-robin blocks (instead of independent draws) guarantee that even a
    small corpus contains every class."""
    block = [name for name, w in items for _ in range(w)]
    while True:
        rng.shuffle(block)
        yield from list(block)


# ---------------------------------------------------------------- encoders


def ew(text: str, charset: str, enc: str = "b") -> str:
    """RFC 2047 encoded words, split on character boundaries, folded."""
    words, chunk = [], ""
    py = {
        "utf-8": "utf-8",
        "iso-8859-1": "latin-1",
        "windows-1252": "cp1252",
        "shift_jis": "shift_jis",
    }[charset]

    def enc_word(s: str) -> str:
        raw = s.encode(py)
        if enc == "b":
            return f"=?{charset}?B?{base64.b64encode(raw).decode()}?="
        out = []
        for b in raw:
            c = chr(b)
            if c == " ":
                out.append("_")
            elif c.isalnum() and b < 128:
                out.append(c)
            else:
                out.append(f"={b:02X}")
        return f"=?{charset}?Q?{''.join(out)}?="

    for ch in text:
        if len(enc_word(chunk + ch)) > 70:
            words.append(enc_word(chunk))
            chunk = ""
        chunk += ch
    if chunk:
        words.append(enc_word(chunk))
    return "\r\n ".join(words)


def addr(name: str, email: str, style: str = "auto") -> str:
    if all(ord(c) < 128 for c in name):
        if any(c in name for c in "'.,"):
            return f'"{name}" <{email}>'
        return f"{name} <{email}>"
    return f"{ew(name, 'utf-8', 'q')} <{email}>"


def encode_part_body(text: str, charset: str, cte: str) -> bytes:
    py = {
        "utf-8": "utf-8",
        "us-ascii": "ascii",
        "iso-8859-1": "latin-1",
        "windows-1252": "cp1252",
        "shift_jis": "shift_jis",
    }[charset]
    raw = text.replace("\r\n", "\n").encode(py)
    if cte in ("7bit", "8bit"):
        return raw
    if cte == "quoted-printable":
        return quopri.encodestring(raw)
    if cte == "base64":
        return base64.encodebytes(raw)
    raise ValueError(cte)


def text_part(text: str, subtype: str, charset: str, cte: str) -> bytes:
    hdr = f'Content-Type: text/{subtype}; charset="{charset}"\nContent-Transfer-Encoding: {cte}\n\n'
    return hdr.encode() + encode_part_body(text, charset, cte)


def b64_part(
    data: bytes, ctype: str, disposition: str, filename_hdr: str, extra: str = ""
) -> bytes:
    hdr = (
        f"Content-Type: {ctype}; name{filename_hdr}\n"
        f"Content-Transfer-Encoding: base64\n"
        f"Content-Disposition: {disposition}; filename{filename_hdr}\n{extra}\n"
    )
    return hdr.encode() + base64.encodebytes(data)


def multipart(subtype: str, parts: list[bytes], boundary: str, extra_params: str = "") -> bytes:
    out = [
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"{extra_params}\n\n'.encode(),
        b"This is a multi-part message in MIME format.\n",
    ]
    for p in parts:
        out.append(f"--{boundary}\n".encode())
        # the line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1)
        out.append((p if p.endswith(b"\n") else p + b"\n") + b"\n")
    out.append(f"--{boundary}--\n".encode())
    return b"".join(out)


def tiny_png(rng: random.Random) -> bytes:
    w = h = 8
    color = bytes(rng.randrange(256) for _ in range(3))
    rows = b"".join(b"\x00" + color * w for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def fake_pdf(rng: random.Random) -> bytes:
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(1500, 6000)))
    return (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nstream\n"
        + body
        + b"\nendstream\n%%EOF\n"
    )


def fake_xlsx(rng: random.Random) -> bytes:
    return b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(rng.randrange(800, 3000)))


def att_meta(name: str, data: bytes, ctype: str, inline: bool = False) -> dict:
    return {
        "name": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "sha256_lf": hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest(),
        "content_type": ctype,
        "inline": inline,
    }


# ---------------------------------------------------------------- generator


class Corpus:
    def __init__(self, n: int, seed: int, tenants: list[tuple[str, str]]):
        self.n, self.seed, self.tenants = n, seed, tenants
        self.rng = random.Random(seed)
        self.msgs: list[dict] = []
        self.threads: dict[str, dict] = {}
        self.clock = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)
        self.root_bodies = weighted_cycle(self.rng, ROOT_BODIES)
        self.reply_bodies = weighted_cycle(self.rng, REPLY_BODIES)
        self.reply_modes = weighted_cycle(self.rng, REPLY_MODES)
        self.subject_styles = weighted_cycle(self.rng, SUBJECT_STYLES)
        self.uid = 0
        self.clients = []
        for i in range(max(12, n // 6)):
            first, local = self.rng.choice(FIRST_NAMES)
            last = self.rng.choice(LAST_NAMES)
            dom = self.rng.choice(DOMAINS)
            self.clients.append((f"{first} {last}", f"{local}.{i}@{dom}"))

    # -- helpers
    def token(self) -> str:
        self.uid += 1
        return f"{self.seed:x}{self.uid:05d}{self.rng.randrange(16**6):06x}"

    def msgid(self, email: str) -> str:
        return f"<{self.token()}.{self.rng.randrange(10**9)}@mail.{email.split('@')[1]}>"

    def code(self) -> str:
        return f"REF-{self.seed}-{self.uid:05d}-{self.rng.randrange(10**4):04d}"

    def encode_subject(self, subject: str, style: str, prefix: str = "") -> tuple[str, str]:
        """Return (raw header value, decoded value). `prefix` stays ASCII."""
        if style == "ascii":
            return prefix + subject, prefix + subject
        if all(ord(c) < 128 for c in subject):
            # make the subject non-ASCII so that the encoding is exercised
            subject += " – " + self.rng.choice(["Zürich", "café", "Ærøskøbing", "naïve", "Dvořák"])
        if style == "ew-utf8-b":
            return prefix + ew(subject, "utf-8", "b"), prefix + subject
        if style == "ew-utf8-q":
            return prefix + ew(subject, "utf-8", "q"), prefix + subject
        if style == "ew-latin1-q":
            s = subject.encode("latin-1", "replace").decode("latin-1").replace("?", "-")
            return prefix + ew(s, "iso-8859-1", "q"), prefix + s
        if style == "ew-sjis-b":
            return prefix + ew(subject, "shift_jis", "b"), prefix + subject
        if style == "raw-utf8":
            return prefix + subject, prefix + subject
        raise ValueError(style)

    def body_text(
        self, charset: str, greeting: str, marker: str, sender_name: str, quoted: str | None
    ) -> str:
        lines = [
            f"{greeting}",
            "",
            marker,
            "",
            self.rng.choice(
                [
                    "Could you please have a look?",
                    "Thanks in advance.",
                    "It started yesterday after the update.",
                    "This is urgent for us.",
                ]
            ),
            "",
            "Best regards,",
            sender_name if charset not in ("us-ascii",) else "Client",
        ]
        if quoted:
            lines += ["", "On Mon, 4 Mar 2024 at 09:00, Support wrote:"] + [
                "> " + q for q in quoted.splitlines()
            ]
        text = "\n".join(lines) + "\n"
        py = {
            "utf-8": "utf-8",
            "us-ascii": "ascii",
            "iso-8859-1": "latin-1",
            "windows-1252": "cp1252",
            "shift_jis": "shift_jis",
        }[charset]
        return text.encode(py, "replace").decode(py)

    def build_body(self, cls: str, sender_name: str, quoted: str | None) -> tuple[bytes, dict]:
        """Returns (MIME entity bytes incl. its Content-* headers, expectation bits)."""
        rng = self.rng
        code = self.code()
        info: dict = {"attachments": [], "body_classes": [cls]}

        def marker_for(charset: str) -> str:
            return f"{rng.choice(PHRASES[charset])} [{code}]"

        greet = rng.choice(["Hello,", "Hi team,", "Dear support,", "Good morning,"])
        if cls in ("plain-utf8-qp", "plain-utf8-8bit", "no-message-id"):
            marker = marker_for("utf-8")
            cte = "8bit" if cls == "plain-utf8-8bit" else "quoted-printable"
            body = text_part(
                self.body_text("utf-8", greet, marker, sender_name, quoted), "plain", "utf-8", cte
            )
        elif cls == "plain-ascii-winpath":
            marker = f"The log is at {rng.choice(WINDOWS_PATHS)} [{code}]"
            # ASCII text labelled UTF-8 and sent 7bit, as Thunderbird and Gmail do
            body = text_part(
                self.body_text("us-ascii", greet, marker, "Client", quoted),
                "plain",
                "utf-8",
                "7bit",
            )
        elif cls in ("latin1-8bit", "latin1-qp"):
            marker = marker_for("iso-8859-1")
            body = text_part(
                self.body_text("iso-8859-1", greet, marker, sender_name, quoted),
                "plain",
                "iso-8859-1",
                "8bit" if cls.endswith("8bit") else "quoted-printable",
            )
        elif cls in ("cp1252-8bit", "cp1252-qp"):
            marker = marker_for("windows-1252")
            body = text_part(
                self.body_text("windows-1252", greet, marker, sender_name, quoted),
                "plain",
                "windows-1252",
                "8bit" if cls.endswith("8bit") else "quoted-printable",
            )
        elif cls in ("sjis-base64", "sjis-8bit"):
            marker = marker_for("shift_jis")
            body = text_part(
                self.body_text("shift_jis", "お世話になっております。", marker, "田中", quoted),
                "plain",
                "shift_jis",
                "base64" if cls.endswith("base64") else "8bit",
            )
        elif cls in ("html-only", "alternative", "inline-cid-image"):
            marker = marker_for("utf-8")
            plain = self.body_text("utf-8", greet, marker, sender_name, quoted)
            paras = "".join(
                f"<p>{html.escape(line, quote=False)}</p>"
                for line in plain.split("\n\n")
                if line.strip() and not line.startswith(">")
            )
            img = ""
            if cls == "inline-cid-image":
                cid = f"image001.{self.token()}@mail.client"
                img = f'<p><img src="cid:{cid}" alt="screenshot" width="8" height="8"></p>'
            html_doc = (
                '<!DOCTYPE html><html><head><meta charset="utf-8">'
                "<style>p{margin:0}</style></head>"
                f'<body><div dir="ltr">{paras}{img}</div></body></html>\n'
            )
            hpart = text_part(html_doc, "html", "utf-8", "quoted-printable")
            if cls == "html-only":
                body = hpart
            elif cls == "alternative":
                body = multipart(
                    "alternative",
                    [text_part(plain, "plain", "utf-8", "quoted-printable"), hpart],
                    f"alt-{self.token()}",
                )
            else:
                png = tiny_png(rng)
                info["attachments"].append(att_meta("image001.png", png, "image/png", inline=True))
                ipart = b64_part(
                    png, "image/png", "inline", '="image001.png"', f"Content-ID: <{cid}>\n"
                )
                related = multipart(
                    "related", [hpart, ipart], f"rel-{self.token()}", '; type="text/html"'
                )
                body = multipart(
                    "alternative",
                    [text_part(plain, "plain", "utf-8", "quoted-printable"), related],
                    f"alt-{self.token()}",
                )
        elif cls.startswith("att-"):
            marker = marker_for("utf-8")
            text = text_part(
                self.body_text("utf-8", greet, marker, sender_name, quoted),
                "plain",
                "utf-8",
                "quoted-printable",
            )
            if cls == "att-pdf":
                data, name, ctype = (
                    fake_pdf(rng),
                    f"invoice-{rng.randrange(1000, 9999)}.pdf",
                    "application/pdf",
                )
                fhdr = f'="{name}"'
            elif cls == "att-pdf-rfc2231-name":
                data, name, ctype = fake_pdf(rng), "Rechnung_März_2024.pdf", "application/pdf"
                fhdr = "*=utf-8''Rechnung_M%C3%A4rz_2024.pdf"
            elif cls == "att-pdf-ew-name":
                data, name, ctype = fake_pdf(rng), "Angebot_Größe.pdf", "application/pdf"
                fhdr = f'="{ew(name, "utf-8", "b")}"'
            elif cls == "att-text-log":
                data = (
                    (
                        "\n".join(
                            f"2024-03-04 09:{i:02d}:00 ERROR sync failed code={rng.randrange(999)}"
                            for i in range(30)
                        )
                        + "\n"
                    )
                    .replace("\n", "\r\n")
                    .encode()
                )
                name, ctype, fhdr = "debug.log", "text/plain", '="debug.log"'
            elif cls == "att-xlsx":
                data, name = fake_xlsx(rng), "report-q1.xlsx"
                ctype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                fhdr = f'="{name}"'
            else:
                raise ValueError(cls)
            info["attachments"].append(att_meta(name, data, ctype))
            if ctype == "text/plain":
                apart = (
                    f'Content-Type: text/plain; charset="us-ascii"; name{fhdr}\n'
                    f"Content-Disposition: attachment; filename{fhdr}\n"
                    f"Content-Transfer-Encoding: 7bit\n\n"
                ).encode() + data
            else:
                apart = b64_part(data, ctype, "attachment", fhdr)
            body = multipart("mixed", [text, apart], f"mix-{self.token()}")
        else:
            raise ValueError(cls)
        info["body_marker"] = marker
        info["code"] = code
        return body, info

    def emit(
        self,
        *,
        wave: int,
        tenant: str,
        frm: tuple[str, str],
        subject_raw: str,
        subject: str,
        body: bytes,
        info: dict,
        kind: str,
        variant: str,
        thread: str | None,
        action: str,
        answer: bool,
        in_reply_to: str | None = None,
        references: list[str] | None = None,
        extra_headers: list[str] | None = None,
        with_msgid: bool = True,
        needs_tag: str | None = None,
        classes: list[str] | None = None,
        date: datetime | None = None,
    ) -> dict:
        to_addr = dict(self.tenants)[tenant]
        mid = self.msgid(frm[1]) if with_msgid else None
        date = date or self.clock
        hdrs = [
            f"Return-Path: <{'' if kind == 'bounce' else frm[1]}>",
            f"Received: from mail.{frm[1].split('@')[1]} (mail.{frm[1].split('@')[1]} "
            f"[192.0.2.{self.rng.randrange(1, 250)}])"
            f"\n\tby mx.{to_addr.split('@')[1]} with ESMTPS; {format_datetime(date)}",
            f"From: {addr(*frm)}",
            f"To: {to_addr}",
            f"Subject: {subject_raw}",
            f"Date: {format_datetime(date)}",
        ]
        if mid:
            hdrs.append(f"Message-ID: {mid}")
        if in_reply_to:
            hdrs.append(f"In-Reply-To: {in_reply_to}")
        if references:
            hdrs.append("References: " + "\n ".join(references))
        hdrs += extra_headers or []
        hdrs += ["MIME-Version: 1.0", "User-Agent: corpus-gen/1"]
        raw = ("\n".join(hdrs) + "\n").encode("utf-8") + body
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        rec = {
            "seq": len(self.msgs) + 1,
            "wave": wave,
            "tenant": tenant,
            "to": to_addr,
            "from": frm[1],
            "message_id": mid,
            "kind": kind,
            "variant": variant,
            "classes": classes or info.get("body_classes", []),
            "thread": thread,
            "needs_tag": needs_tag,
            "in_reply_to": in_reply_to,
            "references": references or [],
            "expect": {
                "action": action,
                "thread": thread,
                "answer": answer,
                "subject": subject,
                "body_marker": info.get("body_marker"),
                "attachments": info.get("attachments", []),
                "sender": frm[1],
            },
            "code": info.get("code"),
            "date": format_datetime(date),
            "_raw": raw,
        }
        self.msgs.append(rec)
        return rec

    # -- conversation pieces
    def new_thread(self, tenant: str, wave: int = 0, forced: dict | None = None) -> dict:
        key = f"t{len(self.threads) + 1:04d}"
        client = self.rng.choice(self.clients)
        forced = forced or {}
        cls = forced.get("body") or next(self.root_bodies)
        style = next(self.subject_styles)
        topic = self.rng.choice(TOPICS)
        if cls.startswith("sjis"):
            topic, style = (
                self.rng.choice(["プリンターの故障", "請求書について", "ログインできません"]),
                "ew-sjis-b",
            )
        if "subject_raw" in forced:
            subj_raw, subj, style = forced["subject_raw"], forced["subject"], "copied"
        else:
            subj_raw, subj = self.encode_subject(topic, style)
        body, info = self.build_body(cls, client[0], None)
        self.clock += timedelta(minutes=self.rng.randrange(3, 50))
        rec = self.emit(
            wave=wave,
            tenant=tenant,
            frm=client,
            subject_raw=subj_raw,
            subject=subj,
            body=body,
            info=info,
            kind=forced.get("kind", "new"),
            variant=forced.get("variant", cls),
            thread=key,
            action="new_ticket",
            answer=True,
            with_msgid=cls != "no-message-id",
            in_reply_to=forced.get("in_reply_to"),
            references=forced.get("references"),
            needs_tag=forced.get("needs_tag"),
            classes=[f"body:{cls}", f"subject:{style}", *forced.get("classes", [])],
        )
        th = {
            "key": key,
            "tenant": tenant,
            "client": client,
            "subject": subj,
            "subject_raw": subj_raw,
            "style": style,
            "msgs": [rec],
            "root": rec,
            "last_text": info.get("body_marker", ""),
        }
        self.threads[key] = th
        return th

    def reply(self, th: dict, wave: int) -> dict:
        cls = next(self.reply_bodies)
        mode = next(self.reply_modes)
        if th["root"]["message_id"] is None and mode in ("in-reply-to", "references-only"):
            mode = "tag-only"  # nothing to reference
        body, info = self.build_body(cls, th["client"][0], th["last_text"])
        prev = th["msgs"][-1]
        ids = [m["message_id"] for m in th["msgs"] if m["message_id"]]
        ack = f"<ack-{self.token()}@helpdesk.invalid>"
        irt, refs, needs_tag = None, None, None
        base = th["subject_raw"]
        if mode == "in-reply-to":
            irt, refs = prev["message_id"] or ids[-1], ids
            subj_raw, subj = "Re: " + base, "Re: " + th["subject"]
        elif mode == "references-only":
            irt, refs = ack, [*ids, ack]
            subj_raw, subj = "Re: " + base, "Re: " + th["subject"]
        elif mode == "tag-only":
            needs_tag = th["key"]
            subj_raw = f"Re: [{{{{TAG:{th['key']}}}}}] " + base
            subj = "Re: [TAG] " + th["subject"]
        else:  # tag+references
            needs_tag = th["key"]
            irt, refs = ack, [*ids[:1], ack]
            subj_raw = f"Re: [{{{{TAG:{th['key']}}}}}] " + base
            subj = "Re: [TAG] " + th["subject"]
        self.clock += timedelta(minutes=self.rng.randrange(3, 50))
        rec = self.emit(
            wave=wave,
            tenant=th["tenant"],
            frm=th["client"],
            subject_raw=subj_raw,
            subject=subj,
            body=body,
            info=info,
            kind="reply",
            variant=mode,
            thread=th["key"],
            action="followup",
            answer=True,
            in_reply_to=irt,
            references=refs,
            needs_tag=needs_tag,
            classes=[f"reply:{mode}", f"body:{cls}"],
        )
        th["msgs"].append(rec)
        th["last_text"] = info["body_marker"]
        return rec

    def autoreply(self, th: dict, variant: str) -> dict:
        client = th["client"]
        ack = f"<ack-{self.token()}@helpdesk.invalid>"
        code = self.code()
        text = (
            f"I am out of the office until 18 March with limited access to email.\n"
            f"Für dringende Anliegen: Zentrale. [{code}]\n"
        )
        body = text_part(text, "plain", "utf-8", "quoted-printable")
        extra, needs_tag = [], None
        if variant == "rfc3834-tagged":
            needs_tag = th["key"]
            subj_raw = f"Automatic reply: [{{{{TAG:{th['key']}}}}}] " + th["subject_raw"]
            extra = ["Auto-Submitted: auto-replied"]
        elif variant == "rfc3834-untagged":
            subj_raw = "Out of Office: " + th["subject_raw"]
            extra = ["Auto-Submitted: auto-replied"]
        elif variant == "exchange-ooo":
            subj_raw = "Automatic reply: " + th["subject_raw"]
            extra = [
                "Auto-Submitted: auto-generated",
                "X-Auto-Response-Suppress: All",
                "X-MS-Exchange-Inbox-Rules-Loop: " + client[1],
            ]
        else:  # precedence-only (legacy vacation(1) style)
            subj_raw = "Away: " + th["subject_raw"]
            extra = ["Precedence: auto_reply", "X-Autoreply: yes"]
        self.clock += timedelta(minutes=1)
        return self.emit(
            wave=1,
            tenant=th["tenant"],
            frm=client,
            subject_raw=subj_raw,
            subject=subj_raw,
            body=body,
            info={"body_marker": f"[{code}]", "code": code},
            kind="autoreply",
            variant=variant,
            thread=th["key"],
            action="ignore",
            answer=False,
            in_reply_to=ack,
            references=[m for m in [th["root"]["message_id"], ack] if m],
            extra_headers=extra,
            needs_tag=needs_tag,
            classes=[f"autoreply:{variant}"],
        )

    def bounce(self, th: dict, variant: str) -> dict:
        client = th["client"]
        to_addr = dict(self.tenants)[th["tenant"]]
        dom = client[1].split("@")[1]
        ack = f"<ack-{self.token()}@helpdesk.invalid>"
        code = self.code()
        orig_hdrs = (
            f"From: {to_addr}\nTo: {client[1]}\n"
            f"Subject: [{{{{TAG:{th['key']}}}}}] Ticket received\n"
            f"Message-ID: {ack}\nIn-Reply-To: {th['root']['message_id'] or '<none@none>'}\n"
            f"Auto-Submitted: auto-replied\n"
        )
        if variant == "postfix-dsn":
            frm = ("Mail Delivery System", f"MAILER-DAEMON@mx.{dom}")
            subj = "Undelivered Mail Returned to Sender"
            extra = []
            human = (
                f"This is the mail system at host mx.{dom}.\n\n"
                "I'm sorry to have to inform you that your "
                f"message could not\nbe delivered to one or more recipients. [{code}]\n\n"
                f"<{client[1]}>: host mx.{dom} said: 550 5.1.1 User unknown\n"
            )
        else:
            frm = ("Mail Delivery System", f"Mailer-Daemon@mx.{dom}")
            subj = "Mail delivery failed: returning message to sender"
            extra = ["Auto-Submitted: auto-replied", "X-Failed-Recipients: " + client[1]]
            human = (
                "This message was created automatically by mail delivery software.\n\n"
                "A message that you sent could not be delivered to one or more of its\n"
                "recipients. "
                f"[{code}]\n\n  {client[1]}\n    mailbox is full: retry timeout exceeded\n"
            )
        status = (
            f"Reporting-MTA: dns; mx.{dom}\nArrival-Date: {format_datetime(self.clock)}\n\n"
            f"Final-Recipient: rfc822; {client[1]}\nOriginal-Recipient: rfc822;{client[1]}\n"
            f"Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n"
        )
        parts = [
            text_part(human, "plain", "us-ascii", "7bit"),
            b"Content-Type: message/delivery-status\nContent-Description: Delivery report\n\n"
            + status.encode(),
            b"Content-Type: text/rfc822-headers\n"
            b"Content-Description: Undelivered Message Headers\n\n" + orig_hdrs.encode(),
        ]
        body = multipart("report", parts, f"dsn-{self.token()}", "; report-type=delivery-status")
        self.clock += timedelta(minutes=1)
        # the placeholder lives in a body part: a feeder replaces it anywhere in the file
        return self.emit(
            wave=1,
            tenant=th["tenant"],
            frm=frm,
            subject_raw=subj,
            subject=subj,
            body=body,
            info={"body_marker": f"[{code}]", "code": code},
            kind="bounce",
            variant=variant,
            thread=th["key"],
            action="ignore",
            answer=False,
            extra_headers=extra,
            needs_tag=th["key"],
            classes=[f"bounce:{variant}"],
        )

    def duplicate(self, orig: dict) -> dict:
        rec = dict(orig)
        rec.update(
            seq=len(self.msgs) + 1,
            wave=orig["wave"] + 1,
            kind="duplicate",
            variant="dup-" + ("root" if orig["kind"] == "new" else "reply"),
            classes=["duplicate:" + ("root" if orig["kind"] == "new" else "reply")],
            duplicate_of=orig["seq"],
        )
        rec["expect"] = dict(orig["expect"], action="duplicate", answer=False)
        self.msgs.append(rec)
        return rec

    def build(self) -> None:
        n, rng = self.n, self.rng
        special = {
            "autoreply": max(4, round(n * 0.04)),
            "bounce": max(2, round(n * 0.03)),
            "duplicate": max(2, round(n * 0.04)),
            "forged": max(2, round(n * 0.02)),
        }
        regular = n - sum(special.values())
        lengths = [(1, 35), (2, 30), (3, 20), (4, 10), (5, 5)]
        tenants = [t for t, _ in self.tenants]
        made = 0
        plan = []
        while made < regular:
            length = min(
                rng.choices([n for n, _ in lengths], [w for _, w in lengths])[0], regular - made
            )
            plan.append((tenants[len(plan) % len(tenants)], length))
            made += length
        # wave 0: all roots; wave k: k-th reply of each thread (a thread's replies need its ticket)
        threads = [self.new_thread(t) for t, _ in plan]
        for k in range(1, max(n for _, n in plan)):
            for th, (_, length) in zip(threads, plan, strict=True):
                if k < length:
                    self.reply(th, k)
        acme_threads = [th for th in threads if th["tenant"] == tenants[0]]
        for i in range(special["autoreply"]):
            self.autoreply(rng.choice(threads), AUTOREPLY_VARIANTS[i % len(AUTOREPLY_VARIANTS)])
        for i in range(special["bounce"]):
            self.bounce(rng.choice(threads), BOUNCE_VARIANTS[i % len(BOUNCE_VARIANTS)])
        if len(tenants) > 1:
            for i in range(special["forged"]):
                victim = rng.choice(acme_threads)
                variant = FORGED_VARIANTS[i % len(FORGED_VARIANTS)]
                if variant == "forged-in-reply-to" and victim["root"]["message_id"] is None:
                    variant = "forged-tag"
                forced = {
                    "kind": "forged",
                    "variant": variant,
                    "classes": [f"forged:{variant}"],
                    "body": "plain-utf8-qp",
                }
                if variant == "forged-tag":
                    forced.update(
                        subject_raw=f"Re: [{{{{TAG:{victim['key']}}}}}] " + victim["subject_raw"],
                        subject="Re: [TAG] " + victim["subject"],
                        needs_tag=victim["key"],
                    )
                else:
                    forced.update(
                        subject_raw="Re: " + victim["subject_raw"],
                        subject="Re: " + victim["subject"],
                        in_reply_to=victim["root"]["message_id"],
                        references=[victim["root"]["message_id"]],
                    )
                self.new_thread(tenants[1], wave=1, forced=forced)
        originals = [m for m in self.msgs if m["kind"] in ("new", "reply") and m["message_id"]]
        for i in range(special["duplicate"]):
            want = "new" if i % 2 == 0 else "reply"
            pool = [m for m in originals if m["kind"] == want] or originals
            self.duplicate(rng.choice(pool))
        self.msgs = self.msgs[: self.n]

    def write(self, outdir: str) -> dict:
        os.makedirs(outdir, exist_ok=True)
        for f in os.listdir(outdir):
            if f.endswith(".eml"):
                os.unlink(os.path.join(outdir, f))
        ordered = sorted(self.msgs, key=lambda m: (m["wave"], m["seq"]))
        out = []
        for i, m in enumerate(ordered, 1):
            m["file"] = f"w{m['wave']:02d}-{i:05d}.eml"
            with open(os.path.join(outdir, m["file"]), "wb") as fh:
                fh.write(m["_raw"])
            out.append({k: v for k, v in m.items() if not k.startswith("_")})
        seq_to_file = {m["seq"]: m["file"] for m in out}
        for m in out:
            if "duplicate_of" in m:
                m["duplicate_of_file"] = seq_to_file.get(m["duplicate_of"])
        doc = {
            "generator": "gen_corpus.py",
            "seed": self.seed,
            "count": len(out),
            "tenants": dict(self.tenants),
            "waves": max(m["wave"] for m in out) + 1,
            "threads": {
                k: {
                    "tenant": t["tenant"],
                    "root_file": None,
                    "root_seq": t["root"]["seq"],
                    "client": t["client"][1],
                }
                for k, t in self.threads.items()
            },
            "messages": out,
        }
        for t in doc["threads"].values():
            t["root_file"] = seq_to_file.get(t["root_seq"])
        with open(os.path.join(outdir, "expectations.json"), "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=1)
        return doc


def verify(outdir: str) -> int:
    """Check the corpus against its own expectations with the stdlib parser.

    A reference decoding, so that a failure seen in a system under test is the
    system's and not the generator's."""
    import email
    import re
    from email import policy

    doc = json.load(open(os.path.join(outdir, "expectations.json"), encoding="utf-8"))
    bad = 0
    for m in doc["messages"]:
        raw = open(os.path.join(outdir, m["file"]), "rb").read()
        raw = re.sub(rb"\{\{TAG:(t\d+)\}\}", rb"X-\1", raw)
        msg = email.message_from_bytes(raw, policy=policy.default)
        e = m["expect"]
        problems = []
        texts = []
        for part in msg.walk():
            if (
                part.get_content_maintype() == "text"
                and part.get_content_disposition() != "attachment"
            ):
                t = part.get_content()
                if part.get_content_subtype() == "html":
                    t = re.sub(r"<[^>]+>", " ", t)
                    import html as _h

                    t = _h.unescape(t)
                texts.append(t)
        if e["body_marker"] and not any(e["body_marker"] in t for t in texts):
            problems.append("marker not found")
        subj = str(msg["subject"])
        if not m["needs_tag"] and e["subject"] != subj and m["kind"] not in ("autoreply",):
            problems.append(f"subject {subj!r} != {e['subject']!r}")
        atts = [
            a
            for a in msg.walk()
            if a.get_content_maintype() != "multipart"
            and (a.get_content_disposition() in ("attachment", "inline") or a.get("Content-ID"))
        ]
        got = sorted(
            (a.get_filename(), hashlib.sha256(a.get_payload(decode=True)).hexdigest()) for a in atts
        )
        want = sorted((a["name"], a["sha256"]) for a in e["attachments"])
        if got != want:
            problems.append(f"attachments {got} != {want}")
        if problems:
            bad += 1
            print(m["file"], m["classes"], problems, file=sys.stderr)
    print(f"verified {len(doc['messages'])} messages, {bad} inconsistent", file=sys.stderr)
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--count", "-n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--tenant",
        action="append",
        default=None,
        help="slug=address, repeatable; first is the one forged mails target",
    )
    ap.add_argument(
        "--verify", action="store_true", help="only check an existing OUTDIR with the stdlib parser"
    )
    a = ap.parse_args(argv)
    if a.verify:
        return verify(a.outdir)
    tenants = [tuple(t.split("=", 1)) for t in a.tenant] if a.tenant else DEFAULT_TENANTS
    if a.count < 40:
        ap.error("--count must be at least 40 so that every message class appears")
    c = Corpus(a.count, a.seed, tenants)
    c.build()
    doc = c.write(a.outdir)
    kinds: dict[str, int] = {}
    for m in doc["messages"]:
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    print(
        f"wrote {doc['count']} messages in {doc['waves']} waves to {a.outdir}: "
        + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())),
        file=sys.stderr,
    )
    return verify(a.outdir)


if __name__ == "__main__":
    sys.exit(main())

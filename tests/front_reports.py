"""What checking front MTAs write on top of a message: their header blocks, per product.

Each block is the headers the front adds (top first) down to and including its own
``Received`` line from the outside, so a test puts the sender's headers right after it.
The formats follow what each product writes (their source and documentation, and
published headers): OpenARC + OpenDMARC + OpenDKIM + policyd-spf behind Postfix
(one header each, as on lists.ozlabs.org), rspamd's ``milter_headers``, Gmail / Google
Workspace, Microsoft 365 (Exchange Online Protection: no authserv-id), and Fastmail
(Authentication Milter, one id per MX). Values (keys, ids, IPs) are made up.

The cases, all for ``support@acme.test``:

- ``pass``: alice@good.test, whose domain publishes ``p=reject``; everything passes.
- ``fail``: a forged ceo@bank.test (``p=reject``) sent by evil.test: SPF and DKIM pass
  for evil.test, DMARC fails.
- ``nopolicy``: bob@nopolicy.test, a domain without a DMARC record: the front says
  ``dmarc=none`` (or nothing about DMARC) and SPF passes for nopolicy.test. Aligned,
  so ``pass``: the defect that made these ``fail`` when one header was read.
- ``nopolicy-fail``: the same domain, SPF fails and there is no valid signature.
- ``temperror``: the front's DNS did not answer.
"""

from __future__ import annotations

# The summary, spf, dkim and dmarc the gateway must read from each case.
EXPECTED = {
    "pass": ("pass", "pass", "pass", "pass"),
    "fail": ("fail", "pass", "pass", "fail"),
    "nopolicy": ("pass", "pass", "none", "none"),
    "nopolicy-fail": ("fail", "fail", "none", "none"),
    "temperror": ("temperror", "temperror", "temperror", "temperror"),
}

FROM = {
    "pass": "alice@good.test",
    "fail": "ceo@bank.test",
    "nopolicy": "bob@nopolicy.test",
    "nopolicy-fail": "bob@nopolicy.test",
    "temperror": "alice@good.test",
}

_DATE = "Wed, 02 Dec 2026 08:00:00 +0000"


def _received_postfix(front: str, helo: str, ip: str) -> str:
    return (
        f"Received: from {helo} ({helo} [{ip}])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\r\n"
        "\t key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256)\r\n"
        "\t(No client certificate requested)\r\n"
        f"\tby {front} (Postfix) with ESMTPS id 4YBd4w6HK5z300V\r\n"
        f"\tfor <support@acme.test>; {_DATE}\r\n"
    )


# -- Postfix with OpenARC, OpenDMARC, OpenDKIM and policyd-spf (python) ----------------
# Each filter writes its own header with the same id; OpenARC's is the topmost, with
# its ARC set between it and the others (the layout of lists.ozlabs.org).

_SPF_COMMENT = {"pass": "sender SPF authorized", "fail": "SPF fail - not authorized",
                "temperror": "SPF Temporary Error: DNS Timeout"}  # fmt: skip


def _postfix(dmarc: str, dkim: str, spf: str, mailfrom: str, helo: str, ip: str) -> str:
    sender_domain = mailfrom.rpartition("@")[2]
    out = (
        f"Authentication-Results: mx.front.test; arc=none smtp.remote-ip={ip}\r\n"
        "ARC-Seal: i=1; a=rsa-sha256; d=front.test; s=arc; t=1796198400;\r\n"
        "\tcv=none; b=Q7zSkGxmVHWsUwjvouxPmqZmwsWNvfTbKkv1574OQ6xVhSGihHHmqBifnaK1Qhxlx\r\n"
        "ARC-Message-Signature: i=1; a=rsa-sha256; d=front.test; s=arc;\r\n"
        "\tt=1796198400; c=relaxed/relaxed;\r\n"
        "\tbh=XDD/zkXmAzb5d6G04Ok7GwAqGONUznCKQ8IXSYcP2NQ=;\r\n"
        "\th=From:Date:Subject:MIME-Version:Content-Type:Message-Id; b=DXac8qcIaIg/Xw94pvn\r\n"
        f"ARC-Authentication-Results: i=1; mx.front.test; {dmarc}; {dkim or 'dkim=none'};"
        f" spf={spf} smtp.mailfrom={sender_domain}\r\n"
    )
    if dmarc:
        out += f"Authentication-Results: mx.front.test; {dmarc}\r\n"
    if dkim:
        out += f"Authentication-Results: mx.front.test;\r\n\t{dkim};\r\n\tdkim-atps=neutral\r\n"
    out += (
        f"Authentication-Results: mx.front.test; spf={spf} ({_SPF_COMMENT[spf]})"
        f" smtp.mailfrom={sender_domain} (client-ip={ip};\r\n helo={helo};"
        f" envelope-from={mailfrom}; receiver=mx.front.test)\r\n"
    )
    return out + _received_postfix("mx.front.test", helo, ip)


def _opendkim(result: str, domain: str, note: str = "2048-bit key; unprotected") -> str:
    reason = ' reason="signature verification failed"' if result == "fail" else ""
    return (
        f"dkim={result}{reason} ({note}) header.d={domain} header.i=@{domain}"
        " header.a=rsa-sha256 header.s=sel header.b=AbCdEfGh"
    )


POSTFIX = {
    "pass": _postfix(
        "dmarc=pass (p=reject dis=none) header.from=good.test",
        _opendkim("pass", "good.test"),
        "pass", "alice@good.test", "mail.good.test", "192.0.2.10",
    ),
    "fail": _postfix(
        "dmarc=fail (p=reject dis=reject) header.from=bank.test",
        _opendkim("pass", "evil.test"),
        "pass", "mallory@evil.test", "mail.evil.test", "198.51.100.7",
    ),
    # no signature: OpenDKIM adds no header (AlwaysAddARHeader is off by default)
    "nopolicy": _postfix(
        "dmarc=none (p=none dis=none) header.from=nopolicy.test",
        "", "pass", "bob@nopolicy.test", "mail.nopolicy.test", "192.0.2.20",
    ),
    "nopolicy-fail": _postfix(
        "dmarc=none (p=none dis=none) header.from=nopolicy.test",
        "", "fail", "bob@nopolicy.test", "mail.nopolicy.test", "198.51.100.7",
    ),
    "temperror": _postfix(
        "dmarc=temperror (p=unknown dis=none) header.from=good.test",
        _opendkim("temperror", "good.test", "0-bit key; unprotected"),
        "temperror", "alice@good.test", "mail.good.test", "192.0.2.10",
    ),
}  # fmt: skip


# -- rspamd (milter_headers, authentication-results routine) ----------------------------


def _rspamd(results: str, helo: str, ip: str) -> str:
    return (
        f"Authentication-Results: mx.front.test;\r\n\t{results}\r\n"
        "X-Rspamd-Server: mx.front.test\r\n"
        "X-Rspamd-Queue-Id: 4YBd4w6HK5z300V\r\n"
        "X-Spamd-Result: default: False [-0.10 / 15.00];\r\n"
        "\tR_SPF_ALLOW(-0.20)[+ip4:192.0.2.10];\r\n"
        "\tMIME_GOOD(-0.10)[text/plain]\r\n"
        "X-Spam-Status: No, score=-0.10\r\n" + _received_postfix("mx.front.test", helo, ip)
    )


def _rspamd_spf(result: str, mailfrom: str, ip: str) -> str:
    verb = {"pass": "designates", "fail": "does not designate"}.get(result)
    comment = (
        f"mx.front.test: domain of {mailfrom} {verb} {ip} as permitted sender"
        if verb
        else f"mx.front.test: failed to resolve SPF record for {mailfrom}"
    )
    return f"spf={result} ({comment}) smtp.mailfrom={mailfrom}"


RSPAMD = {
    "pass": _rspamd(
        "dkim=pass header.d=good.test header.s=sel header.b=AbCdEfGh;\r\n\t"
        + _rspamd_spf("pass", "alice@good.test", "192.0.2.10")
        + ";\r\n\tdmarc=pass (policy=reject) header.from=good.test",
        "mail.good.test", "192.0.2.10",
    ),
    "fail": _rspamd(
        "dkim=pass header.d=evil.test header.s=sel header.b=AbCdEfGh;\r\n\t"
        + _rspamd_spf("pass", "mallory@evil.test", "198.51.100.7")
        + ';\r\n\tdmarc=fail reason="No valid SPF, No valid DKIM" header.from=bank.test'
        " (policy=reject)",
        "mail.evil.test", "198.51.100.7",
    ),
    "nopolicy": _rspamd(
        "dkim=none;\r\n\t" + _rspamd_spf("pass", "bob@nopolicy.test", "192.0.2.20")
        + ";\r\n\tdmarc=none",
        "mail.nopolicy.test", "192.0.2.20",
    ),
    "nopolicy-fail": _rspamd(
        "dkim=none;\r\n\t" + _rspamd_spf("fail", "bob@nopolicy.test", "198.51.100.7")
        + ";\r\n\tdmarc=none",
        "mail.nopolicy.test", "198.51.100.7",
    ),
    "temperror": _rspamd(
        "dkim=temperror header.d=good.test header.s=sel header.b=AbCdEfGh;\r\n\t"
        + _rspamd_spf("temperror", "alice@good.test", "192.0.2.10")
        + ";\r\n\tdmarc=temperror header.from=good.test",
        "mail.good.test", "192.0.2.10",
    ),
}  # fmt: skip


# -- Gmail / Google Workspace (a mailbox drained over IMAP) ------------------------------
# Google's own hops and ARC set come first, then its Received from the outside, its
# Received-SPF, and its one Authentication-Results right above the sender's headers.


def _gmail(results: str, mailfrom: str, helo: str, ip: str, spf: str) -> str:
    return (
        "Delivered-To: support@acme.test\r\n"
        "Received: by 2002:a05:6a10:8c0d:b0:5a4:1d0e:31b2 with SMTP id k13csp1234567pxy;\r\n"
        f"        {_DATE}\r\n"
        "X-Google-Smtp-Source: AGHT+IEQ4w1vYb6KzUZL2x0cVn3PzG1Rb3Yl1f2Qh8Ck\r\n"
        "ARC-Seal: i=1; a=rsa-sha256; t=1796198400; cv=none; d=google.com; s=arc-20240605;\r\n"
        "        b=Zm9vYmFy\r\n"
        "ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=google.com;\r\n"
        "        s=arc-20240605; h=subject:to:from:date:message-id; bh=YmFy; b=YmF6\r\n"
        f"ARC-Authentication-Results: i=1; mx.google.com; {' '.join(results.split())}\r\n"
        f"Return-Path: <{mailfrom}>\r\n"
        f"Received: from {helo} ({helo}. [{ip}])\r\n"
        "        by mx.google.com with ESMTPS id 5b1f17b1804b1-4a3e1f2c0d2si1234567f8a.123.2026\r\n"
        "        for <support@acme.test>\r\n"
        "        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);\r\n"
        f"        {_DATE}\r\n"
        f"Received-SPF: {spf} client-ip={ip};\r\n"
        f"Authentication-Results: mx.google.com;\r\n       {results}\r\n"
    )


def _gmail_spf(result: str, mailfrom: str, ip: str) -> str:
    comment = {
        "pass": f"google.com: domain of {mailfrom} designates {ip} as permitted sender",
        "fail": f"google.com: domain of {mailfrom} does not designate {ip} as permitted sender",
        "temperror": f"google.com: error in processing during lookup of {mailfrom}: DNS error",
    }[result]
    return f"{result} ({comment})"


GMAIL = {
    "pass": _gmail(
        "dkim=pass header.i=@good.test header.s=sel header.b=AbCdEfGh;\r\n"
        "       spf=pass (google.com: domain of alice@good.test designates 192.0.2.10 as"
        " permitted sender) smtp.mailfrom=alice@good.test;\r\n"
        "       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=good.test",
        "alice@good.test", "mail.good.test", "192.0.2.10",
        _gmail_spf("pass", "alice@good.test", "192.0.2.10"),
    ),
    "fail": _gmail(
        "dkim=pass header.i=@evil.test header.s=sel header.b=AbCdEfGh;\r\n"
        "       spf=pass (google.com: domain of mallory@evil.test designates 198.51.100.7 as"
        " permitted sender) smtp.mailfrom=mallory@evil.test;\r\n"
        "       dmarc=fail (p=REJECT sp=REJECT dis=QUARANTINE) header.from=bank.test",
        "mallory@evil.test", "mail.evil.test", "198.51.100.7",
        _gmail_spf("pass", "mallory@evil.test", "198.51.100.7"),
    ),
    # no DMARC record: Google writes no dmarc= at all
    "nopolicy": _gmail(
        "spf=pass (google.com: domain of bob@nopolicy.test designates 192.0.2.20 as"
        " permitted sender) smtp.mailfrom=bob@nopolicy.test",
        "bob@nopolicy.test", "mail.nopolicy.test", "192.0.2.20",
        _gmail_spf("pass", "bob@nopolicy.test", "192.0.2.20"),
    ),
    "nopolicy-fail": _gmail(
        "spf=fail (google.com: domain of bob@nopolicy.test does not designate 198.51.100.7"
        " as permitted sender) smtp.mailfrom=bob@nopolicy.test",
        "bob@nopolicy.test", "mail.nopolicy.test", "198.51.100.7",
        _gmail_spf("fail", "bob@nopolicy.test", "198.51.100.7"),
    ),
    "temperror": _gmail(
        "dkim=temperror (no key for signature) header.i=@good.test header.s=sel"
        " header.b=AbCdEfGh;\r\n"
        "       spf=temperror (google.com: error in processing during lookup of"
        " alice@good.test: DNS error) smtp.mailfrom=alice@good.test;\r\n"
        "       dmarc=temperror (p=REJECT sp=REJECT dis=NONE) header.from=good.test",
        "alice@good.test", "mail.good.test", "192.0.2.10",
        _gmail_spf("temperror", "alice@good.test", "192.0.2.10"),
    ),
}  # fmt: skip


# -- Microsoft 365 (Exchange Online Protection): a header without an authserv-id ---------


def _m365(results: str, spf: str, helo: str, ip: str) -> str:
    return (
        "Received: from DB9PR02MB7193.eurprd02.prod.outlook.com (2603:10a6:10:1f3::12) by\r\n"
        " AS8PR02MB9714.eurprd02.prod.outlook.com with HTTPS; " + _DATE + "\r\n"
        "X-MS-Exchange-Organization-AuthSource: AM4PEPF00027A5F.eurprd04.prod.outlook.com\r\n"
        "X-MS-Exchange-Organization-AuthAs: Anonymous\r\n"
        f"Authentication-Results: {results}\r\n"
        f"Received-SPF: {spf} receiver=protection.outlook.com;\r\n"
        f" client-ip={ip}; helo={helo}; pr=C\r\n"
        f"Received: from {helo} ({ip}) by\r\n"
        " AM4PEPF00027A5F.mail.protection.outlook.com (10.167.16.74) with Microsoft SMTP\r\n"
        " Server (version=TLS1_3, cipher=TLS_AES_256_GCM_SHA384) id 15.20.8000.0 via\r\n"
        f" Frontend Transport; {_DATE}\r\n"
    )


M365 = {
    "pass": _m365(
        "spf=pass (sender IP is 192.0.2.10)\r\n smtp.mailfrom=good.test; dkim=pass (signature"
        " was verified)\r\n header.d=good.test;dmarc=pass action=none"
        " header.from=good.test;compauth=pass\r\n reason=100",
        "Pass (protection.outlook.com: domain of good.test designates\r\n 192.0.2.10 as"
        " permitted sender)", "mail.good.test", "192.0.2.10",
    ),
    "fail": _m365(
        "spf=pass (sender IP is 198.51.100.7)\r\n smtp.mailfrom=evil.test; dkim=pass (signature"
        " was verified)\r\n header.d=evil.test;dmarc=fail action=oreject"
        " header.from=bank.test;compauth=fail\r\n reason=000",
        "Pass (protection.outlook.com: domain of evil.test designates\r\n 198.51.100.7 as"
        " permitted sender)", "mail.evil.test", "198.51.100.7",
    ),
    # no DMARC record, but SPF aligned: Microsoft's own "bestguesspass"
    "nopolicy": _m365(
        "spf=pass (sender IP is 192.0.2.20)\r\n smtp.mailfrom=nopolicy.test; dkim=none (message"
        " not signed)\r\n header.d=none;dmarc=bestguesspass action=none"
        " header.from=nopolicy.test;compauth=pass reason=109",
        "Pass (protection.outlook.com: domain of nopolicy.test designates\r\n 192.0.2.20 as"
        " permitted sender)", "mail.nopolicy.test", "192.0.2.20",
    ),
    "nopolicy-fail": _m365(
        "spf=fail (sender IP is 198.51.100.7)\r\n smtp.mailfrom=nopolicy.test; dkim=none (message"
        " not signed)\r\n header.d=none;dmarc=none action=none"
        " header.from=nopolicy.test;compauth=fail reason=001",
        "Fail (protection.outlook.com: domain of nopolicy.test does not\r\n designate"
        " 198.51.100.7 as permitted sender)", "mail.nopolicy.test", "198.51.100.7",
    ),
    "temperror": _m365(
        "spf=temperror (sender IP is 192.0.2.10)\r\n smtp.mailfrom=good.test; dkim=temperror"
        " (signature was not verified)\r\n header.d=good.test;dmarc=temperror action=none"
        " header.from=good.test;compauth=none reason=451",
        "TempError (protection.outlook.com: error in processing during lookup\r\n of"
        " good.test: DNS Timeout)", "mail.good.test", "192.0.2.10",
    ),
}  # fmt: skip


# -- Fastmail (Authentication Milter; each MX writes its own name) -----------------------


def _fastmail(results: str, spf_line: str, helo: str, ip: str) -> str:
    return (
        f"Received: from mx6 ([10.202.2.205])\r\n  by compute1.internal (LMTPProxy); {_DATE}\r\n"
        "Received: from mx6.messagingengine.com (localhost [127.0.0.1])\r\n"
        "\tby mailmx.nyi.internal (Postfix) with ESMTP id 1C2D3E4F5A6\r\n"
        f"\tfor <support@acme.test>; {_DATE}\r\n"
        "Received: from mx6.messagingengine.com (localhost [127.0.0.1])\r\n"
        "    by mx6.messagingengine.com (Authentication Milter) with ESMTP\r\n"
        f"    id 7A8B9C0D1E2; {_DATE}\r\n"
        "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=messagingengine.com; s=fm1; t=1796198400;\r\n"
        "    b=Zm9vYmFy\r\n"
        "ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=\r\n"
        "    messagingengine.com; h=from:to:subject:message-id; s=fm1; t=1796198400;\r\n"
        "    bh=YmFy; b=YmF6\r\n"
        f"ARC-Authentication-Results: i=1; mx6.messagingengine.com;\r\n    {results}\r\n"
        f"Authentication-Results: mx6.messagingengine.com;\r\n    {results}\r\n"
        "X-ME-Proxy-Cause: gggruggvucftvghtrhhoucdtuddrgedvfedrfedtgdduhedvucetufdoteggodetrfdo\r\n"
        "X-ME-VSScore: 0\r\n"
        f"Received-SPF: {spf_line}\r\n"
        f"Received: from {helo} ({helo} [{ip}])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
        "\t(No client certificate requested)\r\n"
        "\tby mx6.messagingengine.com (Postfix) with ESMTPS\r\n"
        f"\tfor <support@acme.test>; {_DATE}\r\n"
    )


def _fm_dmarc(result: str, policy: str, domain: str) -> str:
    return (
        f"dmarc={result} policy.published-domain-policy={policy}"
        " policy.applied-disposition=none policy.evaluated-disposition=none"
        f" (p={policy},d=none,d.eval=none) policy.policy-from=p header.from={domain}"
    )


def _fm_dkim(result: str, domain: str) -> str:
    return (
        f"dkim={result} (2048-bit rsa key sha256) header.d={domain} header.i=@{domain}"
        " header.b=AbCdEfGh header.a=rsa-sha256 header.s=sel x-bits=2048"
    )


def _fm(dkim: str, dmarc: str, spf: str, mailfrom: str, helo: str, ip: str) -> str:
    return (
        f"arc=none (no signatures found);\r\n    {dkim};\r\n    {dmarc};\r\n"
        f"    iprev=pass smtp.remote-ip={ip} ({helo});\r\n"
        f"    spf={spf} smtp.mailfrom={mailfrom} smtp.helo={helo};\r\n"
        "    x-aligned-from=pass (Address match);\r\n"
        "    x-me-sender=none;\r\n"
        "    x-tls=pass smtp.version=TLSv1.3 smtp.cipher=TLS_AES_256_GCM_SHA384 smtp.bits=256/256"
    )


def _fm_spf(result: str, mailfrom: str, helo: str, ip: str) -> str:
    return (
        f"{result} ({mailfrom.rpartition('@')[2]}: {ip} is authorized to use '{mailfrom}' in"
        f" 'mfrom' identity)\r\n receiver=mx6.messagingengine.com; identity=mailfrom;"
        f' envelope-from="{mailfrom}"; helo={helo}; client-ip={ip}'
    )


_FM_NONE = "dmarc=none (p=none,d=none) header.from=nopolicy.test"

FASTMAIL = {
    "pass": _fastmail(
        _fm(_fm_dkim("pass", "good.test"), _fm_dmarc("pass", "reject", "good.test"),
            "pass", "alice@good.test", "mail.good.test", "192.0.2.10"),
        _fm_spf("pass", "alice@good.test", "mail.good.test", "192.0.2.10"),
        "mail.good.test", "192.0.2.10",
    ),
    "fail": _fastmail(
        _fm(_fm_dkim("pass", "evil.test"), _fm_dmarc("fail", "reject", "bank.test"),
            "pass", "mallory@evil.test", "mail.evil.test", "198.51.100.7"),
        _fm_spf("pass", "mallory@evil.test", "mail.evil.test", "198.51.100.7"),
        "mail.evil.test", "198.51.100.7",
    ),
    "nopolicy": _fastmail(
        _fm("dkim=none (no signatures found)", _FM_NONE,
            "pass", "bob@nopolicy.test", "mail.nopolicy.test", "192.0.2.20"),
        _fm_spf("pass", "bob@nopolicy.test", "mail.nopolicy.test", "192.0.2.20"),
        "mail.nopolicy.test", "192.0.2.20",
    ),
    "nopolicy-fail": _fastmail(
        _fm("dkim=none (no signatures found)", _FM_NONE,
            "fail", "bob@nopolicy.test", "mail.nopolicy.test", "198.51.100.7"),
        "fail (nopolicy.test: Sender is not authorized by default to use 'bob@nopolicy.test'"
        " in 'mfrom' identity)\r\n receiver=mx6.messagingengine.com; identity=mailfrom;"
        ' envelope-from="bob@nopolicy.test"; helo=mail.nopolicy.test; client-ip=198.51.100.7',
        "mail.nopolicy.test", "198.51.100.7",
    ),
    "temperror": _fastmail(
        _fm(_fm_dkim("temperror", "good.test"), "dmarc=temperror header.from=good.test",
            "temperror", "alice@good.test", "mail.good.test", "192.0.2.10"),
        "temperror (good.test: error in processing during lookup of 'alice@good.test')",
        "mail.good.test", "192.0.2.10",
    ),
}  # fmt: skip

# product -> (the trusted_authserv_id an operator sets, the blocks by case)
FRONTS = {
    "postfix-opendkim-opendmarc-policyd-spf": ("mx.front.test", POSTFIX),
    "rspamd": ("mx.front.test", RSPAMD),
    "gmail": ("mx.google.com", GMAIL),
    "microsoft365": ("protection.outlook.com", M365),
    "fastmail": ("*.messagingengine.com", FASTMAIL),
}

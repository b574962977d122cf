"""The monthly report as a mail: a PDF attachment to the tenant's report recipients."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.utils import format_datetime, formataddr

from outbound.mime import Composed, clean, new_message_id
from routing.config import Tenant

__all__ = ["report_mail"]


def report_mail(
    *,
    tenant: Tenant,
    hostname: str,
    to: Sequence[str],
    month: str,
    filename: str,
    pdf: bytes,
    now: datetime,
) -> Composed:
    """The monthly report as a PDF attachment, to the tenant's report recipients.

    Built with the stdlib's EmailMessage: it is made once a month, outside the
    message path, so the generator's cost does not matter here.
    """
    from email.message import EmailMessage
    from email.policy import SMTP

    msg = EmailMessage(policy=SMTP)
    mid = new_message_id("report", hostname)
    msg["Message-ID"] = mid
    msg["Date"] = format_datetime(now)
    msg["From"] = formataddr((clean(tenant.name), tenant.from_address))
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"{clean(tenant.name)}: support report for {month}"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = hostname
    msg.set_content(
        f"Attached: the support report of {tenant.name} for {month} (PDF).\n\n"
        "Tickets opened and closed, response and resolution times, SLA attainment,\n"
        "busiest hours, per queue and per agent.\n"
    )
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
    body = msg.as_bytes()
    return Composed(message_id=mid, mail_from="", rcpt_tos=tuple(to), body=body)

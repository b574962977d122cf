"""``gateway report``: a tenant's month on paper, for a manager.

The figures are gateway/ops/report_figures.py's. The PDF is made
with reportlab, the charts with matplotlib (Agg, no display), in a worker thread: a
month of a large tenant takes seconds.
"""

from __future__ import annotations

import hashlib
import io
import os
from datetime import UTC
from pathlib import Path
from typing import Any

from gateway.ops.report_figures import Group, MonthStats, percentile
from routing.config import GatewayConfig
from routing.sla import format_duration

__all__ = ["render_pdf", "report_path", "write_atomic"]


def report_path(config: GatewayConfig, tenant: str, month: str) -> Path:
    folder = config.reports.dir or (config.data_dir / "reports")
    return folder / tenant / f"{tenant}-report-{month}.pdf"


# --- rendering -----------------------------------------------------------------------------

_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
_FONT_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def _fonts() -> tuple[str, str]:
    """DejaVu where Debian has it (tenant names in any script); else the PDF core fonts."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if os.path.exists(_FONT) and os.path.exists(_FONT_BOLD):
        if "DejaVu" not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont("DejaVu", _FONT))
            pdfmetrics.registerFont(TTFont("DejaVu-Bold", _FONT_BOLD))
        return "DejaVu", "DejaVu-Bold"
    return "Helvetica", "Helvetica-Bold"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


_CHARTS = (
    ("days", "Tickets opened and closed per day"),
    ("hours", "Busiest hours"),
    ("first_response", "First-response times"),
)
#: The bar colours, so a test can find the charts on the rendered pages.
CHART_COLOURS = {"opened": "#2f6db5", "closed": "#7fb77e", "hours": "#c77c2e"}


def _chart_png(kind: str, stats: MonthStats) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 2.6), dpi=150)
    ax = fig.add_subplot()
    if kind == "days":
        days = list(range(1, len(stats.per_day_opened) + 1))
        ax.bar(
            [d - 0.2 for d in days],
            stats.per_day_opened,
            width=0.4,
            label="opened",
            color="#2f6db5",
        )
        ax.bar(
            [d + 0.2 for d in days],
            stats.per_day_closed,
            width=0.4,
            label="closed",
            color="#7fb77e",
        )
        ax.set_xlabel("day of month")
        ax.set_ylabel("tickets")
        ax.legend(frameon=False)
        ax.set_xlim(0.3, len(days) + 0.7)
    elif kind == "hours":
        ax.bar(range(24), stats.hours, color=CHART_COLOURS["hours"])
        ax.set_xticks(range(0, 24, 2))
        ax.set_xlabel(f"hour of day ({stats.timezone})")
        ax.set_ylabel("client messages")
    else:  # response-time distribution
        hours = [v / 3600 for v in stats.total.first_response]
        if hours:
            ax.hist(hours, bins=min(20, max(5, len(hours) // 3)), color="#6b5fb5")
        ax.set_xlabel("first response (hours on the SLA calendar)")
        ax.set_ylabel("tickets")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _row(name: str, g: Group, has_sla: bool) -> list[str]:
    row = [
        name,
        str(g.opened),
        str(g.closed),
        format_duration(percentile(g.first_response, 50)),
        format_duration(percentile(g.resolution, 50)),
    ]
    if has_sla:
        row += [_pct(g.attainment("first_response")), _pct(g.attainment("resolution"))]
    return row


def render_pdf(stats: MonthStats) -> bytes:
    """The report as PDF bytes (reportlab platypus: flowing text, tables, chart images)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        Image,
        KeepTogether,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    font, bold = _fonts()
    h1 = ParagraphStyle("h1", fontName=bold, fontSize=18, leading=22, spaceAfter=4)
    h2 = ParagraphStyle(
        "h2", fontName=bold, fontSize=12.5, leading=16, spaceBefore=10, spaceAfter=4
    )
    body = ParagraphStyle("body", fontName=font, fontSize=9.5, leading=12.5)
    small = ParagraphStyle("small", parent=body, fontSize=8, leading=10, textColor=colors.grey)

    def table(rows: list[list[str]], widths: list[float]) -> Table:
        t = Table(rows, colWidths=widths, hAlign="LEFT")
        t.setStyle(
            TableStyle(
                [
                    ("FONT", (0, 0), (-1, -1), font, 8.5),
                    ("FONT", (0, 0), (-1, 0), bold, 8.5),
                    ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
                    (
                        "ROWBACKGROUNDS",
                        (0, 1),
                        (-1, -1),
                        [colors.white, colors.HexColor("#f2f4f7")],
                    ),
                    ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                    ("VALIGN", (0, 0), (-1, 0), "BOTTOM"),
                    ("TOPPADDING", (0, 0), (-1, -1), 2),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ]
            )
        )
        return t

    t = stats.total
    story: list[Any] = [
        Paragraph(f"{_esc(stats.tenant_name)}: support report {stats.month}", h1),
        Paragraph(
            f"Tenant {stats.tenant}. Times in {stats.timezone}. Generated "
            f"{stats.generated_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC.",
            small,
        ),
        Spacer(1, 4 * mm),
        Paragraph("Summary", h2),
    ]
    summary = [
        ["Figure", "Value"],
        ["Tickets opened", str(t.opened)],
        ["Tickets closed", str(t.closed)],
        ["Answered (first response given)", str(len(t.first_response))],
        ["First response, median", format_duration(percentile(t.first_response, 50))],
        ["First response, 90th percentile", format_duration(percentile(t.first_response, 90))],
        ["Resolution, median", format_duration(percentile(t.resolution, 50))],
        ["Resolution, 90th percentile", format_duration(percentile(t.resolution, 90))],
    ]
    if stats.has_sla:
        summary += [
            ["SLA attainment, first response", _pct(t.attainment("first_response"))],
            ["SLA attainment, resolution", _pct(t.attainment("resolution"))],
        ]
    busiest = max(range(24), key=lambda h: stats.hours[h]) if any(stats.hours) else None
    if busiest is not None:
        summary.append(["Busiest hour", f"{busiest:02d}:00-{busiest + 1:02d}:00"])
    story.append(table(summary, [70 * mm, 40 * mm]))
    story.append(
        Paragraph(
            "Times are counted on the tenant's SLA calendar"
            + (
                " (business hours and holidays where set)"
                if stats.has_sla
                else " (around the clock)"
            )
            + "; resolution leaves out time spent waiting on the client. Percentiles are "
            "nearest-rank: 90% of tickets were at or under the 90th percentile.",
            small,
        )
    )
    for kind, title in _CHARTS:
        chart = Image(io.BytesIO(_chart_png(kind, stats)), width=170 * mm, height=63 * mm)
        story.append(KeepTogether([Paragraph(title, h2), chart]))
    head = ["Queue", "Opened", "Closed", "First response\nmedian", "Resolution\nmedian"]
    if stats.has_sla:
        head += ["SLA met\nfirst response", "SLA met\nresolution"]
    widths = [40 * mm, 16 * mm, 16 * mm, 24 * mm, 22 * mm] + (
        [26 * mm, 22 * mm] if stats.has_sla else []
    )
    story.append(Paragraph("Per queue", h2))
    story.append(
        table([head] + [_row(q, g, stats.has_sla) for q, g in stats.queues.items()], widths)
    )
    story.append(Paragraph("Per agent", h2))
    agent_rows = [
        ["Agent", "Replies", "First\nresponses", "First response\nmedian", "Tickets\nclosed"]
    ]
    for addr, g in stats.agents.items():
        agent_rows.append(
            [
                addr,
                str(g.replies),
                str(len(g.first_response)),
                format_duration(percentile(g.first_response, 50)),
                str(g.closed_by),
            ]
        )
    story.append(table(agent_rows, [60 * mm, 18 * mm, 26 * mm, 30 * mm, 30 * mm]))
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
        title=f"{stats.tenant_name} support report {stats.month}",
        author="helpdesk-gateway",
        invariant=1,
    )
    doc.build(story)
    return buf.getvalue()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_atomic(path: Path, data: bytes) -> str:
    """Write, fsync and rename; return the sha256 (recorded with the report row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()

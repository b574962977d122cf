"""Who is speaking: a client, an agent, or a machine.

An agent is recognised by a valid per-agent reply token, never by ``From``
alone, which anyone can forge. Machines (auto-replies, bounces, list mail,
our own mail coming back) are recorded but never answered (RFC 3834).
"""

from __future__ import annotations

from typing import Literal

from parsers.types import ParsedMessage
from routing.config import Agent, Tenant
from routing.tokens import TokenClaim, agent_code

__all__ = ["Role", "is_machine", "speaker"]

Role = Literal["client", "agent", "machine"]


def is_machine(parsed: ParsedMessage, envelope_from: str, own_domain: str) -> bool:
    if parsed.kind != "normal" or not envelope_from:
        return True
    if parsed.auto_submitted not in (None, "", "no"):
        return True
    if parsed.message_id and parsed.message_id.lower().endswith(f"@{own_domain.lower()}>"):
        return True
    return any(own_domain.lower() in marker for marker in parsed.loop_markers)


def speaker(
    parsed: ParsedMessage,
    envelope_from: str,
    tenant: Tenant,
    claim: TokenClaim | None,
    own_domain: str,
) -> tuple[Role, Agent | None]:
    if is_machine(parsed, envelope_from, own_domain):
        return "machine", None
    if claim is not None and claim.agent_code:
        for agent in tenant.agents:
            if agent_code(agent.address) == claim.agent_code:
                return "agent", agent
    return "client", None

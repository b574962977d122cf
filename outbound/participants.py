"""Who takes part in a ticket beyond its first mail: our own addresses never do, and an
agent's ``#cc add``/``#cc remove`` (in a relayed reply) changes the rest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from routing.config import Agent, GatewayConfig
from store import participants as people
from store import repos

__all__ = ["apply_cc", "is_ours"]


def is_ours(config: GatewayConfig, address: str) -> bool:
    """One of our tenant addresses (plus forms included) or agents: never a client."""
    local, _, domain = address.partition("@")
    bare = f"{local.split('+', 1)[0]}@{domain}"
    return any(
        bare in t.addresses or bare == t.from_address or any(a.answers_from(bare) for a in t.agents)
        for t in config.tenants
    )


def apply_cc(
    conn: Connection,
    config: GatewayConfig,
    slug: str,
    ticket_id: int,
    agent: Agent,
    add: tuple[str, ...],
    remove: tuple[str, ...],
    problems: list[str],
    now: datetime,
) -> dict[str, list[str]]:
    """``#cc add``/``#cc remove``: who takes part, changed only by an agent's relayed reply
    (token, From and authentication checked in decide), each change audited."""
    done: dict[str, list[str]] = {}
    for verb, addresses in (("add", add), ("remove", remove)):
        for address in addresses:
            if verb == "add" and is_ours(config, address):
                problems.append(f"#cc add: {address} is one of our own addresses")
                continue
            if verb == "add":
                changed = people.add(conn, slug, ticket_id, address, "", "cc", now)
            else:
                changed = people.remove(conn, slug, ticket_id, address)
            if not changed:
                problems.append(f"#cc {verb}: no change for {address}")
                continue
            repos.add_audit(
                conn,
                slug,
                f"participant.{'added' if verb == 'add' else 'removed'}",
                actor=agent.address,
                ticket_id=ticket_id,
                detail={"address": address},
                now=now,
            )
            done.setdefault(verb, []).append(address)
    return done

"""Per-tenant routing rules from gateway.toml: conditions in, actions out.

Rules are data, not code: an admin writes them in the config file, where they
can be reviewed, diffed and tested with ``gateway route explain``, and they are
validated as a whole before a reload may replace the running set. Evaluation is
a pure function of a message's facts, so explain shows exactly what the
pipeline does, and a rule that misses says which condition missed.

Semantics, in the order admins read them (RT scrips and Zammad triggers are
the models, minus their hidden state):

* rules run top to bottom; every rule whose ``when`` holds (all conditions;
  a list means any of its values) and whose ``unless`` does not, acts;
* a later rule's queue, priority, category and assignee replace an earlier
  one's; tags accumulate; ``stop`` ends the walk after that rule;
* ``drop`` and ``reject`` end it at once: a dropped message is answered 250
  and not stored (an audit event says which rule); a rejected one gets the
  rule's SMTP reply, and nothing is stored for any tenant.
"""

from __future__ import annotations

from routing.rules.build import build_rules
from routing.rules.conditions import CONDITIONS
from routing.rules.engine import Condition, Decision, Facts, Reject, Rule, evaluate

__all__ = [
    "CONDITIONS",
    "Condition",
    "Decision",
    "Facts",
    "Reject",
    "Rule",
    "build_rules",
    "evaluate",
]

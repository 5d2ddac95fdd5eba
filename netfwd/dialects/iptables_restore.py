"""`iptables-restore` dialect: the same ruleset as one atomic `iptables-restore --noflush` transaction.

The payload declares each owned chain (which flushes and refills it in the same commit); the jumps
from built-in chains are ensured afterwards with check-then-insert, since a restore payload cannot
add a rule "only if missing" without flushing the built-in chain (which netfwd never does).
"""

from __future__ import annotations

import shlex

from netfwd import xtables
from netfwd.dialects import shell
from netfwd.dialects.base import BaseDialect
from netfwd.dialects.iptables import HELPERS, remove_body, tool_check
from netfwd.model import Essence, Spec

DELIMITER = "NETFWD_RULES"


class IptablesRestoreDialect(BaseDialect):
    name = "iptables-restore"
    extension = "sh"
    families = frozenset({4})

    def payload(self, spec: Spec) -> str:
        self.check(spec)
        return xtables.restore_payload(spec)

    def render(self, spec: Spec) -> str:
        payload = self.payload(spec)
        lines = shell.prologue(self.header(spec, "apply"))
        lines += tool_check() + shell.refuse_under_firewalld() + HELPERS
        lines += shell.enable_forwarding(spec)
        lines += ["# One transaction: validate, then commit every owned chain at once.",
                  f'"$IPTABLES-restore" --test -w 5 --noflush <<\'{DELIMITER}\'', payload + DELIMITER,
                  f'"$IPTABLES-restore" -w 5 --noflush <<\'{DELIMITER}\'', payload + DELIMITER, ""]
        lines += ["# Jumps from the built-in chains, check-then-insert."]
        lines += [f"ensure_jump {t} {b} {o}" for t, b, o in xtables.JUMPS]
        lines += ["", "persist", f"echo {shlex.quote(f'netfwd: applied {len(spec.forwards)} forward(s)')} >&2", ""]
        return "\n".join(lines)

    def render_remove(self, spec: Spec) -> str:
        self.check(spec)
        lines = shell.prologue(self.header(spec, "remove")) + tool_check() + HELPERS + remove_body(spec)
        return "\n".join(lines) + "\n"

    def parse(self, text: str) -> list[Essence]:
        """Accepts the rendered script, a bare payload, or `iptables-save` output."""
        if DELIMITER in text:  # the script holds the payload twice (test, then commit): read one copy
            text = text.split(f"<<'{DELIMITER}'\n", 1)[1].split(f"{DELIMITER}\n", 1)[0]
        return xtables.parse_save(text)


DIALECT = IptablesRestoreDialect()

"""`iptables-restore` dialect: the same ruleset as one atomic `iptables-restore --noflush` transaction.

The payload declares each owned chain (which flushes and refills it in the same commit); the jumps
from built-in chains are ensured afterwards with check-then-insert, since a restore payload cannot
add a rule "only if missing" without flushing the built-in chain (which netfwd never does).
"""

from __future__ import annotations

from netfwd import xtables
from netfwd.dialects import xtguard
from netfwd.dialects.iptables import IptablesDialect
from netfwd.model import Essence, Spec

DELIMITER = xtguard.DELIMITER


class IptablesRestoreDialect(IptablesDialect):
    """The iptables dialect with the owned chains filled by one restore transaction."""

    name = "iptables-restore"

    def payload(self, spec: Spec) -> str:
        self.check(spec)
        return xtables.restore_payload(spec)

    def install(self, spec: Spec) -> list[str]:
        payload = self.payload(spec)
        return ["# One transaction (checked with --test above): commit every owned chain at once.",
                f'"$IPTABLES-restore" --noflush ${{RWAIT[@]+"${{RWAIT[@]}}"}} <<\'{DELIMITER}\'', payload + DELIMITER]

    def parse(self, text: str) -> list[Essence]:
        """Accepts the rendered script, a bare payload, or `iptables-save` output."""
        if DELIMITER in text:  # the script holds the payload twice (test, then commit): read one copy
            text = text.split(f"<<'{DELIMITER}'\n", 1)[1].split(f"{DELIMITER}\n", 1)[0]
        return xtables.parse_save(text)


DIALECT = IptablesRestoreDialect()

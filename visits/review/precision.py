"""The rules' precision: per flag rule (and per risk tier), how many live visits it flags and how
the reviewers decided them, so admins can tune thresholds. Counted from the review tally
(ingest/review_tally.py) when the filters allow, else from the visits (their `flag_rules` bits and
`review_status`, over the queue's flagged index); never the flags table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Count, QuerySet

from visits.ingest.review_tally import ReviewFilter, review_counts
from visits.models import RULE_BITS, DecisionKind, FlagRule, RiskTier
from visits.review.rules import rule_thresholds

SELL_RULES = (FlagRule.TOO_FAR, FlagRule.LOCATION_UNKNOWN, FlagRule.SERVICES_DISABLED)
SELL_THRESHOLD = "Sell's own verification status"


@dataclass
class RuleCounts:
    """One rule's (or one tier's, or every flagged visit's) visits and their latest decisions."""

    name: str  # the rule's (or tier's) value; "" for the total
    label: str
    threshold: str = ""
    flagged: int = 0
    accepted: int = 0
    rejected: int = 0
    follow_up: int = 0

    @property
    def decided(self) -> int:
        return self.accepted + self.rejected + self.follow_up

    @property
    def precision(self) -> float | None:
        """Rejected of the visits given a verdict (accepted or rejected; a follow-up is none yet);
        None before any verdict."""
        verdicts = self.accepted + self.rejected
        return self.rejected / verdicts if verdicts else None

    def add(self, status: str | None, n: int) -> None:
        self.flagged += n
        if status == DecisionKind.ACCEPT:
            self.accepted += n
        elif status == DecisionKind.REJECT:
            self.rejected += n
        elif status == DecisionKind.FOLLOW_UP:
            self.follow_up += n


@dataclass
class Precision:
    rules: list[RuleCounts]
    tiers: list[RuleCounts]  # every flagged visit by its risk tier (one without a tier yet: "")
    total: RuleCounts = field(default_factory=lambda: RuleCounts("", "Every flagged visit"))


def thresholds_by_rule() -> dict[str, str]:
    """Each rule's threshold as the pages say it (rules.rule_thresholds names them by label)."""
    by_label = dict(rule_thresholds())
    found: dict[str, str] = {rule.value: SELL_THRESHOLD for rule in SELL_RULES}
    for rule in FlagRule:
        if rule.label in by_label:
            found[rule.value] = by_label[rule.label]
    return found


def rules_precision(
    *, visits: QuerySet, tiers: list[str] | None = None, tallied: ReviewFilter | None = None
) -> Precision:
    """Per FlagRule and per tier, of `visits` (a scope's live visits) that are flagged (in one of
    `tiers`, if given): how many, and how many accepted, rejected and to follow up by their latest
    decision. From the review tally's rows when the same visits are `tallied`
    (review_tally.review_filter, with the same tiers), else one GROUP BY flag_rules,
    review_status, risk_tier of the visits; the bits are split here."""
    by = ("flag_rules", "review_status", "risk_tier")
    groups: Iterable[tuple]
    if tallied is not None:
        groups = [(bits, status or None, tier, n) for bits, status, tier, n in review_counts(chosen=tallied, by=by)]
    else:
        flagged = visits.filter(flagged=True)
        if tiers:
            flagged = flagged.filter(risk_tier__in=tiers)
        groups = flagged.order_by().values_list(*by).annotate(n=Count("id"))
    thresholds = thresholds_by_rule()
    rules = {rule.value: RuleCounts(rule.value, rule.label, thresholds.get(rule.value, "")) for rule in FlagRule}
    by_tier = {tier.value: RuleCounts(tier.value, tier.label) for tier in RiskTier}
    result = Precision(rules=list(rules.values()), tiers=[])
    for bits, status, tier, n in groups:
        result.total.add(status, n)
        by_tier.setdefault(tier or "", RuleCounts("", "No tier yet")).add(status, n)
        for rule, bit in RULE_BITS.items():
            if bits & bit:
                rules[rule].add(status, n)
    result.tiers = [row for row in by_tier.values() if row.flagged or row.name]
    return result

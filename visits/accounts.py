"""Who a Django account is in Sell: the SellLink that says whose reporting line a Manager sees.

An account is linked to the Sell user with the same e-mail (compared case-insensitively) when
exactly one Sell user has it, again whenever an account is saved or signs in and after the reps'
e-mails change; or an admin links it on the user's admin page (`via=admin`), a link e-mail
matching never overrides. Who then sees what is `visits.access`'s business.
"""

from __future__ import annotations

from collections import defaultdict

from django.contrib.auth.models import User
from django.db import transaction

from visits.models import Rep, SellLink, SellLinkVia


def reps_by_email() -> dict[str, list[int]]:
    """{lower-cased e-mail: the ids of the reps that have it}, for the reps with an e-mail."""
    found: dict[str, list[int]] = defaultdict(list)
    for rep_id, email in Rep.objects.exclude(email="").values_list("id", "email"):
        found[email.strip().lower()].append(rep_id)
    return found


def links_refresh(*, user_ids: list[int] | None = None) -> int:
    """Link each active account (of `user_ids`, or all) that has no admin's link to the one Sell
    user with its e-mail; drop an e-mail link that no longer holds (the e-mail changed, or two
    Sell users now share it). Returns how many links were made, moved or dropped."""
    users = User.objects.filter(is_active=True)
    if user_ids is not None:
        users = users.filter(id__in=user_ids)
    existing = {link.user_id: link for link in SellLink.objects.filter(user__in=users)}
    emails = reps_by_email()
    changed = 0
    with transaction.atomic():
        for user_id, email in users.values_list("id", "email"):
            link = existing.get(user_id)
            if link is not None and link.via == SellLinkVia.ADMIN:
                continue
            matches = emails.get(email.strip().lower(), []) if email.strip() else []
            wanted = matches[0] if len(matches) == 1 else None
            if wanted is None and link is not None:
                link.delete()
                changed += 1
            elif wanted is not None and (link is None or link.rep_id != wanted):
                linked = {"rep_id": wanted, "via": SellLinkVia.EMAIL}
                SellLink.objects.update_or_create(user_id=user_id, defaults=linked)
                changed += 1
    return changed


def user_saved(sender, instance: User, **kwargs) -> None:
    """post_save of an account: its e-mail may now match a Sell user's."""
    if kwargs.get("raw") or kwargs.get("update_fields") == frozenset({"last_login"}):
        return  # a fixture, or the sign-in's own save (user_signed_in links then)
    links_refresh(user_ids=[instance.id])


def user_signed_in(sender, request, user: User, **kwargs) -> None:
    """user_logged_in: a Sell user may have gained this account's e-mail since it was saved."""
    links_refresh(user_ids=[user.id])

"""Creates (or resets) the demo's team accounts and prints their credentials: one Managers
account per regional manager, whose e-mail is that manager's Sell e-mail (so `visits.accounts`
links it to their Sell user: they see their own team), and a Directors account (every rep,
read-only). Names and passwords are fixed and written in the README. For the demo only."""

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand

from visits.demo.generator import leaders

# username, password, group, and whose e-mail (the generator's leaders: director first)
ACCOUNTS = (
    ("central-manager", "demo-central", "Managers", 1),
    ("east-manager", "demo-east", "Managers", 2),
    ("director", "demo-director", "Directors", 0),
)


def demo_accounts_make() -> list[tuple[str, str, str]]:
    """The accounts, made or reset (password, e-mail, group): (username, password, what it sees)."""
    people = leaders()
    made = []
    for username, password, group, who in ACCOUNTS:
        person = people[who]
        first, _, last = person["name"].partition(" ")
        user, _ = User.objects.get_or_create(username=username)
        user.email, user.first_name, user.last_name = person["email"], first, last
        user.is_active, user.is_staff, user.is_superuser = True, False, False
        user.set_password(password)
        user.save()  # visits.accounts links it to the Sell user with its e-mail, now or once synced
        user.groups.set([Group.objects.get(name=group)])
        sees = f"the {person['group']} team of {person['name']}" if person["group"] else "every rep, read-only"
        made.append((username, password, f"{group}: {sees}"))
    return made


class Command(BaseCommand):
    help = "Create or reset the demo's regional managers' and director's accounts and print their credentials."

    def handle(self, *args, **options):
        for username, password, sees in demo_accounts_make():
            self.stdout.write(f"demo account: username {username!r}, password {password!r} ({sees})")

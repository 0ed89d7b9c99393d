"""Sends the weekly digests (visits/notify/send.py): of the week just ended by default, or of the
week holding --week's day; to everyone who gets one, or only --user. --dry-run prints each mail
(recipient, subject, text part) and records and sends nothing."""

from django.core.management.base import BaseCommand, CommandError

from visits.notify.send import RecipientError, digests_send
from visits.notify.weeks import week_label, week_last_ended, week_parse


class Command(BaseCommand):
    help = "Send the weekly digests (of the week just ended, by default) to the managers and directors."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="print the mails; record and send nothing")
        parser.add_argument("--user", metavar="NAME", help="only this user's digest (their username)")
        parser.add_argument("--week", metavar="YYYY-MM-DD", help="the week holding this day (Monday to Sunday)")

    def handle(self, *args, dry_run=False, user=None, week=None, **options):
        try:
            monday = week_parse(week) if week else week_last_ended()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            result = digests_send(week=monday, username=user, dry_run=dry_run)
        except RecipientError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Digests of the week of {week_label(monday)}{' (dry run: nothing sent)' if dry_run else ''}")
        if not (result.previews or result.sent or result.skipped or result.failed):
            self.stdout.write("Nobody gets a digest: no active member of Managers or Directors has an e-mail address.")
        for preview in result.previews:
            self.stdout.write(f"\n=== To: {preview.to}\n=== Subject: {preview.subject}\n\n{preview.text}")
        for line in result.sent:
            self.stdout.write(f"sent to {line}")
        for reason in result.skipped:
            self.stdout.write(f"skipped: {reason}")
        for problem in result.failed:
            self.stderr.write(problem)
        if not dry_run:
            self.stdout.write(result.summary().split(";")[0])
        if result.failed:
            raise CommandError(f"{len(result.failed)} digest(s) could not be sent; a next run tries them again.")

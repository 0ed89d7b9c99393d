"""Who may do what: the Managers and Reviewers groups and their permissions.

Created by migration 0003 and made sure of after every `migrate` (and after a test
database flush), so that the groups are there whatever happened to the table.
"""

PERMISSIONS = {
    "view_reports": "Can view reports, maps and exports",
    "review_visits": "Can decide on flagged visits",
    "accept_low_risk": "Can accept all low-tier visits of a filter at once",
}
GROUPS = {
    "Managers": ["view_reports"],
    "Reviewers": ["view_reports", "review_visits"],
    "Lead reviewers": ["view_reports", "review_visits", "accept_low_risk"],
}


def groups_ensure(apps) -> None:
    """Create the permissions and groups if missing; `apps` is a registry (historical or real)."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    visit_type, _ = ContentType.objects.get_or_create(app_label="visits", model="visit")
    permissions = {
        codename: Permission.objects.get_or_create(codename=codename, content_type=visit_type, defaults={"name": name})[
            0
        ]
        for codename, name in PERMISSIONS.items()
    }
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*(permissions[c] for c in codenames))

"""Who may do what: the groups and their permissions. Managers see their own reporting line only
(visits.access); Directors, Reviewers and Lead reviewers see every rep.

Created by migration 0003 and made sure of after every `migrate` (and after a test
database flush), so that the groups are there whatever happened to the table.
"""

PERMISSIONS = {
    "view_reports": "Can view reports, maps and exports",
    "review_visits": "Can decide on flagged visits",
    "accept_low_risk": "Can accept all low-tier visits of a filter at once",
    "view_all_reps": "Can see every rep, not only their own reporting line",
}
GROUPS = {
    "Managers": ["view_reports"],
    "Directors": ["view_reports", "view_all_reps"],
    "Reviewers": ["view_reports", "view_all_reps", "review_visits"],
    "Lead reviewers": ["view_reports", "view_all_reps", "review_visits", "accept_low_risk"],
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

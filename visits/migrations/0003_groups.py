"""Creates the Managers and Reviewers groups with their permissions."""

from django.db import migrations

# As visits/roles.py had them when this was written: a migration must not change when the app's
# code does (roles.py keeps the live copy, made sure of after every migrate).
PERMISSIONS = {"view_reports": "Can view reports, maps and exports", "review_visits": "Can decide on flagged visits"}
GROUPS = {"Managers": ["view_reports"], "Reviewers": ["view_reports", "review_visits"]}


def groups_create(apps, schema_editor):
    # Permissions are normally created after all migrations have run; the groups need them now.
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


def groups_remove(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("visits", "0002_report_permissions"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(groups_create, groups_remove)]

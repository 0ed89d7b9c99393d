"""Creates the Managers and Reviewers groups with their permissions."""

from django.db import migrations

from visits.roles import GROUPS, groups_ensure


def groups_create(apps, schema_editor):
    # Permissions are normally created after all migrations have run; the groups need them now.
    groups_ensure(apps)


def groups_remove(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("visits", "0002_report_permissions"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(groups_create, groups_remove)]

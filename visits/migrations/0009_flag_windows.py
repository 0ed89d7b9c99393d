"""Flags recomputed around changes (review/flags.py): FlagWindow, and DirtyRep's `whole` and
`windows`. A rep marked before this migration was marked for a whole recompute: it keeps that."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("visits", "0008_indexes_for_scale")]

    operations = [
        migrations.AddField(model_name="dirtyrep", name="whole", field=models.BooleanField(default=True)),
        migrations.AlterField(
            model_name="dirtyrep",
            name="whole",
            field=models.BooleanField(default=False, help_text="recompute all of the rep's flags, not windows"),
        ),
        migrations.AddField(
            model_name="dirtyrep",
            name="windows",
            field=models.IntegerField(default=0, help_text="FlagWindows recorded since the last recompute"),
        ),
        migrations.CreateModel(
            name="FlagWindow",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("rep_id", models.BigIntegerField()),
                ("visit_id", models.BigIntegerField()),
                ("visited_at", models.DateTimeField(null=True)),
                ("created_at", models.DateTimeField(null=True)),
                ("latitude", models.FloatField(null=True)),
                ("longitude", models.FloatField(null=True)),
            ],
            options={"indexes": [models.Index(fields=["rep_id"], name="flag_window_rep")]},
        ),
    ]

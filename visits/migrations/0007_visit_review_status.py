from django.db import migrations, models

# The column's first values, from the decisions held (each decision recorded afterwards keeps it:
# models.review_status_refresh); SQL as it stood when written.
FILL = (
    "UPDATE visits_visit SET review_status = (SELECT d.kind FROM visits_decision d "
    "WHERE d.visit_id = visits_visit.id ORDER BY d.decided_at DESC, d.id DESC LIMIT 1) "
    "WHERE id IN (SELECT visit_id FROM visits_decision)"
)


class Migration(migrations.Migration):
    """Each visit keeps the kind of its latest decision, so the review queue reads the visit alone."""

    dependencies = [("visits", "0006_decisions_undeletable")]

    operations = [
        migrations.AddField(
            model_name="visit",
            name="review_status",
            field=models.CharField(blank=True, editable=False, max_length=20, null=True),
        ),
        migrations.RunSQL(FILL, migrations.RunSQL.noop),
    ]

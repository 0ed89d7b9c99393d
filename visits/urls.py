from django.urls import path

from . import views

app_name = "visits"

urlpatterns = [
    path("", views.home, name="home"),
    path("reports/reps/", views.reps_report, name="reps"),
    path("reports/reps.csv", views.reps_csv, name="reps_csv"),
    path("reports/reps/<int:rep_id>/", views.rep_detail, name="rep"),
    path("reports/outcomes/", views.outcomes_report, name="outcomes"),
    path("reports/outcomes.csv", views.outcomes_csv, name="outcomes_csv"),
    path("reports/matrix/", views.matrix_report, name="matrix"),
    path("reports/matrix.csv", views.matrix_csv, name="matrix_csv"),
    path("visits/", views.visits_list, name="visits"),
    path("visits.csv", views.visits_csv, name="visits_csv"),
    path("visits/<int:visit_id>/", views.visit_detail, name="visit"),
    path("visits/<int:visit_id>/map/", views.visit_map, name="visit_map"),
    path("visits/<int:visit_id>/summary.json", views.visit_summary, name="visit_summary"),
    path("review/", views.review_queue, name="review"),
    path("review/decide/", views.review_decide, name="review_decide"),
    path("map/", views.map_page, name="map"),
    path("map/frame/", views.map_frame, name="map_frame"),
    path("status/", views.status, name="status"),
    path("status/rejected/", views.rejected, name="rejected"),
    path("healthz", views.healthz, name="healthz"),
]

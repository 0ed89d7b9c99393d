from django.urls import path

from visits.views import account, addresses, exports, maps, reports, review, status

app_name = "visits"

urlpatterns = [
    path("", reports.home, name="home"),
    path("reports/reps/", reports.reps_report, name="reps"),
    path("reports/reps.csv", exports.reps_csv, name="reps_csv"),
    path("reports/reps/<int:rep_id>/", reports.rep_detail, name="rep"),
    path("reports/teams/", reports.teams_report, name="teams"),
    path("reports/teams.csv", exports.teams_csv, name="teams_csv"),
    path("reports/outcomes/", reports.outcomes_report, name="outcomes"),
    path("reports/outcomes.csv", exports.outcomes_csv, name="outcomes_csv"),
    path("reports/matrix/", reports.matrix_report, name="matrix"),
    path("reports/matrix.csv", exports.matrix_csv, name="matrix_csv"),
    path("visits/", reports.visits_list, name="visits"),
    path("visits.csv", exports.visits_csv, name="visits_csv"),
    path("visits/<int:visit_id>/", review.visit_detail, name="visit"),
    path("visits/<int:visit_id>/map/", maps.visit_map, name="visit_map"),
    path("visits/<int:visit_id>/summary.json", maps.visit_summary, name="visit_summary"),
    path("review/", review.review_queue, name="review"),
    path("review/reps/", review.review_reps, name="review_reps"),
    path("review/decide/", review.review_decide, name="review_decide"),
    path("review/accept-low/", review.review_accept_low, name="review_accept_low"),
    path("review.csv", exports.review_csv, name="review_csv"),
    path("review/rules/", review.review_rules, name="review_rules"),
    path("review/rules.csv", exports.review_rules_csv, name="review_rules_csv"),
    path("access_log.csv", exports.access_log_csv, name="access_log_csv"),
    path("review/addresses/", addresses.suspect_addresses, name="addresses"),
    path("review/addresses/<int:customer_id>/", addresses.suspect_address, name="address"),
    path("review/addresses/<int:customer_id>/mark/", addresses.address_mark, name="address_mark"),
    path("map/", maps.map_page, name="map"),
    path("map/frame/", maps.map_frame, name="map_frame"),
    path("map/clusters.json", maps.map_clusters, name="map_clusters"),
    path("map/points.json", maps.map_points, name="map_points"),
    path("status/", status.status, name="status"),
    path("status/rejected/", status.rejected, name="rejected"),
    path("account/settings/", account.account_settings, name="account_settings"),
    path("healthz", status.healthz, name="healthz"),
]

from django.urls import path

from . import views

app_name = "visits"

urlpatterns = [
    path("", views.home, name="home"),
    path("status/", views.status, name="status"),
    path("status/rejected/", views.rejected, name="rejected"),
]

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "visitsdash administration"
admin.site.site_title = "visitsdash"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("visits.urls")),
]

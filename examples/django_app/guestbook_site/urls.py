"""URLs: the guestbook at /, its stats as JSON at /stats, and the admin."""

from django.contrib import admin
from django.urls import path
from guestbook import views

urlpatterns = [
    path("", views.index, name="index"),
    path("stats", views.stats, name="stats"),
    path("admin/", admin.site.urls),
]

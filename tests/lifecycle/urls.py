"""URLconf of tests.settings_lifecycle."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("state", views.state),
    path("echo", views.echo),
    path("stream", views.stream),
    path("error", views.error),
]

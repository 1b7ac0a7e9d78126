from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.HomeView.as_view(), name="home"),
    path("items/", views.ItemListView.as_view(), name="item_list"),
    path("items/<int:pk>/", views.ItemDetailView.as_view(), name="item_detail"),
    path("template-db/", views.template_db, name="template_db"),
    path("json", views.json_hello, name="json"),
    path("api/items/", views.api_items, name="api_items"),
    path("hello", views.hello, name="hello"),
    path("contact/", views.contact, name="contact"),
    path("contact/thanks/", views.contact_thanks, name="contact_thanks"),
    path("upload/", views.upload, name="upload"),
    path("download/<str:name>", views.download, name="download"),
    path("download-sized/<int:size>", views.download_sized, name="download_sized"),
    path("stream/", views.stream, name="stream"),
    path("sleep/", views.sleep, name="sleep"),
    path("boom/", views.boom, name="boom"),
    path("server-stats/", views.server_stats, name="server_stats"),
    path("echo/", views.echo, name="echo"),
]

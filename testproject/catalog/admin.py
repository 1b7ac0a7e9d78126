from __future__ import annotations

from django.contrib import admin

from .models import ContactMessage, Item


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["name", "price", "in_stock", "created"]
    list_filter = ["in_stock"]
    search_fields = ["name", "description"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(ContactMessage)
class ContactMessageAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "created"]
    search_fields = ["name", "email", "message"]
    readonly_fields = ["created"]

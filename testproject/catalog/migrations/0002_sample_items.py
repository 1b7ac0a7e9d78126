"""Data migration: 25 sample items, so the list pages and benchmarks have data."""

from __future__ import annotations

from decimal import Decimal

from django.db import migrations

ADJECTIVES = ["Red", "Blue", "Green", "Golden", "Silver"]
NOUNS = ["Teapot", "Lamp", "Notebook", "Backpack", "Bicycle"]
SAMPLE_COUNT = 25


def sample_items():
    for number in range(1, SAMPLE_COUNT + 1):
        adjective = ADJECTIVES[(number - 1) % len(ADJECTIVES)]
        noun = NOUNS[(number - 1) // len(ADJECTIVES)]
        name = f"{adjective} {noun}"
        yield {
            "name": name,
            "slug": f"sample-{number:02d}-{adjective.lower()}-{noun.lower()}",
            "description": (
                f"Sample item number {number}: a {adjective.lower()} {noun.lower()} "
                "created by the catalog data migration for demos and benchmarks."
            ),
            "price": Decimal(number * 7 % 100) + Decimal("0.99"),
            "in_stock": number % 4 != 0,
        }


def create_sample_items(apps, schema_editor):
    Item = apps.get_model("catalog", "Item")
    db_alias = schema_editor.connection.alias
    Item.objects.using(db_alias).bulk_create(Item(**fields) for fields in sample_items())


def delete_sample_items(apps, schema_editor):
    Item = apps.get_model("catalog", "Item")
    db_alias = schema_editor.connection.alias
    Item.objects.using(db_alias).filter(slug__startswith="sample-").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_sample_items, delete_sample_items),
    ]

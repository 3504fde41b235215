"""Models for the backend tests."""

from __future__ import annotations

from django.db import models


class Counter(models.Model):
    name = models.CharField(max_length=50, unique=True)
    value = models.IntegerField(default=0)


class Item(models.Model):
    name = models.CharField(max_length=50)
    qty = models.IntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)


class Tag(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="tags")
    label = models.CharField(max_length=20)

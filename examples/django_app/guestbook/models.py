"""A guestbook entry, and a per-page visit counter."""

from django.db import models


class Entry(models.Model):
    name = models.CharField(max_length=80)
    message = models.TextField(max_length=2000)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "entries"

    def __str__(self) -> str:
        return f"{self.name}: {self.message[:40]}"


class Visits(models.Model):
    page = models.CharField(max_length=100, unique=True)
    count = models.IntegerField(default=0)

    class Meta:
        verbose_name_plural = "visits"

    def __str__(self) -> str:
        return f"{self.page}: {self.count}"

"""The efs engine's ``DatabaseWrapper`` (see the package docstring)."""

from __future__ import annotations

from typing import ClassVar

from lambdalite.contrib.django import base
from lambdalite.contrib.django.config import Flavor

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(base.DatabaseWrapper):
    flavor: ClassVar[Flavor] = "efs"

"""Management commands of the ``lambdalite.contrib.django`` app."""

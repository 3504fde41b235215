"""``python examples/django_app/manage.py test guestbook``: runs on a fresh test database (a
folder remote in the cache dir, created and destroyed by the test runner)."""

from django.db import connection
from django.test import TestCase, TransactionTestCase

from guestbook.models import Entry, Visits


class GuestbookTests(TestCase):
    def test_sign_and_list(self) -> None:
        response = self.client.post("/", {"name": "Ada", "message": "Hello"})
        self.assertEqual(response.status_code, 302)
        self.assertContains(self.client.get("/"), "Hello")
        self.assertEqual(Entry.objects.count(), 1)

    def test_visits_are_counted(self) -> None:
        for _ in range(3):
            self.client.get("/")
        self.assertEqual(Visits.objects.get(page="index").count, 3)

    def test_runs_on_a_lambdalite_test_database(self) -> None:
        self.assertIn("django-test-databases", connection.settings_dict["NAME"])


class CommitTests(TransactionTestCase):
    def test_commits_are_real(self) -> None:
        self.client.get("/")
        self.assertEqual(self.client.get("/stats").json()["visits"], 1)

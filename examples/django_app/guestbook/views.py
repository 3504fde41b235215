"""The guestbook's views.

``index`` counts the visit with a read-modify-write (read the count, add one, save) in a
``retrying_atomic`` block: when another instance commits first, the block runs again on the
newest version, so no visit is ever lost. (``F("count") + 1`` would be the idiomatic way to
count; the read-modify-write shows what the retry is for.)
"""

from __future__ import annotations

from django import forms
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from guestbook.models import Entry, Visits
from lambdalite.contrib.django import retrying_atomic


class EntryForm(forms.ModelForm):
    class Meta:
        model = Entry
        fields = ["name", "message"]


@retrying_atomic
def count_visit(page: str) -> int:
    visits, _ = Visits.objects.get_or_create(page=page)
    visits.count += 1
    visits.save(update_fields=["count"])
    return visits.count


@retrying_atomic
def sign(form: EntryForm) -> Entry:
    entry: Entry = form.save()
    return entry


def index(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = EntryForm(request.POST)
        if form.is_valid():
            sign(form)
            return redirect("index")
    else:
        form = EntryForm()
    visits = count_visit("index")
    entries = Entry.objects.all()[:50]
    return render(request, "guestbook/index.html",
                  {"form": form, "entries": entries, "visits": visits})


def stats(request: HttpRequest) -> JsonResponse:
    visits = Visits.objects.filter(page="index").values_list("count", flat=True).first()
    return JsonResponse({
        "visits": visits or 0,
        "entries": list(Entry.objects.values_list("message", flat=True)),
    })

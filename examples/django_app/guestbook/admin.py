from django.contrib import admin

from guestbook.models import Entry, Visits

admin.site.register(Entry)
admin.site.register(Visits)

from django.contrib import admin

from tests.integration.djangoproj.testapp.models import Counter, Item

admin.site.register(Counter)
admin.site.register(Item)

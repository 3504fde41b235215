"""AWS Lambda entry point for the guestbook (API Gateway or a function URL, via apig-wsgi).

Handler: ``lambda_function.lambda_handler``. An event ``{"manage": ["migrate"]}`` runs a
management command instead of a request (``aws lambda invoke --payload
'{"manage": ["migrate"]}' ...``): every commit is published when it returns, so the migrated
database is on S3 before the invocation ends (no close() needed, unlike the old s3sqlite).

``pip install apig-wsgi`` into the deployment package; it is not a lambdalite dependency.
"""

from __future__ import annotations

import io
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guestbook_site.settings")

from apig_wsgi import make_lambda_handler
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
_http = make_lambda_handler(application, binary_support=True)


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    if "manage" in event:
        out = io.StringIO()
        call_command(*event["manage"], stdout=out, stderr=out)
        return {"output": out.getvalue()}
    return _http(event, context)

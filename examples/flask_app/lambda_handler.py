"""AWS Lambda entry point (API Gateway HTTP/REST API, or an ALB): ``lambda_handler.handler``.

Needs ``apig-wsgi`` in the deployment package (``pip install apig-wsgi``); lambdalite does not
depend on it. The app is created once per container (the init phase), so the engine, its pool
and the local copy in the cache directory are reused by every invocation the container serves.
"""

from __future__ import annotations

from apig_wsgi import make_lambda_handler
from examples.flask_app import create_app

app = create_app()
handler = make_lambda_handler(app, binary_support=True)

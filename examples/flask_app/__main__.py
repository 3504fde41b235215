"""``python -m examples.flask_app``: the example on the embedded default, at http://127.0.0.1:5000.

``DATABASE_URL`` picks another database (``sqlite+lambdalite:///?remote=s3://bucket/app``);
``--port`` another port.
"""

from __future__ import annotations

import argparse
import logging
import urllib.parse

from examples.flask_app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.flask_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    app = create_app()
    url = urllib.parse.unquote(str(app.config["SQLALCHEMY_DATABASE_URI"]))
    logging.getLogger(__name__).info("database: %s", url)
    app.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()

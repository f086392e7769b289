"""WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`.

gevent's monkey patching comes first, before anything imports ssl, socket, requests or
redis; then psycopg2 is made cooperative so a PostgreSQL query yields to other greenlets.
"""

from gevent import monkey

monkey.patch_all()

from psycogreen.gevent import patch_psycopg  # noqa: E402

patch_psycopg()

from aivonx import create_app  # noqa: E402

app = create_app()

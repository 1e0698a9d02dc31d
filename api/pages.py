"""How the executor's HTML pages are answered: rendered with a policy that lets them load nothing from elsewhere."""
from __future__ import annotations

from typing import Any

from flask import Response, render_template

# The pages load nothing from elsewhere and run only this executor's scripts.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def page(template: str, **context: Any) -> Response:
    """Render one of the executor's pages with a content security policy that allows no other origin."""
    response = Response(render_template(template, **context), mimetype="text/html")
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response

"""The Content-Security-Policy of the dashboard's pages (URL names `dashboard-*`).

Their scripts are files of this server (no inline script, no eval), so a
script another page or a stored string tried to run is refused by the
browser, whatever escaping might one day miss. Styles may be inline: htmx adds
its indicator styles, and the chart library styles its canvas. The admin, the
browsable API and the interactive API docs run inline scripts of their own and
keep Django's headers only.
"""

DASHBOARD_CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",  # the API and /ws/... of this host ('self' covers ws: and wss:)
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))


def dashboard_csp_middleware(get_response):
    def middleware(request):
        response = get_response(request)
        match = request.resolver_match
        if match is not None and (match.url_name or "").startswith("dashboard-"):
            response.headers.setdefault("Content-Security-Policy", DASHBOARD_CSP)
        return response

    return middleware

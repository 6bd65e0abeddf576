"""The admin HTTP server: the queue server's figures as JSON
(``/stats.json``), for Prometheus (``/metrics``) and for load balancers
(``/health``), and a status page (``/``).  It only reads the service.

- ``site.py``: `AdminService`, started and stopped with the queue server.
- ``resources.py``: the pages, and the gate in front of them (read-only
  methods, the auth file's users).
- ``figures.py``: the JSON documents.
- ``metrics.py``: the Prometheus collector and the journal's histograms.
- ``history.py``: the queues' recent depths and rates, for the page.
- ``static/``: the page, its script and its style.
"""

from erq.admin.site import AdminService, AdminSite

__all__ = ["AdminService", "AdminSite"]

"""service: the long-running prober, composed from the layers below.

The composition root (app), the prober service (prober), /status and liveness
(status), the HTTP server (server). No business rules.
"""

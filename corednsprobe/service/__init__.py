"""service: the long-running prober, composed from the layers below.

The composition root, /status and liveness, the HTTP server. No business rules.
"""

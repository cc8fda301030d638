"""Observability: snapshots of the live state and their rendering for people.

``snapshot`` turns a running proxy's pools into the plain document that ``GET /stats``
serves; ``render`` turns such a document into rich renderables. Rendering is pure: only
commands print.
"""

"""The product's face: a FastAPI JSON API, Prometheus metrics and an offline dashboard page
over the cloud store. :func:`cloud.dashboard.app.create_app` builds the app."""

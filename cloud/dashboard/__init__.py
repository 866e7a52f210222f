"""The product's face: a FastAPI JSON API, Prometheus metrics and an offline dashboard page
over the cloud store (issue 9). :func:`cloud.dashboard.app.create_app` builds the app."""

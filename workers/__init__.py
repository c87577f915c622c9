"""Celery app and tasks (see workers/celery.py)."""

"""The floor of `make bench`: a minimal DRF endpoint doing one INSERT, served by the same
gunicorn configuration as Switchyard. Reuses nothing of Switchyard (own settings, urls, model,
database)."""

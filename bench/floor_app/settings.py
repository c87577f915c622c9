"""Settings of the floor app: DRF, one model, Postgres from FLOOR_DATABASE_URL. No sessions,
no auth, no admin: what is left of a DRF request when the work is one INSERT."""

import os

import environ

SECRET_KEY = "floor-bench-only"  # signs nothing: no sessions, no auth
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "rest_framework", "floor_app"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "floor_app.urls"
DATABASES = {"default": environ.Env.db_url_config(
    os.environ.get("FLOOR_DATABASE_URL",
                   "postgres://postgres@127.0.0.1:5432/switchyard_bench_floor"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}
LOGGING = {"version": 1, "disable_existing_loggers": False}

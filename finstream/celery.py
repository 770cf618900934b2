"""The Celery app: a worker runs rollups, retention and partition upkeep that
beat schedules (see `CELERY_BEAT_SCHEDULE` in market/tasks.py)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")

app = Celery("finstream")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

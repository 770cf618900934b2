"""The Celery app: a worker runs rollups, retention and partition upkeep that
beat schedules (`CELERY_BEAT_SCHEDULE` in finstream/settings.py; the tasks in
market/tasks.py). The hourly tasks also run once when beat starts.

The worker serves its Prometheus metrics on METRICS_PORT (0 = off): the
pipeline registry (candle seal repairs...) and its tasks' counts and durations.
It runs with `--pool threads` so that tasks count into that one registry.
"""

import os
import time

from celery import Celery
from celery.schedules import crontab
from celery.signals import beat_init, task_postrun, task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")

app = Celery("finstream")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_started: dict[str, float] = {}


@worker_init.connect
def _serve_metrics(**_kwargs) -> None:
    from django.conf import settings

    from streaming import metrics

    metrics.serve_metrics(settings.METRICS_PORT)


@beat_init.connect
def _hourly_tasks_at_start(sender=None, **_kwargs) -> None:
    """A fresh deploy creates the partitions ahead and applies retention now, not at the next set minute."""
    from django.conf import settings

    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        if isinstance(entry["schedule"], crontab):
            sender.app.send_task(entry["task"], args=entry.get("args", ()))


@task_prerun.connect
def _task_started(task_id=None, **_kwargs) -> None:
    _started[task_id] = time.monotonic()


@task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **_kwargs) -> None:
    from streaming import metrics

    started = _started.pop(task_id, None)
    name = getattr(task, "name", "unknown")
    metrics.CELERY_TASKS.labels(task=name, outcome=(state or "unknown").lower()).inc()
    if started is not None:
        metrics.CELERY_TASK_DURATION.labels(task=name).observe(time.monotonic() - started)

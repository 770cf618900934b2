"""FinStream settings, read from the environment (12-factor).

Every variable is listed in `.env.example` with its default. The defaults run
the local stack that `make up` starts; production differs only by environment.
"""

from pathlib import Path

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from finstream.env import (
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    env_symbols,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# The .env that configures `make up` configures a process run by hand too (`manage.py replay`
# against a stack on other ports); what the environment already sets wins, as in deploy/stack.sh.
if not env_bool("FINSTREAM_IGNORE_DOTENV", False):
    load_dotenv(BASE_DIR / ".env", override=False)
# The local stack's ports (deploy/stack.sh): the URLs below default to them.
PG_PORT = env_int("PG_PORT", 5432, minimum=1, maximum=65535)
REDIS_PORT = env_int("REDIS_PORT", 6379, minimum=1, maximum=65535)
KAFKA_PORT = env_int("KAFKA_PORT", 9092, minimum=1, maximum=65535)

DEVELOPMENT_SECRET_KEY = "dev-insecure-finstream-key-change-me"
DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_DEBUG is off but DJANGO_SECRET_KEY is the development key: set DJANGO_SECRET_KEY to a long random "
        "value (python -c 'import secrets; print(secrets.token_urlsafe(50))')"
    )
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "corsheaders",
    "rest_framework",
    "channels",
    "streaming",
    "market",
    "alerts",
]

DEFAULT_EXCEPTION_REPORTER_FILTER = "finstream.errors.ExceptionReporterFilter"
# Wrong passwords from one address a minute before its log-ins are refused for the rest of it (finstream/auth.py).
AUTHENTICATION_BACKENDS = ["finstream.auth.AttemptLimitedModelBackend"]
LOGIN_FAILURES_PER_MINUTE = env_int("LOGIN_FAILURES_PER_MINUTE", 10, minimum=1)

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "corsheaders.middleware.CorsMiddleware",  # outside the error middlewares: a page elsewhere reads their errors too
    "finstream.errors.client_errors_middleware",
    "finstream.errors.DependencyAwayMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "finstream.headers.dashboard_csp_middleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "finstream.urls"
ASGI_APPLICATION = "finstream.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- PostgreSQL ---------------------------------------------------------------
# TIMESCALE_URL is the seed's name; DATABASE_URL is accepted as the common one.
DATABASE_URL = env_url(
    "TIMESCALE_URL",
    env_str("DATABASE_URL", f"postgresql://finstream:finstream@127.0.0.1:{PG_PORT}/finstream"),
    schemes=("postgresql", "postgres"),
)
# A pool of at most DATABASE_POOL_SIZE connections (0 = none: one persistent connection per
# thread, kept CONN_MAX_AGE seconds). The web app needs the pool: under ASGI each request runs its
# sync code in a thread of its own, so a per-thread connection would be opened for every request.
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 0, minimum=0, maximum=500)
DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
DATABASE_POOL_OPTIONS = {
    "min_size": min(2, DATABASE_POOL_SIZE), "max_size": DATABASE_POOL_SIZE,
    # A request waits for a pooled connection no longer than for a connection of its own: with
    # PostgreSQL away, its 503 comes after DATABASE_CONNECT_TIMEOUT, not a longer pool wait.
    "timeout": DATABASE_CONNECT_TIMEOUT,
    # The pool tries to reconnect after waits that double (1, 2, 4 ... s) until reconnect_timeout, 5
    # minutes by default: PostgreSQL back after a minute's outage, it slept up to a minute more, and
    # every request meanwhile was a 503. Giving up after 10 s lets the next request start afresh.
    "reconnect_timeout": 10.0,
}
DATABASES = {
    "default": {
        **database_from_url("TIMESCALE_URL", DATABASE_URL),
        "CONN_MAX_AGE": 0 if DATABASE_POOL_SIZE else env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,  # with a pool: the pool checks a connection before lending it
        "OPTIONS": {
            "connect_timeout": DATABASE_CONNECT_TIMEOUT,
            **({"pool": DATABASE_POOL_OPTIONS} if DATABASE_POOL_SIZE else {}),
        },
        "TEST": {"NAME": env_str("DATABASE_TEST_NAME", "test_finstream")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# "auto" uses TimescaleDB hypertables when the extension is available and
# native range partitioning when it is not; "timescale" and "partitions" force one.
STORAGE_MODE = env_str("FINSTREAM_STORAGE_MODE", "auto")
if STORAGE_MODE not in {"auto", "timescale", "partitions"}:
    raise ImproperlyConfigured(f"FINSTREAM_STORAGE_MODE={STORAGE_MODE!r}: use auto, timescale or partitions")
PARTITIONS_AHEAD_DAYS = env_int("PARTITIONS_AHEAD_DAYS", 7, minimum=1, maximum=366)
TRADES_RETENTION_DAYS = env_int("TRADES_RETENTION_DAYS", 30, minimum=1)
QUOTES_RETENTION_DAYS = env_int("QUOTES_RETENTION_DAYS", 7, minimum=1)
# The 1d seal re-derives the daily candles of the last three days, from the start of the oldest, from the
# 1m candles (CELERY_BEAT_SCHEDULE): those must outlive it, or it would rewrite days from what is left.
FINE_CANDLES_RETENTION_DAYS = env_int("FINE_CANDLES_RETENTION_DAYS", 90, minimum=4)

# --- Redis --------------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/0", schemes=("redis", "rediss"))
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 30},
    }
}

# --- Kafka --------------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = env_str("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{KAFKA_PORT}")
# A prefix isolates topic names, e.g. per test run; empty in normal use so the
# topics are exactly the spec's (market.trades, market.quotes, ...).
KAFKA_TOPIC_PREFIX = env_str("KAFKA_TOPIC_PREFIX", "")
KAFKA_CONSUMER_GROUP_PREFIX = env_str("KAFKA_CONSUMER_GROUP_PREFIX", "finstream")
KAFKA_TOPIC_PARTITIONS = env_int("KAFKA_TOPIC_PARTITIONS", 4, minimum=1, maximum=1000)
# How long a producer holds messages to send them together. Every message
# waits up to this before any consumer can see it, WebSocket clients included;
# shorter costs the broker more requests: 5 ms (librdkafka's own default) took
# ~10 ms off the WebSocket p99 for ~12 % of a core of the broker's at 10k
# trades/s (bench/RESULTS.md, issue 7). At full speed batches fill before it.
KAFKA_PRODUCER_LINGER_MS = env_int("KAFKA_PRODUCER_LINGER_MS", 5, minimum=0, maximum=5_000)
CONSUMER_BATCH_SIZE = env_int("CONSUMER_BATCH_SIZE", 20000, minimum=1, maximum=100_000)
# How long the broker gathers a consumer's batch (streaming/runner.py); at most
# 10 s, since requests on a held fetch's connection wait behind it.
CONSUMER_BATCH_WAIT_MS = env_int("CONSUMER_BATCH_WAIT_MS", 200, minimum=1, maximum=10_000)
# The relay's batch wait is part of every WebSocket client's latency; the
# stores' is not, and longer batches make their COPYs cheaper. Each relay
# batch is one write to every client, so a shorter wait costs the web
# processes more writes (bench/RESULTS.md, issue 7).
RELAY_BATCH_WAIT_MS = env_int("RELAY_BATCH_WAIT_MS", 40, minimum=1, maximum=10_000)
# Consecutive undecodable messages after which a consumer stops instead of
# dead-lettering everything: that many in a row means a bad deploy, not bad luck.
CONSUMER_MAX_CONSECUTIVE_POISON = env_int("CONSUMER_MAX_CONSECUTIVE_POISON", 1000, minimum=1)
# A trade or quote whose event time is further ahead of the consumer's clock than this is dead-lettered: a
# producer's clock is wrong, and stored it would be the symbol's "last" until the clock caught up with it.
EVENT_TIME_MAX_AHEAD_SECONDS = env_int("EVENT_TIME_MAX_AHEAD_SECONDS", 60, minimum=1, maximum=86_400)

# --- Market -------------------------------------------------------------------
SYMBOLS = env_symbols("SYMBOLS", "AAPL,GOOGL,MSFT,AMZN,META,NVDA,TSLA,JPM,V,JNJ")
TRADES_PER_SECOND = env_float("TRADES_PER_SECOND", 100.0, minimum=0.001)

# --- Celery -------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# Celery's worker and beat log through LOGGING's handler (JSON lines with LOG_FORMAT=json), not their own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Observability ------------------------------------------------------------
# Long-running commands serve Prometheus metrics on METRICS_PORT (0 = off).
METRICS_PORT = env_int("METRICS_PORT", 0, minimum=0, maximum=65535)
# Where the metrics servers listen: loopback for the local stack, 0.0.0.0 in containers.
METRICS_ADDR = env_str("METRICS_ADDR", "127.0.0.1")
# OpenTelemetry traces go over OTLP/HTTP to this base URL (e.g. http://jaeger:4318); empty = off.
OTEL_EXPORTER_OTLP_ENDPOINT = env_str("OTEL_EXPORTER_OTLP_ENDPOINT", "")
if OTEL_EXPORTER_OTLP_ENDPOINT and not OTEL_EXPORTER_OTLP_ENDPOINT.startswith(("http://", "https://")):
    raise ImproperlyConfigured(
        f"OTEL_EXPORTER_OTLP_ENDPOINT={OTEL_EXPORTER_OTLP_ENDPOINT!r}: give the collector's http(s) URL, "
        "e.g. http://127.0.0.1:4318, or leave it empty to turn tracing off"
    )
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "finstream.logs.JsonFormatter"},
    },
    "filters": {"connection_loss": {"()": "finstream.logs.ConnectionLossInOneLine"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "channels_redis.pubsub": {"filters": ["connection_loss"]},
        "celery.beat": {"filters": ["connection_loss"]},
        "django.db.backends": {"level": "WARNING"},
        # Django's own console handler would print request errors a second time, in plain text (DEBUG on).
        "django": {"handlers": [], "level": "INFO", "propagate": True},
    },
}

# --- Web ----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
LOGIN_URL = "/admin/login/"
# The dashboard's /login/ without a ?next= lands on the market overview (Django's default is a 404).
LOGIN_REDIRECT_URL = "dashboard-overview"

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # Token first: a request without a user, or with a wrong token or password, gets 401 with
    # `WWW-Authenticate: Token` (with session authentication first, DRF answers 403 and no challenge).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "finstream.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "EXCEPTION_HANDLER": "finstream.errors.api_exception_handler",
}

# Consumers whose heartbeat `/ready` requires (comma-separated command names).
READY_CONSUMERS = env_list("READY_CONSUMERS", "build_candles,ingest_quotes,detect_anomalies")
HEARTBEAT_TTL_SECONDS = env_int("HEARTBEAT_TTL_SECONDS", 30, minimum=1)

# --- Celery beat --------------------------------------------------------------
# The hourly tasks run at set minutes of the hour (and once when beat starts: finstream/celery.py), not an
# hour after beat started: beat's schedule file is new after each deploy, and a beat restarted more often
# than hourly would never have run them.
CELERY_BEAT_SCHEDULE = {
    "partitions-ahead": {"task": "market.tasks.partitions_create_ahead", "schedule": crontab(minute=5)},
    "retention": {"task": "market.tasks.retention_apply", "schedule": crontab(minute=20)},
    "seal-fine-candles": {"task": "market.tasks.candles_seal", "schedule": 60.0, "args": ("1m", 30)},
    "seal-5m-candles": {"task": "market.tasks.candles_seal", "schedule": 300.0, "args": ("5m", 60)},
    "seal-15m-candles": {"task": "market.tasks.candles_seal", "schedule": 900.0, "args": ("15m", 120)},
    "seal-1h-candles": {"task": "market.tasks.candles_seal", "schedule": 900.0, "args": ("1h", 360)},
    "seal-4h-candles": {"task": "market.tasks.candles_seal", "schedule": crontab(minute=35), "args": ("4h", 24 * 60)},
    "seal-1d-candles": {"task": "market.tasks.candles_seal", "schedule": crontab(minute=50),
                        "args": ("1d", 3 * 24 * 60)},
    "market-stats": {"task": "market.tasks.market_stats_refresh", "schedule": 15.0},
}
# A closed bucket is sealed only this long after it closed, so that trades in
# flight through Kafka have landed first.
CANDLE_SEAL_GRACE_SECONDS = env_int("CANDLE_SEAL_GRACE_SECONDS", 120, minimum=0)

# --- REST API and WebSockets (docs/api.md) --------------------------------------
import re as _re  # noqa: E402 - this section is appended to the settings above

INSTALLED_APPS += ["rest_framework.authtoken", "drf_spectacular", "drf_spectacular_sidecar"]
# Writes (acknowledge/resolve an alert) need a user (REST_FRAMEWORK's authentication classes above):
# `Authorization: Token <key>` (`manage.py drf_create_token <username>`), a browser session, or HTTP Basic.
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"


def _throttle_rate(name: str) -> str:
    """'1000/min' style (DRF's N/second|minute|hour|day, first letter enough); empty = no throttle."""
    value = env_str(name, "").strip()
    if value and not _re.fullmatch(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate: use e.g. 1000/min, 20/s, 50000/day (empty = off)")
    return value


# DRF counts requests in Django's cache: Redis, so that the web processes (finstream/serve.py) share one
# count per client instead of each allowing the whole rate (finstream/throttling.py).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                      "KEY_PREFIX": "finstream:cache",
                      "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}}}
API_THROTTLE_ANON = _throttle_rate("API_THROTTLE_ANON")
API_THROTTLE_USER = _throttle_rate("API_THROTTLE_USER")
_throttles = {"anon": API_THROTTLE_ANON, "user": API_THROTTLE_USER}
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    f"finstream.throttling.{'Anon' if scope == 'anon' else 'User'}RateThrottle"
    for scope, rate in _throttles.items() if rate
]
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {scope: rate for scope, rate in _throttles.items() if rate}
# Pages of these origins (https://app.example.com) may call the API from a browser (CORS); none by default.
# Reads need no credentials, and writes send a token (Authorization), which CORS allows: cookies are not sent.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", "")
CORS_URLS_REGEX = r"^/api/v1/"
CORS_EXPOSE_HEADERS = ["Retry-After"]
# Reverse proxies in front of the web server (a load balancer: 1). With none, X-Forwarded-For is whatever a
# client wrote, and DRF's default would count each made-up value as a new client; with N, a client is the
# N-th entry from the right, the one the outermost proxy appended (finstream/serve.py then lets daphne
# read X-Forwarded-Proto; daphne's own client address, in its access log, is the leftmost entry).
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0, minimum=0, maximum=10)
REST_FRAMEWORK["NUM_PROXIES"] = TRUSTED_PROXIES
# Served over HTTPS (HTTPS_ONLY=1, as Terraform sets it with a certificate): the session and CSRF cookies
# are never sent over plain HTTP, and browsers are told to use HTTPS for a year (HSTS). Behind a proxy that
# ends TLS, its X-Forwarded-Proto says whether the client's request was HTTPS (trusted only behind one).
HTTPS_ONLY = env_bool("HTTPS_ONLY", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS_ONLY
SECURE_HSTS_SECONDS = 365 * 24 * 3600 if HTTPS_ONLY else 0
if TRUSTED_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

SPECTACULAR_SETTINGS = {
    "TITLE": "FinStream API",
    "DESCRIPTION": "Market data (symbols, quotes, trades, OHLCV candles, market summary) and alerts. "
                   "Prices, sizes and volumes are exact decimal strings. See docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc assets come from drf-spectacular-sidecar, served by
    # us: /api/docs/ works without the internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "finstream.openapi.add_common_responses"],
}

# Channel layer: "pubsub" (RedisPubSubChannelLayer, one PUBLISH per group
# message, fanned out in each web process) or "redis" (RedisChannelLayer, a
# copy per member channel in Redis). Chosen by measurement: bench/websocket_fanout.py.
CHANNEL_LAYER = env_str("CHANNEL_LAYER", "pubsub")
if CHANNEL_LAYER not in {"pubsub", "redis"}:
    raise ImproperlyConfigured(f"CHANNEL_LAYER={CHANNEL_LAYER!r}: use pubsub or redis")
if CHANNEL_LAYER == "pubsub":
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
# WebSocket limits (streaming/consumers.py).
WS_HEARTBEAT_SECONDS = env_float("WS_HEARTBEAT_SECONDS", 15.0, minimum=0.05)
WS_MAX_MESSAGE_BYTES = env_int("WS_MAX_MESSAGE_BYTES", 64 * 1024, minimum=256)
WS_MAX_SUBSCRIPTIONS = env_int("WS_MAX_SUBSCRIPTIONS", 200, minimum=1)
# /ws/stream: channels a connection may subscribe to a second on average (each subscribe reads their
# snapshots), twice as many (or WS_MAX_SUBSCRIPTIONS) at once; over it a request is refused with rate_limited.
WS_MAX_SUBSCRIBES_PER_SECOND = env_int("WS_MAX_SUBSCRIBES_PER_SECOND", 200, minimum=1)
# A client whose unsent backlog (bytes the server holds for it) passes this is
# dropped with close code 4008 instead of growing the server's memory.
WS_MAX_BACKLOG_BYTES = env_int("WS_MAX_BACKLOG_BYTES", 4 * 1024 * 1024, minimum=1024)
# The web process keeps the list of active symbols this long (0 = ask the
# database on every request), so that quotes and the market summary need Redis only.
# The hot reads (API_HOT_READS) answer only while the list is fresh: 0 sends them all to Django.
API_SYMBOLS_CACHE_SECONDS = env_float("API_SYMBOLS_CACHE_SECONDS", 5.0, minimum=0.0)
# Latest quotes, the market summary and candle pages in plain JSON are answered before
# Django's request stack (market/api/hot.py); off sends them through Django.
# Deployments with API throttling always go through Django.
API_HOT_READS = env_bool("API_HOT_READS", True)

"""visitsdash settings: every value comes from an environment variable with a laptop default.

The defaults run the whole product on one machine with no services: SQLite, django-q2's
ORM broker and the bundled demo Firehose. DATABASE_URL and REDIS_URL switch to PostgreSQL
and Redis. A nonsense value stops start-up with a message naming the variable.
"""

import os
import secrets
import zoneinfo
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # local state that is never committed: secret key, test database
VAR_DIR.mkdir(exist_ok=True)

from visits import __version__ as VERSION  # noqa: E402,F401 - shown in the User-Agent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    value = env_str(name, default)
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ImproperlyConfigured(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, not {value!r}"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has a malformed port: {value!r}") from None
    return value


def env_email(name: str, default: str) -> str:
    """One address, bare or with a display name ("visitsdash <alerts@example.com>")."""
    value = env_str(name, default)
    address = parseaddr(value)[1]
    try:
        validate_email(address)
    except ValidationError:
        raise ImproperlyConfigured(f"{name} must be an e-mail address, not {value!r}") from None
    return value


def env_emails(name: str) -> list[str]:
    """Comma-separated bare addresses; empty is an empty list."""
    raw = env_str(name, "")
    addresses = [part.strip() for part in raw.split(",") if part.strip()]
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise ImproperlyConfigured(
                f"{name} must be e-mail addresses separated by commas; {address!r} is not one"
            ) from None
    return addresses


def env_time_zone(name: str, default: str) -> str:
    value = env_str(name, default)
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ImproperlyConfigured(f"{name} must be a time zone name such as Europe/Paris, not {value!r}") from None
    return value


def secret_key_read(*, path: Path) -> str:
    """The key kept in `path`, made on first use, readable by its owner only: whoever can read
    it can forge a session for any user."""
    if not path.exists():
        # Written to a private temporary file and linked into place: a second process starting
        # at the same moment either reads the whole key or loses the race to link its own.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(50))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink()
    elif path.stat().st_mode & 0o077:
        try:
            path.chmod(0o600)  # made world-readable by an earlier version
        except OSError as exc:
            raise ImproperlyConfigured(f"{path} is readable by others and could not be made private: {exc}") from None
    return path.read_text().strip()


# --- Core -------------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    # A fixed key would let anyone forge sessions on a real install, and a random one per
    # process would break sessions and django-q2's signed tasks between processes, so a
    # laptop run keeps a generated key in a file (var/secret_key unless SECRET_KEY_FILE says).
    SECRET_KEY_FILE = BASE_DIR / (env_str("SECRET_KEY_FILE", "") or VAR_DIR / "secret_key")
    SECRET_KEY = secret_key_read(path=SECRET_KEY_FILE)
ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_q",
    "axes",
    "visits",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "visits.security.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as axes asks: it turns a lockout into the lockout page
]

ROOT_URLCONF = "visitsdash.urls"

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
            ]
        },
    }
]

WSGI_APPLICATION = "visitsdash.wsgi.application"

# --- HTTPS and the proxy in front -------------------------------------------------------

# The address people type, e.g. https://visits.example.com. Its origin is trusted for CSRF
# (a proxy's Host header need not match it) and its host is allowed; https turns on secure
# cookies, HSTS and the redirect to https.
SITE_URL = env_str("SITE_URL", "")
SITE_HTTPS = False
CSRF_TRUSTED_ORIGINS = []
if SITE_URL:
    SITE_URL = env_url("SITE_URL", "", schemes=("http", "https")).rstrip("/")
    _site = urlsplit(SITE_URL)
    if _site.path or _site.query or _site.fragment or _site.username is not None:
        raise ImproperlyConfigured(
            f"SITE_URL must be a scheme and a host only, such as https://visits.example.com, not {SITE_URL!r}"
        )
    SITE_HTTPS = _site.scheme == "https"
    _hostname = _site.hostname or ""  # env_url has checked there is one
    _host = f"[{_hostname}]" if ":" in _hostname else _hostname
    _default_port = 443 if SITE_HTTPS else 80
    # Browsers send the origin lower-case and without a default port; compare it that way.
    CSRF_TRUSTED_ORIGINS = [
        f"{_site.scheme}://{_host}" + (f":{_site.port}" if _site.port not in (None, _default_port) else "")
    ]
    if _host not in ALLOWED_HOSTS:
        ALLOWED_HOSTS.append(_host)

SESSION_COOKIE_SECURE = SITE_HTTPS
CSRF_COOKIE_SECURE = SITE_HTTPS
SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 31_536_000 if SITE_HTTPS else 0, minimum=0, maximum=63_072_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_SSL_REDIRECT = env_bool("HTTPS_REDIRECT", SITE_HTTPS)
# A load balancer's or container's health check talks plain HTTP to the app itself.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# Preloading is asked for a whole registered domain by its owner, not by one app on a
# subdomain; and HSTS for the subdomains of SITE_URL's host is HSTS_INCLUDE_SUBDOMAINS's
# choice. `check --deploy` warns about both whatever was chosen, so it is told they are chosen.
SILENCED_SYSTEM_CHECKS = ["security.W021"] + ([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"])

# Behind a TLS-terminating proxy (nginx, Caddy, a load balancer) that sets X-Forwarded-Proto,
# X-Forwarded-Host and X-Forwarded-For itself, overwriting what a client sent. Only then:
# a client that reaches the app directly could forge all three.
BEHIND_PROXY = env_bool("BEHIND_PROXY", False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True

# --- Sign-in throttling (django-axes) ---------------------------------------------------

# After LOGIN_FAILURE_LIMIT failures for one username, or from one address, sign-in (the
# site's and the admin's) is refused for LOGIN_LOCKOUT_MINUTES. axes uses one duration for
# both: failures count while the latest is less than LOGIN_LOCKOUT_MINUTES old, and a lock
# ends LOGIN_LOCKOUT_MINUTES after the failure that set it (refused tries do not extend it).
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1, maximum=1000)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=10_080)
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out attempt before the password is checked
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one reaching the limit locks
AXES_RESET_ON_SUCCESS = True  # for the signed-in username only (visits/security/throttle.py)
AXES_HANDLER = "visits.security.throttle.UsernameResetHandler"
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
# The client's address: REMOTE_ADDR, or behind the proxy the last X-Forwarded-For entry,
# the one the proxy wrote (earlier entries come from the client and prove nothing).
# django-ipware picks the last entry for a proxy count of 0 when not strict.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR") if BEHIND_PROXY else ("REMOTE_ADDR",)
AXES_IPWARE_PROXY_ORDER = "left-most"
AXES_IPWARE_PROXY_COUNT = 0 if BEHIND_PROXY else None
IPWARE_STRICT = False

# --- Database ---------------------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
# SQLite's page cache per connection, and how much of the file it reads through a memory map
# (straight from the operating system's cache, which every process shares) instead of copying
# each page in; 0 turns the map off. SQLite caps the map at its build's limit (2 GB usually).
# A connection lasts one request (CONN_MAX_AGE 0) and allocates its cache afresh: 8 MB (SQLite's
# own is 2) made the pages a little faster beside the map, 64 MB made sorting many rows slower
# (docs/PERFORMANCE.md, "SQLite settings").
SQLITE_CACHE_MB = env_int("SQLITE_CACHE_MB", 8, minimum=1, maximum=65_536)
SQLITE_MMAP_MB = env_int("SQLITE_MMAP_MB", 1024, minimum=0, maximum=65_536)


def database_settings(url: str, *, sqlite_cache_mb: int, sqlite_mmap_mb: int) -> dj_database_url.DBConfig:
    """DATABASES["default"] for `url` (tests/test_sqlite.py opens connections from it)."""
    try:
        db = dj_database_url.parse(url, conn_max_age=60)
    except Exception as exc:  # dj_database_url raises bare ValueError/KeyError on junk
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL ({exc}): {url!r}") from None
    if not db.get("ENGINE"):
        raise ImproperlyConfigured(f"DATABASE_URL has an unknown scheme: {url!r}")
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # Every connection runs the PRAGMAs of init_command as it opens: WAL lets the web server
        # read while the worker writes; synchronous=NORMAL syncs the WAL at checkpoints, not at
        # every commit (a power cut may lose the latest commits, never the database); the map
        # makes index probes cheaper (docs/PERFORMANCE.md, "SQLite settings"). The timeout rides
        # out short locks.
        db["CONN_MAX_AGE"] = 0
        db["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                f"PRAGMA cache_size=-{sqlite_cache_mb * 1024}; PRAGMA mmap_size={sqlite_mmap_mb * 1024 * 1024};"
            ),
        }
        # A file, not memory, so that tests can run `manage.py sync_visits` in a subprocess.
        db["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    return db


DATABASES = {"default": database_settings(DATABASE_URL, sqlite_cache_mb=SQLITE_CACHE_MB, sqlite_mmap_mb=SQLITE_MMAP_MB)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Background tasks (django-q2) -------------------------------------------------------

REDIS_URL = env_str("REDIS_URL", "")
Q_CLUSTER = {
    "name": "visitsdash",
    "workers": env_int("Q_WORKERS", 2, minimum=1, maximum=32),
    # A sync bounds itself to SELL_SYNC_MAX_SECONDS; the timeout is the hard stop, and
    # retry must stay above it or django-q2 hands the same task to a second worker.
    "timeout": 600,
    "retry": 720,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 500,
}
if REDIS_URL:
    env_url("REDIS_URL", REDIS_URL, schemes=("redis", "rediss", "unix"))
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Zendesk Sell Firehose --------------------------------------------------------------

SELL_API_URL = env_url("SELL_API_URL", "https://api.getbase.com", schemes=("http", "https")).rstrip("/")
# Empty: a read-only archive; the pages show what is held and nothing is synced (ingest/sync.py).
SELL_ACCESS_TOKEN = env_str("SELL_ACCESS_TOKEN", "")
SELL_START_POSITION = env_choice("SELL_START_POSITION", "tail", ("tail", "top"))
SELL_PAGE_LIMIT = env_int("SELL_PAGE_LIMIT", 100, minimum=1, maximum=100)
SELL_TIMEOUT = env_float("SELL_TIMEOUT", 30.0, minimum=0.1)
SELL_MAX_RETRIES = env_int("SELL_MAX_RETRIES", 8, minimum=0, maximum=100)
SELL_BACKOFF_BASE = env_float("SELL_BACKOFF_BASE", 1.0)
SELL_BACKOFF_CAP = env_float("SELL_BACKOFF_CAP", 60.0)
SELL_SYNC_MAX_SECONDS = env_int("SELL_SYNC_MAX_SECONDS", 240, minimum=1, maximum=540)
SELL_LOCK_SECONDS = env_int("SELL_LOCK_SECONDS", 120, minimum=10, maximum=3600)
SELL_SESSION_SECONDS = env_int("SELL_SESSION_SECONDS", 55, minimum=1, maximum=500)
SELL_IDLE_POLL_SECONDS = env_int("SELL_IDLE_POLL_SECONDS", 10, minimum=1, maximum=300)
# Restarts from tail after a 410 (an expired position) within one sync; one more expiry stops
# the sync with a recorded error rather than loop. At least 1: an expiry between syncs must restart.
SELL_EXPIRY_RESTARTS = env_int("SELL_EXPIRY_RESTARTS", 3, minimum=1, maximum=100)
# An event with a time outside these years is rejected (a broken item, not a visit).
SELL_TIME_MIN_YEAR = env_int("SELL_TIME_MIN_YEAR", 1990, minimum=1900, maximum=2200)
SELL_TIME_MAX_YEAR = env_int("SELL_TIME_MAX_YEAR", 2100, minimum=1900, maximum=2200)
if SELL_TIME_MIN_YEAR > SELL_TIME_MAX_YEAR:
    raise ImproperlyConfigured(
        f"SELL_TIME_MIN_YEAR ({SELL_TIME_MIN_YEAR}) must not be later than SELL_TIME_MAX_YEAR ({SELL_TIME_MAX_YEAR})"
    )

# --- Sell's Core API v2 (sell/core.py; the same SELL_API_URL and token) ---------------------

# Sell allows 10 requests a second per token, Firehose and Core API together; every client and
# process on this host takes turns (sell/limiter.py). 0 switches the limit off (tests, benchmarks).
SELL_RATE_LIMIT = env_float("SELL_RATE_LIMIT", 10.0)
# Teams (GET /v2/users) and outcome names (GET /v2/visit_outcomes) are refreshed at most this
# often by the worker's pulls (after a success or a failure); `sync_visits` refreshes every run.
SELL_CORE_REFRESH_SECONDS = env_int("SELL_CORE_REFRESH_SECONDS", 3600, minimum=60, maximum=86400 * 7)

# --- History backfill and reconciliation (ingest/backfill.py) -----------------------------

# A gap's time range is backfilled from this long before its start: a visit logged late was
# created in the gap (its event lost) but happened before it.
BACKFILL_GAP_MARGIN_HOURS = env_int("BACKFILL_GAP_MARGIN_HOURS", 48, minimum=0, maximum=24 * 60)
# The daily reconciliation compares this many days (today and the days before it) with the Core API.
BACKFILL_RECONCILE_DAYS = env_int("BACKFILL_RECONCILE_DAYS", 7, minimum=1, maximum=90)
# When it runs, an hour of the day in UTC (the schedule's first run; later runs follow daily).
BACKFILL_RECONCILE_HOUR = env_int("BACKFILL_RECONCILE_HOUR", 3, minimum=0, maximum=23)

# --- Health and alerts (ingest/health.py) ---------------------------------------------------

# ingestion_check (every ALERT_CHECK_MINUTES, or from cron) mails ALERT_EMAILS when no sync has
# succeeded for ALERT_STALE_HOURS (far inside the 72 hours after which Sell's events are gone),
# when Sell refuses the token, and when a gap is recorded; once per incident, once when it ends.
ALERT_EMAILS = env_emails("ALERT_EMAILS")
ALERT_STALE_HOURS = env_int("ALERT_STALE_HOURS", 6, minimum=1, maximum=71)
ALERT_CHECK_MINUTES = env_int("ALERT_CHECK_MINUTES", 5, minimum=1, maximum=60)

# Django's own e-mail settings. With no EMAIL_HOST, mails are printed by the process that sends
# them (the worker's log in bin/demo) instead of going to an SMTP server.
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)  # STARTTLS, usually on port 587
EMAIL_PORT = env_int("EMAIL_PORT", 587 if EMAIL_USE_TLS else 25, minimum=1, maximum=65_535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")  # kept as given: spaces may belong to it
EMAIL_TIMEOUT = 20  # seconds: a hung mail server must not hold the check (and the worker) for ever
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = env_email("DEFAULT_FROM_EMAIL", "visitsdash@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Teams, digests and the privacy of location data ------------------------------------------

# A rep's too-far rate rising by more than this many points week over week (at least 20 visits in
# each week) mails their manager once (visits/notify).
ALERT_RATE_POINTS = env_int("ALERT_RATE_POINTS", 15, minimum=1, maximum=100)
# Reps' coordinates are removed from visits older than this many days by a daily task and
# `retention_apply`; empty keeps them for ever. Statuses, distances, flags and reports stay.
_retention = env_str("COORDINATES_RETENTION_DAYS", "")
COORDINATES_RETENTION_DAYS: int | None = (
    env_int("COORDINATES_RETENTION_DAYS", 0, minimum=1, maximum=36_500) if _retention else None
)
# Access log entries older than this are purged daily.
ACCESS_LOG_DAYS = env_int("ACCESS_LOG_DAYS", 400, minimum=1, maximum=36_500)
# Shown in every page's footer and in every digest: the purpose and the retention, in a sentence or two.
PRIVACY_NOTICE = env_str(
    "PRIVACY_NOTICE",
    "Reps' visit positions are kept to check that field visits happened where they were logged; "
    "only a rep's own managers, directors and reviewers can see them"
    + (f", and positions are removed after {COORDINATES_RETENTION_DAYS} days." if COORDINATES_RETENTION_DAYS else "."),
)

# --- Geocoding (visits/geo/geocode.py) -------------------------------------------------------

# A Nominatim-compatible service (a self-hosted Nominatim, or https://nominatim.openstreetmap.org
# for small accounts); empty switches geocoding off and customers are located from their visits only.
GEOCODER_URL = env_str("GEOCODER_URL", "")
if GEOCODER_URL:
    GEOCODER_URL = env_url("GEOCODER_URL", GEOCODER_URL, schemes=("http", "https")).rstrip("/")
# Nominatim's usage policy asks for an identifying User-Agent (geopy refuses to send its default).
GEOCODER_USER_AGENT = env_str("GEOCODER_USER_AGENT", "") or f"visitsdash/{VERSION} (self-hosted)"
# Seconds between two requests from this process (1 s is the public Nominatim's policy).
GEOCODER_MIN_DELAY = env_float("GEOCODER_MIN_DELAY", 1.0)
GEOCODER_TIMEOUT = env_float("GEOCODER_TIMEOUT", 10.0, minimum=0.1)

# --- Archive (archive_export / archive_import) --------------------------------------------

# (Archive settings go here.)

# --- Customers' locations and distances (geo/customers.py) --------------------------------

# A learned point whose verified visits lie a median of more than this from it is noisy: the
# geocoded point is used instead when there is one.
CUSTOMER_LEARNED_MAX_SPREAD_M = env_int("CUSTOMER_LEARNED_MAX_SPREAD_M", 1000, minimum=1, maximum=100_000)
# A visit further than this from its customer counts as "far" in the reports; a customer whose
# geocode and learned point are further apart than this is a suspect address.
DISTANCE_FAR_KM = env_float("DISTANCE_FAR_KM", 1.0, minimum=0.01)
# A customer whose "too far" visits come from at least this many different reps is a suspect
# address (/review/addresses/): the address in Sell is likely wrong, not the reps.
SUSPECT_ADDRESS_REPS = env_int("SUSPECT_ADDRESS_REPS", 2, minimum=1, maximum=1000)
CUSTOMERS_REFRESH_MINUTES = env_int("CUSTOMERS_REFRESH_MINUTES", 5, minimum=1, maximum=1440)

# --- Maps -------------------------------------------------------------------------------

# Tiles are the only thing a map loads from elsewhere, and only if this is set: empty draws the
# visits on a blank background. Point it at a tile server of your own on an intranet.
MAP_TILES_URL = env_str("MAP_TILES_URL", "https://tile.openstreetmap.org/{z}/{x}/{y}.png")
if MAP_TILES_URL:
    if not MAP_TILES_URL.startswith("/"):  # a path serves tiles from this same site
        env_url("MAP_TILES_URL", MAP_TILES_URL, schemes=("http", "https"))
    if not all(part in MAP_TILES_URL for part in ("{z}", "{x}", "{y}")):
        raise ImproperlyConfigured(f"MAP_TILES_URL must contain {{z}}, {{x}} and {{y}}: {MAP_TILES_URL!r}")
MAP_TILES_ATTRIBUTION = env_str(
    "MAP_TILES_ATTRIBUTION", '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
)
# From this zoom level, /map/points.json gives single visits in the box; below, /map/clusters.json clusters.
MAP_POINTS_ZOOM = env_int("MAP_POINTS_ZOOM", 13, minimum=0, maximum=22)

# --- Flags (visits/review/rules.py; the review page shows these) --------------------------------

FLAG_MAX_SPEED_KMH = env_float("FLAG_MAX_SPEED_KMH", 150.0, minimum=1.0)  # impossible travel above this
FLAG_REUSE_CUSTOMERS = env_int("FLAG_REUSE_CUSTOMERS", 3, minimum=2, maximum=1000)  # same spot, this many customers
FLAG_LATE_HOURS = env_float("FLAG_LATE_HOURS", 24.0, minimum=0.1)  # logged this long after the visit
FLAG_BURST_VISITS = env_int("FLAG_BURST_VISITS", 5, minimum=2, maximum=1000)  # this many visits...
FLAG_BURST_MINUTES = env_float("FLAG_BURST_MINUTES", 10.0, minimum=0.1)  # ...within this many minutes
FLAG_CUSTOMER_KM = env_float("FLAG_CUSTOMER_KM", 5.0, minimum=0.01)  # further than this from the customer

# --- Risk (visits/review/rules.py visit_risk; kept with the flags) ------------------------------
# A flagged visit's risk, 0-100: the weight of its weightiest flag, plus RISK_EXTRA_FLAG for each
# other flag, plus RISK_PER_REJECTED for each other live visit of the rep rejected before (at most
# RISK_REJECTED_MAX); never above 100. A change here takes effect as flags are recomputed:
# `manage.py flags_rebuild` recomputes every visit's.
RISK_WEIGHTS = {
    # Physically impossible, or a phone that sent no position: rarely innocent.
    "impossible_travel": env_int("RISK_IMPOSSIBLE_TRAVEL", 80, minimum=0, maximum=100),
    "coordinate_reuse": env_int("RISK_COORDINATE_REUSE", 75, minimum=0, maximum=100),
    "impossible_coordinates": env_int("RISK_IMPOSSIBLE_COORDINATES", 75, minimum=0, maximum=100),
    # Sell's bit: its radius is unknown, often GPS noise or a customer's big site.
    "resource_location_too_far": env_int("RISK_SELL_TOO_FAR", 35, minimum=0, maximum=100),
    # No position at all: a weak signal alone (indoors, an old phone).
    "location_unknown": env_int("RISK_LOCATION_UNKNOWN", 15, minimum=0, maximum=100),
    "location_services_disabled": env_int("RISK_SERVICES_DISABLED", 25, minimum=0, maximum=100),
    "late_logging": env_int("RISK_LATE_LOGGING", 25, minimum=0, maximum=100),
    "burst": env_int("RISK_BURST", 40, minimum=0, maximum=100),
}
# far_from_customer grows with the log of its km: RISK_FAR_MIN at FLAG_CUSTOMER_KM, RISK_FAR_MAX from
# RISK_FAR_FULL_KM on (the defaults: 35 at 5 km, 39 at 6 km, 61 at 15 km, 78 at 30 km, 90 from 50 km).
RISK_FAR_MIN = env_int("RISK_FAR_MIN", 35, minimum=0, maximum=100)
RISK_FAR_MAX = env_int("RISK_FAR_MAX", 90, minimum=0, maximum=100)
RISK_FAR_FULL_KM = env_float("RISK_FAR_FULL_KM", 50.0, minimum=0.01)
if RISK_FAR_FULL_KM <= FLAG_CUSTOMER_KM:
    raise ImproperlyConfigured(f"RISK_FAR_FULL_KM ({RISK_FAR_FULL_KM:g}) must be above FLAG_CUSTOMER_KM")
RISK_EXTRA_FLAG = env_int("RISK_EXTRA_FLAG", 10, minimum=0, maximum=100)  # for each flag after the weightiest
RISK_PER_REJECTED = env_int("RISK_PER_REJECTED", 5, minimum=0, maximum=100)  # each of the rep's rejected visits...
RISK_REJECTED_MAX = env_int("RISK_REJECTED_MAX", 20, minimum=0, maximum=100)  # ...adding at most this
# The tiers: high from RISK_HIGH_FROM, medium from RISK_MEDIUM_FROM, low below (the queue filters on them).
RISK_HIGH_FROM = env_int("RISK_HIGH_FROM", 70, minimum=1, maximum=100)
RISK_MEDIUM_FROM = env_int("RISK_MEDIUM_FROM", 40, minimum=1, maximum=100)
if RISK_MEDIUM_FROM > RISK_HIGH_FROM:
    raise ImproperlyConfigured(f"RISK_MEDIUM_FROM ({RISK_MEDIUM_FROM}) must not be above RISK_HIGH_FROM")

# --- Display ----------------------------------------------------------------------------

DISPLAY_TIME_ZONE = env_time_zone("DISPLAY_TIME_ZONE", "UTC")
LANGUAGE_CODE = "en-us"
TIME_ZONE = DISPLAY_TIME_ZONE
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"  # only for `collectstatic`; WhiteNoise also serves from the finders
STATIC_ROOT.mkdir(exist_ok=True)

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Everything goes to the console (the process manager keeps it): the app's own loggers, and
# Django's request errors with their tracebacks, which DEBUG off would otherwise drop.
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "visits": {"handlers": ["console"], "level": LOG_LEVEL},
        # propagate off: Django's own `django` logger prints these too when DEBUG is on.
        "django.request": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django.security": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "axes": {"handlers": ["console"], "level": "WARNING", "propagate": False},  # failures and lockouts
    },
}

# Static files come from static/ and the apps through WhiteNoise, so runserver, gunicorn
# and the demo need no collectstatic step and no separate web server.
WHITENOISE_USE_FINDERS = True

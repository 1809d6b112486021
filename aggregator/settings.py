"""Scrapy settings for the aggregator project, and every project default in one place.

Each project setting is documented in the README ("Settings"). Override them in the usual Scrapy
ways: `-s NAME=VALUE`, environment variables that the settings read below, or a spider's
`custom_settings`.
"""

from __future__ import annotations

import os

BOT_NAME = "aggregator"

SPIDER_MODULES = ["aggregator.spiders"]
NEWSPIDER_MODULE = "aggregator.spiders"
COMMANDS_MODULE = "aggregator.commands"

# --- politeness and robustness -------------------------------------------------------------
USER_AGENT = "aggregator/0.1 (+https://github.com/aggregator/aggregator; repost bot)"
ROBOTSTXT_OBEY = False  # the listing endpoints are JSON APIs, not pages a robots.txt governs
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 8
DOWNLOAD_TIMEOUT = 30
DOWNLOAD_MAXSIZE = 16 * 1024 * 1024
DOWNLOAD_WARNSIZE = 4 * 1024 * 1024
RETRY_ENABLED = True
RETRY_TIMES = 3
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 4.0
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
LOG_LEVEL = "INFO"
LOGSTATS_INTERVAL = 60.0
FEED_EXPORT_ENCODING = "utf-8"
# Items of one callback's output processed at once. Scrapy starts this many asyncio tasks for
# every response, whatever it yields; our article callbacks yield one item each, so the default
# (100) spent CPU on 99 idle tasks per article. Items of different responses still overlap.
CONCURRENT_ITEMS = 1

# --- the pipeline --------------------------------------------------------------------------
ITEM_PIPELINES = {
    "aggregator.pipelines.validate.ValidatePipeline": 100,
    "aggregator.pipelines.normalize.NormalizeHtmlPipeline": 200,
    "aggregator.pipelines.neardup.NearDuplicatePipeline": 300,
    "aggregator.pipelines.images.ImageMirrorPipeline": 350,  # off unless IMAGES_MIRROR_URI
    "aggregator.pipelines.write.WritePipeline": 400,
}
# "Already published?" is decided here, once, for every request and item that names an article
# (after Scrapy's offsite and depth filters, 500 and 900, have had their say).
SPIDER_MIDDLEWARES = {
    "aggregator.state.claims.ClaimMiddleware": 100,
}

# --- near-duplicates (pipelines/neardup.py, aggregator/neardup/; README "Near-duplicates") ----
# skip: a near-duplicate of an article published within NEAR_DUPLICATE_DAYS is not published
# (counted aggregator/articles/near_duplicate, marked published so it is not fetched again);
# log: it is published but counted and logged; off: no check. The index lives with the crawl
# state (DEDUPE_URI).
NEAR_DUPLICATES = "skip"
NEAR_DUPLICATE_DAYS = 30
# Estimated Jaccard similarity of the 7-character shingles of the folded texts.
NEAR_DUPLICATE_THRESHOLD = 0.55
# Texts with fewer letters and digits than this (after folding) are neither checked nor indexed.
NEAR_DUPLICATE_MIN_CHARS = 200
# A claim (added before the write) that was neither confirmed nor released stops counting after.
NEAR_DUPLICATE_CLAIM_TTL = 3600
# Signature length, LSH bands x rows (at most NEAR_DUPLICATE_HASHES values), shingle length.
# An index refuses signatures made with other values than it was built with.
NEAR_DUPLICATE_HASHES = 128
NEAR_DUPLICATE_BANDS = 10
NEAR_DUPLICATE_ROWS = 3
NEAR_DUPLICATE_SHINGLE_CHARS = 7

# --- 趣头条 ---------------------------------------------------------------------------------
QUTOUTIAO_API_BASE = "http://api.1sapp.com"

# --- images --------------------------------------------------------------------------------
# Prefix (or template with {url} / {url_quoted}) put in front of every http(s) image address.
IMAGE_PROXY = "https://cors.zfour.workers.dev/?"
# When non-empty, only images on these hosts are proxied.
IMAGE_PROXY_HOSTS: list[str] = []

# --- image mirroring (pipelines/images.py; README "Image mirroring") -------------------------
# Where images are stored: a directory, file:// or s3://bucket/prefix. None: no mirroring.
IMAGES_MIRROR_URI: str | None = None
# Where the blog serves IMAGES_MIRROR_URI: https://img.example.com/ or /images/.
IMAGES_MIRROR_BASE_URL: str | None = None
# Days after which a stored image is downloaded again for a new article (0: never).
IMAGES_MIRROR_EXPIRES = 0
# Larger images are not mirrored (their download is cancelled).
IMAGES_MIRROR_MAXSIZE = 10 * 1024 * 1024
# host (and subdomains; "*" for the rest) -> "article" (the default), "none" or a fixed URL
IMAGES_MIRROR_REFERER: dict[str, str] = {}
# True: an article with an image that could not be mirrored is kept pending, not published.
IMAGES_MIRROR_REQUIRED = False
# Cache-Control of S3 image objects (a stored image never changes).
IMAGES_MIRROR_CACHE_CONTROL = "public, max-age=31536000, immutable"

# --- state: published and pending articles, records, locks --------------------------------
STATE_DIR = os.environ.get("AGGREGATOR_STATE_DIR", ".state")
# The crawl-state store. None means sqlite:///<STATE_DIR>/dedupe.sqlite3
DEDUPE_URI: str | None = None
# scheme -> store class; add yours to DEDUPE_STORES (DEDUPE_STORES_BASE stays as it is)
DEDUPE_STORES: dict[str, str] = {}
DEDUPE_STORES_BASE = {
    "sqlite": "aggregator.state.sqlite.SqliteCrawlState",
    "redis": "aggregator.state.redis.RedisCrawlState",
    "rediss": "aggregator.state.redis.RedisCrawlState",
}
# Seconds a crawl's claim on an article holds without being published or released: after a
# killed crawl, its articles are free for the next one after this long.
STATE_CLAIM_LEASE = 900.0
# Who holds this crawl's claims; None: a new id per crawl. A cluster worker sets its worker id.
STATE_CLAIM_OWNER: str | None = None
# Query parameters that never identify an article (dropped when a URL is the article key).
TRACKING_QUERY_PARAMS = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "utm_id",
    "spm",
    "from",
    "share_from",
    "share_token",
    "share_source",
    "isappinstalled",
    "scene",
    "fbclid",
    "gclid",
    "mc_cid",
    "mc_eid",
]

# --- output --------------------------------------------------------------------------------
# A directory (plain path or file://) or s3://bucket/prefix.
OUTPUT_URI = "output"
POST_STORAGES = {
    "": "aggregator.storage.files.FilePostStorage",
    "file": "aggregator.storage.files.FilePostStorage",
    "s3": "aggregator.storage.s3.storage.S3PostStorage",
}

# The blog's time zone (Hexo's `timezone`), an IANA name such as "Asia/Shanghai": posts' dates
# are then written as wall time there, which is how Hexo reads them. None: GMT (RFC 1123), the
# reference format, right only for a blog built with the same zone as the site's.
POST_TIMEZONE: str | None = None

LOG_FORMATTER = "aggregator.ops.logformatter.ArticleLogFormatter"
# Write posts with fsync before the rename (durable across power loss).
OUTPUT_FSYNC = True
# Group commit of file posts (pipelines/write.py): posts that arrive within OUTPUT_BATCH_DELAY
# seconds of the first waiting one, up to OUTPUT_BATCH_SIZE, are written in one hand-off to the
# writer thread (one directory fsync) and marked published in one state transaction.
OUTPUT_BATCH_SIZE = 100
OUTPUT_BATCH_DELAY = 0.1
# How a batch of posts is made durable: one "syncfs" of the filesystem for the whole batch
# (Linux 5.8+, else fsync), or "fsync" each post (several threads at once); README, Output.
OUTPUT_SYNC = "syncfs"

# --- monitoring ----------------------------------------------------------------------------
# When set, the crawl's final stats are written there as JSON.
STATS_FILE: str | None = None
EXTENSIONS = {
    "aggregator.ops.logredact.RedactAwsSecrets": 0,
    "aggregator.state.component.CrawlStateExtension": 100,
    "aggregator.state.pending.PendingRecorder": 110,
    "aggregator.ops.statsfile.StatsFile": 900,
    "aggregator.ops.gctune.GcTuning": 10,
}
# Freeze the start-up heap when the spider opens, so the garbage collector stops re-scanning it,
# and collect the young generation every 20,000 new objects instead of 700 (fewer collections,
# fewer short-lived objects promoted); aggregator/ops/gctune.py. None keeps Python's thresholds.
GC_FREEZE = True
GC_THRESHOLD: list[int] | None = [20_000, 10, 10]

# --- feeds (RSS / Atom / RSSHub) ------------------------------------------------------------
# Where `scrapy crawl feed -a route=/zaker/channel/13` is expanded. rsshub.app is public and
# rate-limited; point this at a self-hosted RSSHub for regular runs.
RSSHUB_BASE = "https://rsshub.app"

# --- S3 output (OUTPUT_URI=s3://bucket/prefix) ---------------------------------------------
# Credentials, endpoint and region: the boto3 chain (environment, profile, instance role) or
# Scrapy's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL,
# AWS_REGION_NAME, AWS_USE_SSL, AWS_VERIFY.
# Uploads in flight at once; worker threads and pooled connections are sized to it.
S3_MAX_UPLOADS = 8
# Attempts per request in botocore's "standard" retry mode (5xx, throttling, connection errors).
S3_MAX_ATTEMPTS = 5
# Retries of a PUT answered 409 ConditionalRequestConflict (a concurrent writer). Before retry n
# the upload waits a random 0..S3_CONFLICT_BACKOFF * 2**n seconds (capped at 5 s).
S3_CONFLICT_RETRIES = 5
S3_CONFLICT_BACKOFF = 0.2
# Connect and read timeout of each S3 request, in seconds.
S3_TIMEOUT = 30.0
# What sends each post's PutObject/HeadObject: "lean" (aggregator/storage/s3/objectcalls.py:
# kept-alive connections answered through httptools, SigV4, botocore's endpoint, credentials and
# retry policy; a fifth of boto3's CPU per upload) or "boto3". Behind an HTTP proxy for the
# endpoint boto3 is used anyway.
S3_CLIENT = "lean"

# --- scheduled runs: `scrapy crawlall` -------------------------------------------------------
# The sources file crawlall reads (TOML; see aggregator/data/sources.toml for every key). None:
# the AGGREGATOR_SOURCES environment variable, else the file shipped in the package. A value set
# here or with `-s SOURCES_FILE=path` wins over the environment variable.
SOURCES_FILE: str | None = None

# --- several machines: cluster mode (see README "Running on several machines") --------------
# redis://[[user]:password@]host:port/db (or rediss://): turns cluster mode on; the crawl state
# (DEDUPE_URI) defaults to the same Redis.
CLUSTER_URI: str | None = os.environ.get("AGGREGATOR_CLUSTER_URI") or None
# Every Redis key of the cluster and of the Redis state store starts with this.
CLUSTER_PREFIX = "aggregator"
# Seconds a worker holds a request it took from the queue (renewed while it lives): a dead
# worker's requests go back to the queue after this.
CLUSTER_LEASE = 60.0
# Requests per second per domain across all workers (0: no limit).
CLUSTER_DOMAIN_RATE = 4.0
# How long a Redis outage is waited out by a state call before it fails.
CLUSTER_RETRY_MAX_WAIT = 300.0
# Seconds a Redis command may take before it counts as an outage.
CLUSTER_REDIS_TIMEOUT = 10.0
# A worker's id (its claims and leases are in its name); None: host-pid-random. Give a worker
# that is restarted by systemd a stable one (`-s CLUSTER_WORKER_ID=web1-a`).
CLUSTER_WORKER_ID: str | None = None

"""Near-duplicate detection: one post per story when several sources repost it.

`fingerprint` turns an article body into a MinHash signature; `index` keeps the signatures of
recently published articles with the crawl state (SQLite or Redis) and answers "is this a
near-duplicate of one of them? if not, remember it" atomically. The item pipeline that uses
both is `aggregator.pipelines.neardup`.
"""

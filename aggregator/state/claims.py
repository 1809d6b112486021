"""The one place that decides "already published?", the way scrapy-deltafetch does: a spider
middleware that sees every request and item a spider makes and lets an article through only if
this crawl holds its claim in the crawl state.

- A request for an article carries `meta["article_key"]`; an `Article` item carries its `key`.
- Everything one callback (or the start) yields is claimed in one batch, with the state's atomic
  check-and-claim: what is published, or claimed by another crawl (another process, another
  worker), is dropped and counted as `aggregator/articles/duplicate`. Two crawls can never both
  fetch, let alone publish, one article.
- The item made from an article's own response carries the claim its request won (the request's
  `meta["article_claimed"]`: the owner that holds it), so it is not claimed again. In a cluster
  the request may be served by another worker than the one whose listing claimed it: the owner
  travels with it, so a failure there releases the right claim.
- A request done again because the worker that had it died (`meta["article_recheck"]`, set by
  the cluster queue) keeps its claim, but its article may have been published meanwhile: its
  item is checked against what is published and dropped as a duplicate if it is.
- A listing's next page (`meta["listing_next_page"]`) is followed only while the listing still
  shows something new: when every article on a page is already published, the crawl stops there.
- An article may name keys it was published under before its key scheme changed (a request's
  `meta["article_aliases"]`, an item's `aliases`): if one of them is published, so is it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter, is_item
from scrapy import Request

from aggregator import stats as keys
from aggregator.state.component import crawl_state

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response

__all__ = ["ClaimMiddleware", "article_key_of", "claim_owner_of"]

logger = logging.getLogger(__name__)

ARTICLE_KEY = "article_key"
ALIASES = "article_aliases"
CLAIMED = "article_claimed"
NEXT_PAGE = "listing_next_page"
RECHECK = "article_recheck"


def aliases_of(element: Any) -> list[str]:
    """The older keys a request or item names for its article."""
    if isinstance(element, Request):
        aliases = element.meta.get(ALIASES)
    elif is_item(element):
        aliases = ItemAdapter(element).get("aliases")
    else:
        return []
    return [a for a in aliases or () if isinstance(a, str)]


def article_key_of(element: Any) -> str | None:
    """The article key a request or item stands for, if any."""
    if isinstance(element, Request):
        return element.meta.get(ARTICLE_KEY)
    if is_item(element):
        adapter = ItemAdapter(element)
        key = adapter.get("key")
        return key if isinstance(key, str) and key else None
    return None


class ClaimMiddleware:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ClaimMiddleware:
        return cls(crawler)

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        batch = [element async for element in start]
        for element in await self._claimed(batch, None):
            yield element

    async def process_spider_output(
        self, response: Response, result: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        batch = [element async for element in result]
        for element in await self._claimed(batch, response):
            yield element

    async def _claimed(self, batch: list[Any], response: Response | None) -> list[Any]:
        inherited = _inherited_claim(response)
        if inherited is not None and response.request.meta.get(RECHECK):
            batch = await self._unless_published(batch, inherited)
        wanted = [
            key
            for key in (article_key_of(element) for element in batch)
            if key is not None and key != inherited
        ]
        if not wanted:
            return batch
        component = crawl_state(self.crawler)
        state = await component.open()
        held = await state.published.claim(
            await self._not_published_before(batch, wanted, state),
            component.owner,
            component.lease,
        )
        kept: list[Any] = []
        articles = new = 0
        for element in batch:
            key = article_key_of(element)
            if key is None or key == inherited:
                kept.append(element)
                continue
            articles += 1
            if key in held:
                held.discard(key)  # a second request or item for it in this batch is a repeat
                new += 1
                if isinstance(element, Request):
                    element.meta[CLAIMED] = component.owner
                kept.append(element)
            else:
                self.stats.inc_value(keys.ARTICLES_DUPLICATE)
        if articles and not new:
            kept = await self._stop_if_all_published(kept, wanted, state)
        return kept

    async def _unless_published(self, batch: list[Any], key: str) -> list[Any]:
        """The batch without the items for `key` if it is published."""
        if not any(article_key_of(e) == key and not isinstance(e, Request) for e in batch):
            return batch
        state = await crawl_state(self.crawler).open()
        if not await state.published.published_among([key]):
            return batch
        kept = []
        for element in batch:
            if article_key_of(element) == key and not isinstance(element, Request):
                self.stats.inc_value(keys.ARTICLES_DUPLICATE)
            else:
                kept.append(element)
        return kept

    async def _not_published_before(self, batch: list[Any], wanted: list[str], state: Any) -> list:
        """`wanted` less the articles published under one of their aliases."""
        aliases = {article_key_of(e): aliases_of(e) for e in batch}
        names = sorted({a for key in wanted for a in aliases.get(key, ())})
        if not names:
            return wanted
        old = await state.published.published_among(names)
        return [key for key in wanted if not old.intersection(aliases.get(key, ()))]

    async def _stop_if_all_published(self, kept: list[Any], wanted: list[str], state: Any) -> list:
        """Drop the listing's next page when every article on this one is published (not
        merely claimed by a crawl running beside this one)."""
        follow = [e for e in kept if isinstance(e, Request) and e.meta.get(NEXT_PAGE)]
        if not follow:
            return kept
        published = await state.published.published_among(wanted)
        if not set(wanted) <= published:
            return kept
        for request in follow:
            logger.info(
                "Every article on the listing before %s is published: stopping", request.url
            )
        return [e for e in kept if e not in follow]


def claim_owner_of(request: Any) -> str | None:
    """The owner of the claim an article's request won (None: not claimed through it)."""
    owner = getattr(request, "meta", {}).get(CLAIMED)
    return owner if isinstance(owner, str) and owner else None


def _inherited_claim(response: Response | None) -> str | None:
    """The key whose claim this response's request won (its items need no claim of their own)."""
    request = getattr(response, "request", None)
    if request is None:
        return None
    return request.meta.get(ARTICLE_KEY) if request.meta.get(CLAIMED) else None

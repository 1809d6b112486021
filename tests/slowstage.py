"""An item pipeline stage that takes a second (without blocking the reactor), for the cluster
test that a request's lease is held while its item is still in the pipeline. Imported by the
worker subprocess (tests/ on its PYTHONPATH)."""

from __future__ import annotations

import asyncio
from typing import Any


class SlowStage:
    async def process_item(self, item: Any) -> Any:
        await asyncio.sleep(1.0)
        return item

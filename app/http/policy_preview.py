"""POST /policy/preview: what a candidate policy would change, from the workers' own states (docs/HTTP_API.md).

`scope=worker` previews the partitions this worker owns (live states first, as lookups read them; copies, so
nothing it holds changes). `scope=cluster` (the default) asks every worker the assignment names for its own
partitions, this one included, and merges the answers; partitions no worker answered for make it a 503 naming
them. The computation runs in a thread, so the worker's event loop keeps serving while it runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from app.engine import decode_partition_state, decode_sku_state, encode_partition_state, encode_sku_state
from app.http.owner_state import current_partition_state, unavailable
from app.http.reservations import FORWARDED_HEADER
from app.http.security import read_json_body
from app.operations.candidate_policy import CandidatePolicyError, parse_candidate
from app.operations.preview import PolicyPreviewer, merge_preview_documents
from app.service.readiness import partition_unavailable_reason
from tables.store import PartitionStateStore

if TYPE_CHECKING:
    from faust.web import Request, Response

    from app.service.runtime import AvailabilityService

logger = logging.getLogger(__name__)

SCOPES = ("cluster", "worker")
MAX_LIMIT = 1000
ASK_TIMEOUT_SECONDS = 60.0


class InvalidPreviewRequest(ValueError):
    pass


def parse_preview_query(pairs) -> tuple[int, str]:
    """(limit, scope) of the query string; unknown or repeated parameters are refused."""
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name not in ("limit", "scope"):
            raise InvalidPreviewRequest(f"unknown query parameter {name!r} (limit, scope)")
        if name in seen:
            raise InvalidPreviewRequest(f"query parameter {name!r} given twice")
        seen[name] = value
    limit_text = seen.get("limit", "10")
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise InvalidPreviewRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit_text!r}")
    scope = seen.get("scope", "cluster")
    if scope not in SCOPES:
        raise InvalidPreviewRequest(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    return int(limit_text), scope


def partition_snapshot(service: AvailabilityService, partition: int) -> tuple[bytes | None, dict[str, bytes]]:
    """The encoded partition state and SKU states of one partition this worker owns, as lookups see them (the
    availability stage's live states first). Encoded, so the preview works on copies."""
    store = None if service.live_states is None else service.live_states.live_store(partition)
    if store is None:
        store = PartitionStateStore(partition, service.tables)  # reads the tables only
    table = service.tables.sku_state
    states: dict[str, bytes] = {}
    for sku in store.skus():
        found, state = store.cached_sku_state(sku)
        if found:
            if state is not None:
                states[sku] = encode_sku_state(state)
            continue
        value = table.get(sku.encode())
        if value is not None:
            states[sku] = value
    partition_state = current_partition_state(service, partition)
    return (None if partition_state is None else encode_partition_state(partition_state)), states


def register_policy_preview(service: AvailabilityService) -> None:
    """Bind POST /policy/preview to `service.app` (called by register_web)."""
    import aiohttp
    from faust.web import View

    app = service.app
    settings = service.settings
    changelog_topic = service.tables.sku_state.changelog_topic.get_topic_name()

    async def preview_here(candidate, limit: int) -> tuple[dict | None, str | None]:
        """(this worker's preview document, None) or (None, why it cannot answer)."""
        partitions = sorted(tp.partition for tp in app.tables.recovery.active_tps if tp.topic == changelog_topic)
        snapshots = {}
        for partition in partitions:
            reason = partition_unavailable_reason(app, changelog_topic, partition)
            if reason is not None:
                return None, reason
            snapshots[partition] = partition_snapshot(service, partition)
            await asyncio.sleep(0)  # a partition at a time: lookups keep being served

        def compute() -> dict:
            previewer = PolicyPreviewer(candidate, frozenset(settings.channels), settings.engine_limits, limit=limit)
            for partition, (stored, states) in snapshots.items():
                previewer.add_partition(
                    partition, None if stored is None else decode_partition_state(stored), states,
                    lambda sku, states=states: decode_sku_state(states[sku]))
            return previewer.result.to_json()

        return await asyncio.get_running_loop().run_in_executor(None, compute), None

    async def ask(url: str, request: Request, body: bytes, limit: int) -> dict:
        headers = {FORWARDED_HEADER: "1", "Content-Type": "application/json"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        target = f"{url.rstrip('/')}/policy/preview?scope=worker&limit={limit}"
        async with app.http_client.post(target, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT_SECONDS)) as answer:
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}")
            return await answer.json()

    @app.page("/policy/preview", name="policy_preview")
    class PolicyPreviewView(View):
        async def post(self, request: Request) -> Response:
            body = await read_json_body(request, settings.max_request_body_bytes)
            if not isinstance(body, bytes):
                return body  # refused: 415 or 413
            try:
                limit, scope = parse_preview_query(request.query.items())
                candidate = parse_candidate(body, settings.channels)
            except (InvalidPreviewRequest, CandidatePolicyError) as error:
                return self.json({"error": str(error)}, status=400)
            try:
                if scope == "worker" or FORWARDED_HEADER in request.headers:
                    document, reason = await preview_here(candidate, limit)
                    if document is None:
                        return unavailable(self, reason)
                    return self.json({**document, "scope": "worker"})
                return await self.cluster(request, body, candidate, limit)
            except Exception:
                logger.exception("policy preview failed")
                return self.json({"error": "internal error"}, status=500)

        async def cluster(self, request: Request, body: bytes, candidate, limit: int) -> Response:
            here = str(app.conf.canonical_url).rstrip("/")
            owners = app.router.table_metadata(service.tables.sku_state.name)
            documents, failures = [], []
            for url, topics in sorted(owners.items()):
                if not topics.get(changelog_topic):
                    continue
                try:
                    if url.rstrip("/") == here:
                        document, reason = await preview_here(candidate, limit)
                        if document is None:
                            raise RuntimeError(reason)
                    else:
                        document = await ask(url, request, body, limit)
                    documents.append(document)
                except Exception as error:  # noqa: BLE001 - reported as the partitions nobody covered
                    failures.append(f"{url}: {error}")
            merged = merge_preview_documents(documents, limit)
            missing = sorted(set(range(settings.partitions)) - set(merged["partitions"]))
            if missing:
                detail = f"; {'; '.join(failures)}" if failures else ""
                return unavailable(self, f"no worker answered for partitions {', '.join(map(str, missing))}{detail}")
            return self.json({**merged, "scope": "cluster"})


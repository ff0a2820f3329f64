"""HTTP routes of the live view: tag table pages, a page's live view, recent tag history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam

from tandem.api.auth import needs
from tandem.api.live import MAX_TREND_TAGS
from tandem.api.view import HubView, LiveViewRequest, TagPage, TagQuery, TagSeries
from tandem.security.roles import Access

SUBSCRIPTION_ID_MAX = 64


def live_router(view: HubView) -> APIRouter:
    """Routes reading `view.live` on the event loop (async handlers, as in the app).

    All of them are for viewers: the PUT changes nothing but what one page is sent (it still
    carries the CSRF token of a dashboard session, as every non-GET does).
    """
    router = APIRouter()
    viewer = [needs(Access.VIEWER)]

    @router.get("/tags/page", response_model=TagPage, dependencies=viewer)
    async def tag_page(query: Annotated[TagQuery, Query()]) -> TagPage:
        """One window of the filtered, naturally sorted tag table."""
        return view.live.page(query)

    @router.put("/live/{subscription}", response_model=TagPage, dependencies=viewer)
    async def set_live_view(
        subscription: Annotated[str, PathParam(max_length=SUBSCRIPTION_ID_MAX)],
        request: LiveViewRequest,
    ) -> TagPage:
        """What the page behind one event stream shows; its rows' changes follow on the stream."""
        page = view.live.set_view(subscription, request)
        if page is None:
            raise HTTPException(404, "no such live subscription (its event stream has ended)")
        return page

    @router.get("/tags/history", response_model=list[TagSeries], dependencies=viewer)
    async def tag_history(
        key: Annotated[list[str], Query(max_length=MAX_TREND_TAGS)],
        since_ms: Annotated[int, Query(ge=0)] = 0,
    ) -> list[TagSeries]:
        """The node's recent buffer of up to MAX_TREND_TAGS tags ("device/group/tag")."""
        return view.live.history_of(key, since_ms)

    return router

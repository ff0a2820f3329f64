"""Subscription mode of an OPC UA group: the server reports changes, each slot takes the latest.

Fewer requests than a Read per slot, but not slot-exact: a change between two notifications
is seen a slot late, and the two nodes of a pair may place a change in different slots (each
session has its own sampling). Use it for slow-changing values, not for exact failover.
"""

from __future__ import annotations

import logging
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.status_codes import StatusCodes

from tandem.config.hub import OpcUaGroupConfig, OpcUaTagConfig
from tandem.hub.model import Value
from tandem.hub.opcua_values import check_value, status_error

log = logging.getLogger(__name__)


class GroupSubscription:
    """One subscription per group; `latest()` is what the next slot's Sample carries."""

    def __init__(self, group: OpcUaGroupConfig, accept_uncertain: bool) -> None:
        self.group = group
        self.accept_uncertain = accept_uncertain
        # Until the first notification, a tag waits for its initial value (Part 4, 7.39).
        self._values: dict[str, Value] = {}
        self._errors: dict[str, int] = {
            t.name: StatusCodes.BadWaitingForInitialData for t in group.tags
        }
        self._by_node: dict[ua.NodeId, OpcUaTagConfig] = {}
        self.notifications = 0
        self.dropped = 0

    async def start(self, client: Client, node_ids: list[ua.NodeId | None]) -> None:
        """Create the subscription and one monitored item per resolvable tag."""
        interval_ms = self.group.interval * 1000
        subscription = await client.create_subscription(interval_ms, self)
        wanted = [(t, n) for t, n in zip(self.group.tags, node_ids, strict=True) if n is not None]
        for tag, node in zip(self.group.tags, node_ids, strict=True):
            if node is None:
                self._fail(tag.name, StatusCodes.BadNodeIdUnknown)
        if not wanted:
            return
        nodes = [client.get_node(n) for _, n in wanted]
        handles = await subscription.subscribe_data_change(
            nodes, sampling_interval=ua.Double(interval_ms)
        )
        results = handles if isinstance(handles, list) else [handles]
        for (tag, node), handle in zip(wanted, results, strict=False):
            if isinstance(handle, ua.StatusCode):
                self._fail(tag.name, status_error(handle.value))
            else:
                self._by_node[node] = tag

    def _fail(self, name: str, code: int) -> None:
        self._values.pop(name, None)
        self._errors[name] = code

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        """asyncua's handler callback: check the reported DataValue like a Read result."""
        tag = self._by_node.get(node.nodeid)
        data_value = getattr(getattr(data, "monitored_item", None), "Value", None)
        if tag is None or data_value is None:
            self.dropped += 1
            return
        self.notifications += 1
        checked = check_value(
            tag.type, data_value, max_length=tag.max_length, accept_uncertain=self.accept_uncertain
        )
        if checked.error is None and checked.value is not None:
            self._errors.pop(tag.name, None)
            self._values[tag.name] = checked.value
        else:
            self._fail(tag.name, checked.error or StatusCodes.Bad)

    def status_change_notification(self, status: Any) -> None:
        log.warning("subscription of group %s: status %s", self.group.name, status)

    def latest(self) -> tuple[dict[str, Value], dict[str, int]]:
        return dict(self._values), dict(self._errors)

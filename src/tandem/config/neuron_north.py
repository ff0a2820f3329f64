"""Neuron's MQTT app -> the ``mqtt`` section; its subscriptions -> which groups are imported.

Tandem has one broker and one topic template and publishes every group it polls; Neuron
publishes a group only to the apps that subscribe to it, each subscription with its own
topic. So the subscribed groups are the ones imported, and the topic template is the one
that reproduces the subscriptions' topics (warnings name any it cannot).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.config.hub import MqttConfig
from tandem.config.migrate import Note
from tandem.config.neuron_export import App, Export, Printable, Problem, Reason, Subscription

MQTT_PLUGIN = "mqtt"
# plugins/mqtt/mqtt.json "format": what a payload looks like.
FORMATS = {0: "values-format", 1: "tags-format", 2: "ECP-format", 3: "custom", 4: "protobuf"}


class _MqttParams(BaseModel):
    """plugins/mqtt/mqtt.json; keys Tandem has no use for are ignored (and named in notes)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, populate_by_name=True)

    host: Printable = Field(min_length=1, max_length=255)
    port: int = Field(default=1883, ge=1, le=65535)
    qos: int = Field(default=0, ge=0, le=2)
    username: Printable = Field(default="", max_length=255)
    password: Printable = Field(default="", max_length=255)
    ssl: bool = False
    format: int = Field(default=0, ge=0, le=255)
    upload_topic: Printable | None = Field(default=None, alias="upload-topic", max_length=255)
    upload_err: bool = True
    offline_cache: bool = Field(default=False, alias="offline-cache")
    client_id: Printable | None = Field(default=None, alias="client-id", max_length=255)


@dataclass(slots=True)
class North:
    """What the apps decide: the mqtt section, and the groups that were published."""

    mqtt: dict[str, Any] | None = None
    password: str | None = None  # kept apart: it goes out only to a 0600 file
    # (driver, group) -> Neuron's topic for it; None: no subscriptions in the export
    published: dict[tuple[str, str], str] | None = None
    notes: list[Note] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def default_topic(app: str, sub: Subscription, params: _MqttParams | None) -> str:
    """plugins/mqtt/mqtt_handle.c: the subscription's topic, else /neuron/{app}/{driver}/{group}."""
    topic = sub.params.get("topic")
    if isinstance(topic, str) and topic:
        return topic
    if params is not None and params.upload_topic:  # Neuron 2.0-2.3: one topic per app
        return params.upload_topic
    return f"/neuron/{app}/{sub.driver}/{sub.group}"


def map_north(export: Export) -> North:
    north = North()
    mqtt_apps = [app for app in export.apps if app.plugin.lower() == MQTT_PLUGIN]
    for app in export.apps:
        if app.plugin.lower() != MQTT_PLUGIN:
            what = f"{len(app.subscriptions)} subscription(s)" if app.subscriptions else "no data"
            north.notes.append(
                Note(
                    "dropped",
                    f"node {app.name!r} (plugin {app.plugin or 'unknown'}, {what}): Tandem's "
                    "northbound is MQTT only",
                )
            )
    if len(mqtt_apps) > 1:
        names = ", ".join(repr(app.name) for app in mqtt_apps)
        north.problems.append(
            Problem(
                Reason.NORTH,
                mqtt_apps[1].origin,
                "",
                f"several MQTT apps ({names}): Tandem publishes to one broker; with "
                f"--skip-unsupported the first, {mqtt_apps[0].name!r}, is imported",
            )
        )
    if not mqtt_apps:
        north.published = {} if export.has_subscriptions else None
        if export.has_subscriptions:
            north.notes.append(
                Note("warning", "no MQTT app: no group was published, so none is imported")
            )
        return north
    _map_app(mqtt_apps[0], north)
    return north


def _map_app(app: App, north: North) -> None:
    try:
        params = _MqttParams.model_validate(app.params)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = ".".join(str(part) for part in err["loc"])
            message = "required field is missing" if err["type"] == "missing" else err["msg"]
            north.problems.append(Problem(Reason.FIELD, app.origin, f"params.{loc}", message))
        params = None
    published: dict[tuple[str, str], str] = {}
    for sub in app.subscriptions:
        if sub.static_tags:
            north.problems.append(
                Problem(
                    Reason.STATIC,
                    sub.origin,
                    "static_tags",
                    f"static tags added to {sub.driver}/{sub.group}'s messages: no equivalent",
                )
            )
        published[(sub.driver, sub.group)] = default_topic(app.name, sub, params)
    north.published = published
    if params is not None:
        north.mqtt, north.password = _mqtt_section(app, params, north.notes)


def _mqtt_section(
    app: App, params: _MqttParams, notes: list[Note]
) -> tuple[dict[str, Any], str | None]:
    mqtt: dict[str, Any] = {"host": params.host, "port": params.port, "qos": params.qos}
    notes.append(
        Note(
            "mapped",
            f"MQTT app {app.name!r}: broker {params.host}:{params.port}, QoS {params.qos} -> "
            "mqtt.host, mqtt.port, mqtt.qos",
        )
    )
    if params.username:
        mqtt["username"] = params.username
        notes.append(Note("mapped", "username -> mqtt.username"))
    if params.ssl:
        mqtt["tls"] = {}
        notes.append(
            Note(
                "warning",
                "ssl -> mqtt.tls with the system's CAs: the export embeds its CA, certificate "
                "and key; save them as files and set mqtt.tls.ca_file/cert_file/key_file",
            )
        )
    if params.client_id:
        notes.append(
            Note(
                "dropped",
                f"client-id {params.client_id!r}: both nodes of a pair would present it and a "
                "broker keeps one connection per id; Tandem derives one from the node name",
            )
        )
    format_name = FORMATS.get(params.format, f"format {params.format}")
    if params.format != 0:
        notes.append(
            Note(
                "warning",
                f"upload format {format_name}: Tandem publishes Neuron's values-format "
                "(timestamp, node, group, values, errors) plus slot, seq, term and "
                "source_node; consumers of the old format must change",
            )
        )
    if not params.upload_err:
        notes.append(Note("warning", "upload_err off: Tandem always sends per-tag errors"))
    if params.offline_cache:
        notes.append(Note("replaced", "offline-cache -> the outbox, which always buffers on disk"))
    return mqtt, params.password or None


def topic_template(
    published: dict[tuple[str, str], str],
    names: dict[tuple[str, str], list[tuple[str, str]]],
    notes: list[Note],
) -> str | None:
    """The one template that gives each imported group the topic Neuron published it to.

    ``names`` maps a Neuron (driver, group) to the Tandem (device, group) names it became.
    Segments equal to the names become {node} and {group}; the commonest template wins and
    a warning names each group whose topic still changes.
    """
    votes: Counter[str] = Counter()
    for (driver, group), topic in published.items():
        if (driver, group) not in names:
            continue
        escaped = [s.replace("{", "{{").replace("}", "}}") for s in topic.split("/")]
        segments = ["{node}" if s == driver else "{group}" if s == group else s for s in escaped]
        votes["/".join(segments)] += 1
    if not votes:
        return None
    template = votes.most_common(1)[0][0]
    try:
        MqttConfig(host="x", topic=template)
    except ValidationError:
        notes.append(Note("warning", f"topic {template!r} cannot be a publish topic"))
        return None
    for (driver, group), topic in sorted(published.items()):
        for device, tandem_group in names.get((driver, group), []):
            rendered = template.format(node=device, group=tandem_group, source_node="<node>")
            if rendered != topic:
                notes.append(
                    Note(
                        "warning",
                        f"node {driver!r} group {group!r} was published to {topic!r}; "
                        f"Tandem publishes it to {rendered!r}",
                    )
                )
    notes.append(Note("mapped", f"subscription topics -> mqtt.topic {template!r}"))
    return template

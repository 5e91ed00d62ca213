"""The shape of the Onion's `status`, as the operator writes it and the router reads it.

The operator builds the status as plain data (its status.py); these models are its schema in
the CRD, and a unit test checks that what the operator builds fits them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from onion_contract.names import PHASES
from onion_contract.schema import list_map

Int64 = Annotated[int, Field(json_schema_extra={"format": "int64"})]


class _Model(BaseModel):
    # forbid: a key the operator writes but the schema lacks would be pruned by the API server.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class IdleStatus(_Model):
    policy: str | None = None
    gaps: tuple[float, ...] | None = None
    cold_starts: tuple[float, ...] | None = None
    keep_alive_seconds: float | None = None
    prewarm_from_seconds: float | None = None
    prewarm_until_seconds: float | None = None
    basis: str | None = None


class LayerStatus(_Model):
    name: str
    phase: str | None = Field(default=None, json_schema_extra={"enum": list(PHASES)})
    managed: bool | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    last_demand_time: datetime | None = None
    last_wake_seconds: float | None = None
    woken_at: datetime | None = None
    wake_count: int | None = None
    idle: IdleStatus | None = Field(
        default=None, description="What the layer's idle policy learned and decides from it."
    )
    endpoint: str | None = None
    message: str | None = None


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    observed_generation: Int64 | None = None
    last_transition_time: datetime | None = None


class OnionStatus(_Model):
    observed_generation: Int64 | None = None
    layer_count: int | None = None
    awake_layers: int | None = None
    ready_layers: int | None = None
    layers: tuple[LayerStatus, ...] | None = Field(default=None, json_schema_extra=list_map("name"))
    conditions: tuple[Condition, ...] | None = Field(
        default=None, json_schema_extra=list_map("type")
    )

"""The warehouse tables: decisions, outside_decisions, events, attributions, experience, experiment_arms, users.

Every table has an id column that is also the insert id (BigQuery ``insertId``, DuckDB
primary key), so a row written twice — a retried batch, a redelivered event — is stored
once. Types use BigQuery names; DuckDB maps them (``STRING``→``VARCHAR``, ``INT64``→``BIGINT``,
``FLOAT64``→``DOUBLE``, ``BOOL``→``BOOLEAN``, ``JSON``→``JSON``). Times are event times in ms
since the epoch, money is integer micros. JSON columns take any JSON-serialisable value and
are stored as JSON text.

:meth:`TableSchema.validate` checks a row before it is buffered and returns it normalised
(JSON columns serialised, missing optional columns as None); a bad row raises
:class:`~agent_service.errors.DecodeError` naming ``<table>.<column>``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent_service.errors import DecodeError

__all__ = ["STREAM_TABLES", "DUCKDB_TYPES", "TABLES", "Column", "TableSchema"]

_TYPES = ("STRING", "INT64", "FLOAT64", "BOOL", "JSON")
DUCKDB_TYPES = {"STRING": "VARCHAR", "INT64": "BIGINT", "FLOAT64": "DOUBLE", "BOOL": "BOOLEAN", "JSON": "JSON"}
"""The DuckDB type of each column type."""


@dataclass(frozen=True)
class Column:
    """One column."""

    name: str
    """Column name."""
    type: str
    """BigQuery type: STRING, INT64, FLOAT64, BOOL or JSON."""
    required: bool = False
    """Whether a row must carry a non-null value."""
    description: str = ""
    """What the column holds (also sent as the BigQuery field description)."""

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.type!r}")


@dataclass(frozen=True)
class TableSchema:
    """A table: its columns and which one is the idempotency id."""

    name: str
    """Table name."""
    id_column: str
    """Column whose value is the insert id (unique per logical record)."""
    columns: tuple[Column, ...]
    """Columns in storage order."""
    description: str = ""
    """What one row is."""

    @property
    def column_names(self) -> tuple[str, ...]:
        """Names of the columns in order."""
        return tuple(c.name for c in self.columns)

    def validate(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row normalised for writing, or :class:`DecodeError` naming the bad column.

        :param row: column name → value; unknown columns are rejected.
        """
        known = self.column_names
        for key in row:
            if key not in known:
                raise DecodeError(f"{self.name}.{key}", f"unknown column; {self.name} has {', '.join(known)}")
        out: dict[str, Any] = {}
        for col in self.columns:
            value = row.get(col.name)
            field = f"{self.name}.{col.name}"
            if value is None:
                if col.required:
                    raise DecodeError(field, "is required")
                out[col.name] = None
                continue
            out[col.name] = _check(col.type, value, field)
        if not out[self.id_column]:
            raise DecodeError(f"{self.name}.{self.id_column}", "the id must be a non-empty string")
        return out


def _check(kind: str, value: Any, field: str) -> Any:
    if kind == "STRING":
        if not isinstance(value, str):
            raise DecodeError(field, f"expected a string, got {type(value).__name__}")
        return value
    if kind == "INT64":
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise DecodeError(field, f"expected a 64-bit integer, got {value!r}")
        return value
    if kind == "FLOAT64":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DecodeError(field, f"expected a finite number, got {value!r}")
        return float(value)
    if kind == "BOOL":
        if not isinstance(value, bool):
            raise DecodeError(field, f"expected true or false, got {value!r}")
        return value
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DecodeError(field, f"not JSON-serialisable: {exc}") from exc


def _t(name: str, id_column: str, description: str, *cols: Column) -> TableSchema:
    return TableSchema(name, id_column, cols, description)


C = Column
TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in (
        _t("decisions", "decision_id", "One decision per bid opportunity, with what the policy saw and did.",
           C("decision_id", "STRING", True, "Id of the decision (insert id)."),
           C("event_time", "INT64", True, "Event time of the bid request, ms since the epoch."),
           C("request_id", "STRING", False, "OpenRTB BidRequest.id."),
           C("person_id", "STRING", False, "Resolved person (u:... or d:...)."),
           C("device_id", "STRING", False, "Device of the request."),
           C("campaign", "STRING", False, "Campaign whose budget is spent."),
           C("channel", "STRING", False, "Channel chosen."),
           C("creative", "INT64", False, "Creative chosen."),
           C("segment", "INT64", False, "Target segment."),
           C("bid_micros", "INT64", False, "Bid sent (CPM, micros); 0 for a no-bid."),
           C("propensity", "FLOAT64", False, "Probability of the action under the logging policy."),
           C("model_version", "INT64", False, "Version of the weights that decided."),
           C("shadow", "BOOL", False, "Decided in shadow mode (never bid)."),
           C("state", "JSON", False, "State vector / features the policy saw."),
           C("action", "JSON", False, "Full action (bid multiplier, creative, channel, segment).")),
        _t("outside_decisions", "decision_id", "One decision of an outside bidder (contracts/outside.py).",
           C("decision_id", "STRING", True, "Id its auction results and ad events name (insert id)."),
           C("event_time", "INT64", True, "Event time of the bid request, ms since the epoch."),
           C("request_id", "STRING", True, "OpenRTB BidRequest.id (pairs it with GAELP's candidate)."),
           C("imp_id", "STRING", True, "OpenRTB Imp.id."),
           C("person_id", "STRING", False, "Pseudonymised user, or d:<device> when none is logged."),
           C("device_id", "STRING", False, "Pseudonymised device of the request."),
           C("bidder", "STRING", True, "The outside bidder's name."),
           C("bidder_version", "STRING", False, "Its version label."),
           C("bid_micros", "INT64", True, "Bid sent (CPM, micros); 0 for a no-bid."),
           C("channel", "STRING", False, "Channel, if it logs one."),
           C("creative", "INT64", False, "Creative, if it logs one."),
           C("propensity", "FLOAT64", False, "Logged probability of the bid (None: not logged; any value kept)."),
           C("features", "JSON", False, "Context features it decided from, if it shares them.")),
        _t("events", "event_id", "Auction results, impressions, clicks and conversions.",
           C("event_id", "STRING", True, "Id of the event (insert id)."),
           C("event_time", "INT64", True, "Event time, ms since the epoch."),
           C("kind", "STRING", True, "win, loss, impression, click or conversion."),
           C("decision_id", "STRING", False, "Decision the event belongs to (none for conversions)."),
           C("person_id", "STRING", False, "Resolved person."),
           C("device_id", "STRING", False, "Device that produced the event."),
           C("cost_micros", "INT64", False, "Price paid (wins and impressions), micros."),
           C("value_micros", "INT64", False, "Conversion value, micros."),
           C("payload", "JSON", False, "The rest of the event.")),
        _t("attributions", "attribution_id", "Credit of one conversion to one touch.",
           C("attribution_id", "STRING", True, "conversion_id:decision_id (insert id)."),
           C("event_time", "INT64", True, "Event time of the conversion, ms."),
           C("conversion_id", "STRING", True, "The conversion credited."),
           C("decision_id", "STRING", True, "The touch's decision."),
           C("person_id", "STRING", False, "Person of the journey."),
           C("channel", "STRING", False, "Channel of the touch."),
           C("model", "STRING", True, "Attribution model (last, markov, ...)."),
           C("fraction", "FLOAT64", True, "Share of the conversion, in [0, 1]."),
           C("credit_micros", "INT64", False, "Share of the conversion value, micros.")),
        _t("experience", "experience_id", "Rewarded experience for the learner (provisional, then final).",
           C("experience_id", "STRING", True, "decision_id:provisional or decision_id:final (insert id)."),
           C("event_time", "INT64", True, "Event time at which the reward was computed, ms."),
           C("decision_id", "STRING", True, "Decision rewarded."),
           C("model_version", "INT64", False, "Version of the weights that decided."),
           C("propensity", "FLOAT64", False, "Behaviour-policy probability of the action."),
           C("reward", "FLOAT64", True, "Total reward R."),
           C("r_immediate", "FLOAT64", False, "Immediate component (clicks)."),
           C("r_attribution", "FLOAT64", False, "Attributed conversion value."),
           C("r_delayed", "FLOAT64", False, "Expected pending conversion value (delay model)."),
           C("r_diversity", "FLOAT64", False, "Diversity bonus."),
           C("final", "BOOL", False, "True once the window closed or the conversion arrived."),
           C("state", "JSON", False, "State the decision saw."),
           C("action", "JSON", False, "Action taken."),
           C("next_state", "JSON", False, "Next state, when the learner needs one.")),
        # Sums, not per-person rows: an arm's totals are exact sums over its rows (RatioStats merge), so several
        # writers may each add their own batches. Money is in USD floats here: sums of squares of micros
        # overflow INT64 after a few million USD^2.
        _t("experiment_arms", "row_id", "One batch of a creative experiment arm's per-person sums.",
           C("row_id", "STRING", True, "experiment:arm:batch (insert id): a batch written twice counts once."),
           C("event_time", "INT64", True, "Event time the batch was closed, ms."),
           C("experiment", "STRING", True, "Experiment id."),
           C("arm", "STRING", True, "Arm name."),
           C("exposed", "INT64", True, "Persons first exposed to the arm in the batch."),
           C("persons", "INT64", True, "Exposed persons whose observation window closed in the batch."),
           C("converting", "INT64", True, "Of those, persons with conversion value > 0."),
           C("value", "FLOAT64", True, "Sum of the persons' conversion value, USD."),
           C("spend", "FLOAT64", True, "Sum of the persons' spend, USD."),
           C("value_sq", "FLOAT64", True, "Sum of squared per-person value."),
           C("spend_sq", "FLOAT64", True, "Sum of squared per-person spend."),
           C("value_spend", "FLOAT64", True, "Sum of per-person value times spend.")),
        # The user DB (``warehouse.users``): a snapshot is a set of rows, never an update, so inserts stay
        # append-only and idempotent; a restore reads one snapshot (the latest by default).
        _t("users", "row_id", "One person of a state-store snapshot: links, context profile and journey.",
           C("row_id", "STRING", True, "snapshot:person (insert id)."),
           C("event_time", "INT64", True, "When the snapshot was started, ms since the epoch."),
           C("snapshot", "STRING", True, "Snapshot id."),
           C("person_id", "STRING", True, "Pseudonymised person (u:... or d:<device>)."),
           C("device_count", "INT64", True, "Devices linked to the person (0: known by one unlinked device)."),
           C("devices", "JSON", True, "[[device, confidence], ...] of the linked devices."),
           C("contexts", "JSON", True, "[[context bucket, requests], ...]: the person's context profile."),
           C("activity_requests", "FLOAT64", True, "Recent requests, time-weighted (Activity.requests)."),
           C("activity_search", "FLOAT64", True, "Of those, the ones offering paid search (Activity.search)."),
           C("activity_at_ms", "INT64", True, "Time the activity is weighted as of, ms."),
           C("shares", "JSON", True, "[{device, contexts, requests, search, at_ms}, ...]: each device's share."),
           C("touches", "INT64", True, "Touches in the journey."),
           C("last_touch_ms", "INT64", False, "Event time of the latest touch, ms."),
           C("journey", "JSON", True, "Touches held (within the attribution window), oldest first."),
           C("clicks", "JSON", True, "Decision ids clicked.")),
    )
}
"""The tables by name."""

STREAM_TABLES = ("decisions", "events", "attributions", "experience")
"""The tables the warehouse sink fills from GAELP's own streams (it fills ``outside_decisions`` too when an
outside bidder logs; the others are written by commands: ``experiment_arms``, ``users``)."""

"""CloudWatch Logs on the local runtime: the log groups resources write to (training jobs, endpoints),
read with DescribeLogStreams / GetLogEvents / FilterLogEvents and CloudWatch's own paging tokens."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any

from airflow_sm_pytorch.local.protocol import ACCOUNT, ApiError, page_offset, page_token
from airflow_sm_pytorch.local.store import Store

_TOKEN = re.compile(r"([fb])/(\d{1,56})")


class CloudWatchLogs:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.ops: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
            "DescribeLogStreams": self.describe_log_streams, "GetLogEvents": self.get_log_events,
            "FilterLogEvents": self.filter_log_events,
        }

    def _check_group(self, params: dict[str, Any]) -> str:
        """The log group a request names (by name or ARN); it must be one a resource has logged to."""
        name, ident = params.get("logGroupName"), params.get("logGroupIdentifier")
        if name and ident:
            raise ApiError("InvalidParameterException",
                           "LogGroup name and LogGroup ARN are mutually exclusive parameters.")
        if ident:
            if ident.startswith("arn:") and ":log-group:" in ident:
                ident = ident.split(":log-group:", 1)[1]
            name = ident
            name = name[:-2] if name.endswith(":*") else name
        if not name:
            raise ApiError("InvalidParameterException", "Should provide either name or identifier")
        if name not in self.store.log_groups():
            raise ApiError("ResourceNotFoundException", "The specified log group does not exist.")
        return name

    def describe_log_streams(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        group = self._check_group(params)
        prefix, order = params.get("logStreamNamePrefix"), params.get("orderBy", "LogStreamName")
        if prefix and order == "LastEventTime":
            raise ApiError("InvalidParameterException",
                           "Cannot order by LastEventTime with a logStreamNamePrefix.")
        streams = self.store.log_streams(prefix, group)
        if order == "LastEventTime":
            streams.sort(key=lambda s: (s["last_event"] or s["creation_time"], s["name"]))
        if params.get("descending"):
            streams.reverse()
        offset = page_offset(params.get("nextToken"), "InvalidParameterException")
        size = params.get("limit", 50)
        page = streams[offset:offset + size]
        out: dict[str, Any] = {"logStreams": [
            {
                "logStreamName": s["name"],
                "creationTime": s["creation_time"],
                **({"firstEventTimestamp": s["first_event"]} if s["first_event"] is not None else {}),
                **({"lastEventTimestamp": s["last_event"]} if s["last_event"] is not None else {}),
                **({"lastIngestionTime": s["last_ingestion"]} if s["last_ingestion"] is not None else {}),
                "arn": f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{group}:log-stream:{s['name']}",
                "storedBytes": 0,  # deprecated by CloudWatch Logs, which reports 0 too
            }
            for s in page
        ]}
        if offset + size < len(streams):
            out["nextToken"] = page_token(offset + size)
        return out

    def get_log_events(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        """CloudWatch Logs paging: ``f/<id>`` reads events with id >= id onward, ``b/<id>`` those before.

        With no newer events the forward token handed back is the one passed in, so a tailer that
        keeps passing ``nextForwardToken`` sees every event exactly once.
        """
        group = self._check_group(params)
        stream = params["logStreamName"]
        if self.store.log_stream(stream, group) is None:
            raise ApiError("ResourceNotFoundException", "The specified log stream does not exist.")
        token = params.get("nextToken")
        if token:
            match = _TOKEN.fullmatch(token)
            if match is None:
                raise ApiError("InvalidParameterException", "The specified nextToken is invalid.")
            forward, position = match.group(1) == "f", int(match.group(2))
        else:
            forward, position = bool(params.get("startFromHead", False)), None
        window = {"start": params.get("startTime"), "end": params.get("endTime"),
                  "limit": params.get("limit", 10000)}
        if forward:
            events = self.store.log_events([stream], after=position or 0, **window)
        else:
            events = self.store.log_events([stream], before=position, newest=True, **window)
        if events:
            fwd, back = events[-1]["id"] + 1, events[0]["id"]
        else:  # nothing there: hand the same position back, in both directions
            fwd = back = position or 0
        return {
            "events": [{"timestamp": e["timestamp"], "message": e["message"], "ingestionTime": e["ingestion"]}
                       for e in events],
            "nextForwardToken": f"f/{fwd:056d}",
            "nextBackwardToken": f"b/{back:056d}",
        }

    def filter_log_events(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        group = self._check_group(params)
        names, prefix = params.get("logStreamNames"), params.get("logStreamNamePrefix")
        if names and prefix:
            raise ApiError("InvalidParameterException",
                           "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.")
        streams = [s["name"] for s in self.store.log_streams(prefix, group)]
        if names:
            streams = [s for s in streams if s in set(names)]
        match = _pattern(params.get("filterPattern") or "")
        limit = params.get("limit", 10000)
        after = page_offset(params.get("nextToken"), "InvalidParameterException")
        end = None if params.get("endTime") is None else params["endTime"] + 1  # inclusive here
        found: list[dict[str, Any]] = []
        more = False
        while len(found) < limit:
            batch = self.store.log_events(streams, after=after, start=params.get("startTime"),
                                          end=end, limit=5000)
            if not batch:
                break
            for event in batch:
                after = event["id"] + 1
                if match(event["message"]):
                    found.append(event)
                    if len(found) == limit:
                        more = bool(self.store.log_events(streams, after=after, limit=1))
                        break
        out: dict[str, Any] = {
            "events": [{"logStreamName": e["stream"], "timestamp": e["timestamp"], "message": e["message"],
                        "ingestionTime": e["ingestion"], "eventId": str(e["id"])} for e in found],
            "searchedLogStreams": [{"logStreamName": s, "searchedCompletely": not more} for s in streams],
        }
        if more:
            out["nextToken"] = page_token(after)
        return out


def _pattern(text: str) -> Callable[[str], bool]:
    """Plain CloudWatch term patterns: every term (or "quoted phrase") must occur, ``-term`` must not."""
    if text.strip()[:1] in ("{", "["):
        raise ApiError("InvalidParameterException", "The local runtime supports only term filter patterns "
                                                    "(words, \"phrases\", -exclusions).")
    try:
        terms = shlex.split(text)
    except ValueError:
        raise ApiError("InvalidParameterException", "Invalid character(s) in term") from None
    need = [t for t in terms if not t.startswith("-")]
    avoid = [t[1:] for t in terms if t.startswith("-") and len(t) > 1]
    return lambda message: all(t in message for t in need) and not any(t in message for t in avoid)

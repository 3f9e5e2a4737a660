"""The inference protocol with a model owner that stalls in its third query (tests only):
the serving test kills the owner meanwhile, in the middle of a query."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from protocols.api import Session
from protocols.inference import prediction

STALL_AT = 3  # the owner process's third query stalls
_seen: list[int] = []


def _query(session: Session, model: Any) -> tuple[dict[str, Any], int]:
    if session.provides("model") == [session.party]:
        _seen.append(1)
        if len(_seen) == STALL_AT:
            time.sleep(60)
    return prediction.query(session, model)


assert prediction.PROTOCOL.serving is not None
PROTOCOL = dataclasses.replace(
    prediction.PROTOCOL, name="stalling-inference",
    serving=dataclasses.replace(prediction.PROTOCOL.serving, query=_query))

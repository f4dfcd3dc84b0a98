"""Schemathesis hooks for the nomnom api (loaded through SCHEMATHESIS_HOOKS by tests/template/contract.rs).

The OpenAPI document describes an NDJSON body as an array of the lines' objects; this puts such
a value on the wire as NDJSON: one JSON text per line. A value that is not an array (a negative
case) goes as the one line it is.
"""

import json
import os

import schemathesis

# Where the batch check tallies the batches it judged (tests/template/contract.rs asserts it judged some).
TALLY = os.environ.get("NOMNOM_BATCH_TALLY")


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, list):
        text = "".join(json.dumps(item) + "\n" for item in value)
    else:
        text = json.dumps(value) + "\n"
    return text.encode("utf-8")


@schemathesis.check
def batch_refuses_violating_lines(ctx, response, case):
    """A batch is judged line by line: valid lines are stored, invalid ones refused inside the
    202 answer. So schemathesis' `negative_data_rejection` cannot judge a batch (tests/template/contract.rs
    runs batches without it); this check takes its place: a schema-violating array of messages
    is either rejected outright or answered with at least one refused line."""
    if not case.operation.path.startswith("/ingest/batch"):
        return None
    meta = case.meta
    if meta is None or not isinstance(case.body, list):
        return None
    body = next((info for location, info in meta.components.items() if str(location.value) == "body"), None)
    # Only a body generated to violate the schema (not a stray header or query parameter).
    if body is None or not body.mode.is_negative:
        return None
    if TALLY:
        with open(TALLY, "a", encoding="utf-8") as tally:
            tally.write(f"{response.status_code}\n")
    if response.status_code >= 300:
        return None
    answer = response.json()
    if answer.get("rejected", 0) < 1:
        raise AssertionError(
            f"a schema-violating batch was answered {response.status_code} with no line refused"
        )
    return None


# What the api may answer a request whose every part is schema-valid (schemathesis'
# `positive_data_acceptance`, which tests/template/contract.rs replaces with the check below).
ACCEPTED = {401, 403, 404, 409, 429}

# The one rule the JSON Schema cannot state: the derived rows of one message must not repeat
# their entity's unique key (e.g. two line items of an order with the same line_number).
REPEATED_KEY = "repeats the unique key"


def _reasons(answer):
    """Every field error of a 422 answer: a message's `details`, or a batch's lines' details."""
    details = list(answer.get("details") or [])
    for result in answer.get("results") or []:
        details.extend(result.get("details") or [])
    return [d.get("error", "") for d in details]


@schemathesis.check
def valid_messages_are_accepted(ctx, response, case):
    """schemathesis' `positive_data_acceptance`, knowing the rule above: a schema-valid request
    is answered 2xx/3xx/5xx or one of ACCEPTED, or 422 only because derived rows repeat a key."""
    meta = case.meta
    if meta is None or any(info.mode.is_negative for info in meta.components.values()):
        return None
    # The coverage phase also tries methods the operation does not have (405 is right there).
    if case.method.upper() != case.operation.method.upper():
        return None
    status = response.status_code
    if status < 400 or status >= 500 or status in ACCEPTED:
        return None
    if status == 422:
        reasons = _reasons(response.json())
        if reasons and all(REPEATED_KEY in r for r in reasons):
            return None
    raise AssertionError(f"a schema-valid request was answered {status}: {response.text[:500]}")

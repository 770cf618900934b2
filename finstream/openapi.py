"""What the OpenAPI schema says of every endpoint, beyond what each view declares
(drf-spectacular's POSTPROCESSING_HOOKS): the errors any request may get
(docs/api.md, "Errors"), with their headers, and that an empty query parameter
counts as absent."""

from __future__ import annotations

import copy

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                "schema": {"type": "integer", "minimum": 0}}}

# status: (description, headers)
_ANY_REQUEST: dict[str, tuple[str, dict]] = {
    "400": ("bad_request: a Host not in ALLOWED_HOSTS, or more than 1000 query parameters "
            "(an endpoint's own 400s are invalid_parameter and invalid_cursor).", {}),
    "401": ("authentication_failed: a wrong token, user name or password, on any endpoint.",
            {"WWW-Authenticate": {"description": "Token", "schema": {"type": "string"}}}),
    "405": ("method_not_allowed: a method the endpoint does not take.", {}),
    "406": ("not_acceptable: an Accept header naming neither JSON nor HTML.", {}),
    "429": ("throttled: over the configured rate (API_THROTTLE_ANON, API_THROTTLE_USER).", _RETRY_AFTER),
    "503": ("service_unavailable: Redis or PostgreSQL did not answer; /ready says which.", _RETRY_AFTER),
}


def add_common_responses(result, generator, request, public):
    for operations in result["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, (description, headers) in _ANY_REQUEST.items():
                if status not in responses:  # fresh objects: shared ones become YAML anchors
                    responses[status] = {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                        **({"headers": copy.deepcopy(headers)} if headers else {}),
                    }
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "query":
                    parameter["allowEmptyValue"] = True  # `?sort=` is no sort given (docs/api.md)
                    parameter["schema"].pop("minLength", None)
    return result

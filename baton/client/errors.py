"""The one error the client raises for an edge's refusal."""

from __future__ import annotations

from services.runtime import errors


def _subclasses(cls: type[errors.BatonError]) -> list[type[errors.BatonError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


# The HTTP status of each error code (services/runtime/errors.py, the one
# definition): Socket.IO acknowledgements carry the code only.
STATUS_OF_CODE = {cls.code: cls.http_status for cls in _subclasses(errors.BatonError)}


class ApiError(Exception):
    """The edge refused or failed a request.

    `status` is the HTTP status (for a Socket.IO refusal, the status the same
    refusal has over REST), `code` the machine-readable name (`not_found`,
    `conflict`, ...: docs/openapi.json, schema Error) and `message` the edge's
    own words. `retry_after_s` is the Retry-After of a 429, else None.
    """

    def __init__(
        self, status: int, code: str, message: str, retry_after_s: int | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @classmethod
    def from_code(cls, code: str, message: str) -> ApiError:
        """A refusal that names its code only (a Socket.IO acknowledgement)."""
        return cls(STATUS_OF_CODE.get(code, 500), code, message)

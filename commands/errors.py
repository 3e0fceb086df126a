"""The one error type the gateway raises; each transport renders it in its own shape."""

from __future__ import annotations

# Generic codes of the /api.php interface.
AUTH_FAILED = 99998
NOT_PERMITTED = 99999
INVALID_JSON = 100000
BAD_PARAMETERS = 100001  # parameters that cannot be read (a form key nested too deep)
UNKNOWN_COMMAND = 100003
TOO_MANY_REQUESTS = 100004  # a user's /api.php commands past ratelimit.user_requests (HTTP 429)
INTERNAL_ERROR = 100500


class CommandError(Exception):
    """A command refused its input: an error code and a text meant for the caller."""

    def __init__(self, code: int, text: str, *, http_status: int = 200, commit: bool = False):
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.http_status = http_status
        # Keep what the command wrote before refusing (event rows that record the refusal).
        self.commit = commit


class AuthenticationFailed(CommandError):
    def __init__(self, text: str = "Authentication failure or session expired"):
        super().__init__(AUTH_FAILED, text)


class NotPermitted(CommandError):
    def __init__(self, text: str = "Not enough privileges"):
        super().__init__(NOT_PERMITTED, text)

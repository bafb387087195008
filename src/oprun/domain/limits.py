"""Documented limits on everything a client can send (see docs/limits.md)."""

MAX_REQUEST_BYTES = 1024 * 1024
"""Largest request body the API accepts, however it is framed (Content-Length or chunked)."""
MAX_AUTHORIZATION_BYTES = 4096
"""Longest `Authorization` header: a longer one is 401 without being read as a token."""
MAX_HEADER_BYTES = 64 * 1024
"""Largest request head (request line and headers) the server reads at all."""
MAX_PARAMETER_BYTES = 64 * 1024
"""Largest encoded value of one parameter."""
MAX_RESULT_BYTES = 256 * 1024
"""Largest encoded operation result."""
MAX_LOG_LINE_BYTES = 16 * 1024
"""A longer log line is cut to this size."""
MAX_OPERATION_LOG_BYTES = 16 * 1024 * 1024
"""Log volume kept per operation; further lines are dropped and counted."""
MAX_PAGE_SIZE = 500
"""Largest page of any list."""
DEFAULT_PAGE_SIZE = 50
MAX_BULK_INVOKE = 1000
"""Most operations in one bulk invocation."""
MAX_CLAIM = 256
"""Most tasks one claim can take."""
MAX_WAIT_SECONDS = 60.0
"""Longest server-side long poll."""
MAX_NAME_LENGTH = 128

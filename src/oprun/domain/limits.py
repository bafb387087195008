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
"""Longest name of an action, a queue, a worker, a token or a project."""
MAX_WORKER_QUEUES = 64
"""Most queues one worker registration names."""
MAX_WORKER_ACTIONS = 256
"""Most actions one worker registration registers."""
MAX_CAPABILITIES = 64
"""Most entries in a worker's capabilities."""
MAX_TAGS = 64
"""Most tags an action requires or a worker's capabilities name."""
MAX_ACTION_PARAMETERS = 256
"""Most parameters one action defines."""
MAX_ALLOWED_VALUES = 1000
"""Most allowed values of one parameter."""
MAX_COMMAND_ARGS = 1024
"""Most arguments of an action's `command`."""
MAX_HELD = 10_000
"""Most held work items one heartbeat lists."""

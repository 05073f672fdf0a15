"""The one exception type a user sees: a sentence saying what, where, and what to do."""


class HangjiaError(Exception):
    """A user-facing error. The CLI prints its message (no traceback) and exits with code 2;
    the server turns it into a 4xx response."""

    def __init__(self, message: str, *, status_code: int = 400):
        super().__init__(message)
        self.message = message
        self.status_code = status_code

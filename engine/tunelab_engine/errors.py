class EngineError(Exception):
    """A failure the caller can act on: reported as an `error` event with this code, never a traceback."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

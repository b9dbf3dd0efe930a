import json


class EngineError(Exception):
    """A failure the caller can act on: reported as an `error` event with this code, never a traceback."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def read_json_object(path, code):
    """A JSON object from `path`; a missing, unparsable or non-object file is an EngineError with `code`."""
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError:
        raise EngineError(code, f"{path}: not found") from None
    except ValueError as e:
        raise EngineError(code, f"{path}: not JSON ({e})") from None
    if not isinstance(value, dict):
        raise EngineError(code, f"{path}: not a JSON object")
    return value

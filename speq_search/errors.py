"""One error type for bad user input, so the CLI can print it as one line and exit 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A value given by the user is not accepted.

    ``field`` names the setting (as in the config file or CLI flag), ``value`` is what was
    given and ``accepted`` says what would be taken instead.
    """

    def __init__(self, field: str, value: object, accepted: str) -> None:
        self.field = field
        self.value = value
        self.accepted = accepted
        super().__init__(f"{field}: got {value!r}; accepted: {accepted}")

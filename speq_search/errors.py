"""One error type for bad user input, so the CLI can print it as one line and exit 2."""

from __future__ import annotations

import reprlib

# A message shows at most this much of a value: a YAML bomb or a whole file given as a value
# must not be expanded (or echoed) into the error line.
_SHORT = reprlib.Repr()
_SHORT.maxstring = 240  # long enough for a path the user must recognise
_SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxlevel = 3


def short_repr(value: object) -> str:
    """``repr(value)``, cut to about 240 characters and 3 levels of nesting (never expands a huge value)."""
    text = _SHORT.repr(value)
    return text if len(text) <= 260 else text[:257] + "..."


def near_miss(value: object, names) -> str | None:
    """The one of ``names`` that ``value`` is a near miss of (a typo), or ``None``."""
    import difflib

    near = difflib.get_close_matches(str(value), list(names), n=1, cutoff=0.75)
    return near[0] if near else None


def one_of(value: object, options, extra: dict[str, str] | None = None) -> str:
    """``"a key among a, b, c"``, plus ``" (did you mean b?)"`` when ``value`` is a near miss.

    ``extra`` maps further names to what they stand for (e.g. short aliases), which are
    suggested but not listed.
    """
    options = sorted(options)
    names = {o: o for o in options} | (extra or {})
    near = near_miss(value, names)
    hint = f" (did you mean {names[near]}?)" if near else ""
    return "a key among " + ", ".join(options) + hint


class ConfigError(ValueError):
    """A value given by the user is not accepted.

    ``field`` names the setting (as in the config file or CLI flag), ``value`` is what was
    given and ``accepted`` says what would be taken instead. Picklable (Ray copies a trial's
    exception into the driver), and its message shows only a short form of the value.
    """

    def __init__(self, field: str, value: object, accepted: str) -> None:
        self.field = field
        self.value = value
        self.accepted = accepted
        super().__init__(f"{field}: got {short_repr(value)}; accepted: {accepted}")

    def __reduce__(self):
        # The default rebuilds from self.args (the one message), which __init__ cannot take;
        # the value travels as its short form, so any value pickles.
        return (_rebuild, (type(self), self.field, short_repr(self.value), self.accepted, str(self)))


def _rebuild(cls: type, field: str, value: str, accepted: str, message: str) -> ConfigError:
    err = cls.__new__(cls)
    ValueError.__init__(err, message)
    err.field, err.value, err.accepted = field, value, accepted
    return err

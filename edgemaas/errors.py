"""Library errors. A UserError is a mistake the user can fix; the CLI prints its message without a traceback."""


class UserError(Exception):
    """Bad input: a spec, a file, an option. The message says what was wrong and what to do."""


class StageFailed(Exception):
    """A pipeline stage (a conversion, say) failed; the pipeline records it and moves on where it can."""

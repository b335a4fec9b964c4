"""The one exception type users see as a one-line message (exit code 2) instead of a traceback."""


class LbtError(Exception):
    """A user-facing error: bad config, bad input file, unusable output path.

    The message names the file, key or line at fault; the CLI prints it on one line and exits 2.
    """

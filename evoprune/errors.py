"""Failures of a run that are not bugs: the CLI prints their message as one paragraph and exits with 1."""
import signal


class RunFailed(RuntimeError):
    """A run could not go on for a reason its message explains (e.g. a worker process crashed)."""


def signal_name(number: int) -> str:
    """'SIGSEGV' for 11, and so on."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"

"""Kernel configuration for the notebooks scripts/nb.py executes (passed as --config).

ipykernel warns at every start that it "is running over TCP without encryption": papermill's
kernel listens on localhost only and lives for one notebook, and `dvc repro` starts ~50 of them,
so the console repeated the same notice 50 times. This drops that one message from the kernel's
log; every other warning and error still reaches the console.
"""

TCP_NOTICE = "Kernel is running over TCP without encryption"


def _without_tcp_notice():
    """A logging filter (a callable, as logging accepts) that drops the TCP notice alone."""
    return lambda record: TCP_NOTICE not in record.getMessage()


c = get_config()  # noqa: F821 (defined by traitlets when it loads this file)
c.IPKernelApp.logging_config = {
    "filters": {"tcp_notice": {"()": _without_tcp_notice}},
    "handlers": {"console": {"filters": ["tcp_notice"]}},
}

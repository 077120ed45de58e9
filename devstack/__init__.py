"""The embedded local stack (Kafka + Triton as plain child processes) for dev and tests.

A package of its own beside `worker/`: the worker image does not install it, and the worker
never imports it (`labelstream-stack` / `python -m devstack` is its command line).
"""

from devstack.local import LocalStack, ServiceStatus, StackAddresses
from devstack.state import StackError

__all__ = ["LocalStack", "ServiceStatus", "StackAddresses", "StackError"]

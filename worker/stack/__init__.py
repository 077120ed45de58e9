"""The embedded local stack (Kafka + Triton as plain child processes) for dev and tests."""

from worker.stack.local import LocalStack, ServiceStatus, StackAddresses
from worker.stack.state import StackError

__all__ = ["LocalStack", "ServiceStatus", "StackAddresses", "StackError"]

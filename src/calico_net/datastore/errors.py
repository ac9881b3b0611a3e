"""Errors raised by the datastore layer; each str() is a one-line reason for an operator."""
from __future__ import annotations


class DatastoreError(Exception):
    """Something went wrong talking to etcd or the request was refused."""


class DatastoreUnavailable(DatastoreError):
    """No etcd endpoint could be reached."""


class ResourceNotFound(DatastoreError):
    pass


class ResourceAlreadyExists(DatastoreError):
    pass


class ResourceConflict(DatastoreError):
    """A compare-and-swap failed: someone else changed the resource since it was read."""


class BadStoredValue(DatastoreError):
    """A key in etcd that does not decode to a resource: a key that is not UTF-8, a
    value that is not JSON, or JSON that is not an object. str() names the key
    (escaped and bounded: its bytes came from etcd, not from us)."""

    def __init__(self, key: str, reason: str) -> None:
        from calico_net.datastore.etcd import show_key

        self.key = key
        self.reason = reason
        super().__init__(f"etcd key {show_key(key)}: {reason}")

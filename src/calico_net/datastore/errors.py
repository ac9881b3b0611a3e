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

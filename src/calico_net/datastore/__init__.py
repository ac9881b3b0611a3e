"""The etcd v3 datastore: connection settings (`config`), a small client (`etcd`) over
etcd's gRPC API (`etcd_grpc`, generated messages in `etcdpb`), and Calico v3
resources on it (`store`)."""
from __future__ import annotations

from calico_net.datastore.errors import (
    BadStoredValue,
    DatastoreError,
    DatastoreUnavailable,
    ResourceAlreadyExists,
    ResourceConflict,
    ResourceNotFound,
)
from calico_net.datastore.etcd import EtcdClient, EtcdConfig, PrefixReader, WatchCompacted, connect
from calico_net.datastore.store import Datastore, parse_key, resource_key

__all__ = [
    "BadStoredValue", "Datastore", "DatastoreError", "DatastoreUnavailable", "EtcdClient", "EtcdConfig",
    "PrefixReader", "ResourceAlreadyExists", "ResourceConflict", "ResourceNotFound", "WatchCompacted",
    "connect", "parse_key", "resource_key",
]

"""Calico v3 resources stored in etcd v3, with Calico's key layout.

    /calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>  →  JSON

The stored JSON is the resource exactly as the user wrote it plus `uid` and
`creationTimestamp`; `resourceVersion` is not stored but is the key's etcd mod
revision, filled in on every read. Every update is a compare-and-swap on it, so two
writers that read the same version cannot both win.

`apply_all` writes a whole manifest in one etcd transaction: either every document
lands or none does. What a write reads first is exactly the keys it writes (single-key
ranges in one transaction), never a directory: a write costs what it writes, not
what the cluster holds.
"""
from __future__ import annotations

import datetime as _dt
import logging
import uuid

import orjson
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from calico_net.datastore.errors import (
    BadStoredValue,
    DatastoreError,
    ResourceAlreadyExists,
    ResourceConflict,
    ResourceNotFound,
)
from calico_net.datastore.etcd import (
    KV,
    EtcdClient,
    cmp_mod_revision,
    key_problem,
    op_delete,
    op_get,
    op_put,
)

log = logging.getLogger(__name__)

RESOURCE_PREFIX = "/calico/resources/v3/projectcalico.org/"
SERVER_METADATA = ("uid", "creationTimestamp", "resourceVersion")

# Keys read in one transaction before a write: etcd's default --max-txn-ops is 128, so
# a batch of reads never needs the raised limit even when the write that follows does.
READ_BATCH = 128


def _model():
    # Imported lazily: the model pulls in pydantic, which short-lived tools that only
    # move raw keys (IPAM, CNI DEL) need not pay for.
    import calico_net.model as model

    return model


def kind_info(kind: str):
    return _model().resolve_kind(kind)


def resource_key(kind: str, name: str, namespace: str | None = None) -> str:
    info = kind_info(kind)
    if info.namespaced:
        if not namespace:
            raise DatastoreError(f'{info.kind} "{name}" needs a namespace')
        return f"{RESOURCE_PREFIX}{info.plural}/{namespace}/{name}"
    return f"{RESOURCE_PREFIX}{info.plural}/{name}"


def kind_prefix(kind: str, namespace: str | None = None) -> str:
    info = kind_info(kind)
    if info.namespaced and namespace:
        return f"{RESOURCE_PREFIX}{info.plural}/{namespace}/"
    return f"{RESOURCE_PREFIX}{info.plural}/"


class KeyParts(NamedTuple):
    plural: str
    namespace: str | None
    name: str


def parse_key(key: str) -> KeyParts | None:
    """Split a resource key; None when the key is not a v3 resource key."""
    if not key.startswith(RESOURCE_PREFIX):
        return None
    parts = key[len(RESOURCE_PREFIX):].split("/")
    if len(parts) == 2:
        return KeyParts(parts[0], None, parts[1])
    if len(parts) == 3:
        return KeyParts(parts[0], parts[1], parts[2])
    return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(kind: str, name: str, namespace: str | None = None) -> str:
    return f'{kind} "{namespace}/{name}"' if namespace else f'{kind} "{name}"'


def to_document(res: Any) -> dict[str, Any]:
    """A resource given as a document (a mapping) or as a model object, as a new dict."""
    return dict(res) if isinstance(res, Mapping) else res.to_dict()


def _ident(doc: dict[str, Any]) -> tuple[str, str, str | None]:
    md = doc.get("metadata") or {}
    return doc["kind"], md.get("name", ""), md.get("namespace")


def stored_value(doc: dict[str, Any], existing: dict[str, Any] | None) -> bytes:
    """The JSON we store: the document, server metadata kept from `existing`."""
    out = orjson.loads(orjson.dumps(doc))  # deep copy, JSON types only
    md = out.setdefault("metadata", {})
    md.pop("resourceVersion", None)
    old_md = (existing or {}).get("metadata") or {}
    md["uid"] = old_md.get("uid") or md.get("uid") or str(uuid.uuid4())
    md["creationTimestamp"] = old_md.get("creationTimestamp") or md.get("creationTimestamp") or _now()
    return orjson.dumps(out)


def _own_write(txn: Any, values: Sequence[bytes]) -> bool:
    """A failed create whose keys all hold exactly what it wrote (a fresh uid each) was
    our own, committed: the client re-sent the transaction to another endpoint after
    its reply was lost, and the re-send's "does not exist yet" compare failed."""
    return all((kvs := txn.range_kvs(i)) and kvs[0].value == v for i, v in enumerate(values))


def decode(kv: KV) -> dict[str, Any]:
    """The stored document with its resourceVersion; BadStoredValue (naming the key)
    when the key is not UTF-8, the value is not JSON, or the JSON is not an object."""
    if not kv.key.isascii():
        problem = key_problem(kv.key)
        if problem:
            raise BadStoredValue(kv.key, problem)
    try:
        doc = orjson.loads(kv.value)
    except orjson.JSONDecodeError as e:
        raise BadStoredValue(kv.key, f"value is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BadStoredValue(kv.key, "value is not a JSON object")
    md = doc.setdefault("metadata", {})
    if not isinstance(md, dict):
        raise BadStoredValue(kv.key, "metadata is not a JSON object")
    md["resourceVersion"] = str(kv.mod_revision)
    return doc


OnBad = Callable[[BadStoredValue], None]


def _log_bad(err: BadStoredValue) -> None:
    log.warning("skipping %s", err)


def decode_each(kvs: Iterable[KV], on_bad: OnBad | None = None) -> list[dict[str, Any]]:
    """`decode` of every KV that decodes; each one that does not is skipped and handed
    to `on_bad` (default: a warning in the log), so one bad key never hides the rest."""
    out = []
    for kv in kvs:
        try:
            out.append(decode(kv))
        except BadStoredValue as e:
            (on_bad or _log_bad)(e)
    return out


class Datastore:
    """CRUD and watch for Calico v3 resources. Methods take and return documents
    (plain dicts, validated with `calico_net.model`) or model objects."""

    def __init__(self, client: EtcdClient, *, validate: bool = True) -> None:
        self.client = client
        self.validate = validate

    # --- helpers ---
    def _check(self, res: Any, validated: bool = False) -> dict[str, Any]:
        doc = to_document(res)
        if self.validate and not validated:
            doc = _model().parse_resource(doc).to_dict()
        return doc

    def _check_pools(self, new_docs: Sequence[dict[str, Any]]) -> None:
        """Overlapping enabled IPPools are refused, counting what is already stored."""
        pools = [d for d in new_docs if kind_info(d["kind"]).kind == "IPPool"]
        if not pools or not self.validate:
            return
        names = {d["metadata"]["name"] for d in pools}
        existing, _ = self.list("IPPool")
        model = _model()
        combined = [model.parse_resource(d) for d in existing if d["metadata"]["name"] not in names]
        combined += [model.parse_resource(d) for d in pools]
        model.check_pool_overlap(combined)

    def _read(self, key: str) -> tuple[dict[str, Any] | None, int]:
        kv = self.client.get(key)
        if kv is None:
            return None, 0
        return decode(kv), kv.mod_revision

    def _read_for_write(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """`_read` for a write: a stored value that does not decode counts as present
        with nothing to keep from it ({}), so apply, replace and delete can put it
        right instead of failing on it."""
        kv = self.client.get(key)
        if kv is None:
            return None, 0
        return _decoded_or_empty(kv), kv.mod_revision

    # --- reads ---
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        info = kind_info(kind)
        doc, _ = self._read(resource_key(info.kind, name, namespace))
        if doc is None:
            raise ResourceNotFound(f"{describe(info.kind, name, namespace if info.namespaced else None)} not found")
        return doc

    def list(self, kind: str, namespace: str | None = None, *,
             on_bad: OnBad | None = None) -> tuple[list[dict[str, Any]], int]:
        """Every resource of a kind (in one namespace, or all when None), and the revision.

        A key that does not decode (see `decode`) is skipped and handed to `on_bad`
        (default: a warning in the log naming it): the rest is listed, as Calico's
        own etcd backend does when a value does not parse."""
        kvs, rev = self.client.get_prefix(kind_prefix(kind, namespace))
        return decode_each(kvs, on_bad), rev

    # --- writes ---
    def create(self, res: Any) -> dict[str, Any]:
        doc = self._check(res)
        kind, name, ns = _ident(doc)
        self._check_pools([doc])
        key = resource_key(kind, name, ns)
        value = stored_value(doc, None)
        txn = self.client.txn([cmp_mod_revision(key, 0)], [op_put(key, value)], [op_get(key)])
        if not txn.succeeded and not _own_write(txn, [value]):
            raise ResourceAlreadyExists(f"{describe(kind, name, ns)} already exists")
        return self.get(kind, name, ns)

    def create_all(self, resources: Iterable[Any], *, skip_exists: bool = False) -> list[dict[str, Any]]:
        """Create every document in one transaction; if one exists, nothing is written
        (or, with skip_exists, the existing ones are left alone and the rest created)."""
        docs = [self._check(r) for r in resources]
        keys = self._unique_keys(docs)
        self._check_pools(docs)
        existing = self._read_many(keys)
        if existing and not skip_exists:
            kind, name, ns = _ident(next(d for d, k in zip(docs, keys) if k in existing))
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise ResourceAlreadyExists(f"{describe(kind, name, ns)} already exists{more}; nothing was created")
        todo = [(d, k) for d, k in zip(docs, keys) if k not in existing]
        if todo:
            values = [stored_value(d, None) for d, _ in todo]
            txn = self.client.txn([cmp_mod_revision(k, 0) for _, k in todo],
                                  [op_put(k, v) for (_, k), v in zip(todo, values)],
                                  [op_get(k) for _, k in todo])
            if not txn.succeeded and not _own_write(txn, values):
                raise ResourceAlreadyExists("a resource was created by someone else meanwhile; nothing was created")
        return [d for d, _ in todo]

    def _unique_keys(self, docs: Sequence[dict[str, Any]]) -> list[str]:
        keys: list[str] = []
        seen: set[str] = set()
        for d in docs:
            key = resource_key(*_ident(d))
            if key in seen:
                kind, name, ns = _ident(d)
                raise DatastoreError(f"{describe(kind, name, ns)} appears twice in the input")
            seen.add(key)
            keys.append(key)
        return keys

    def replace(self, res: Any) -> dict[str, Any]:
        """Update an existing resource. With metadata.resourceVersion set, the update
        only lands if nobody changed the resource since that version was read."""
        doc = self._check(res)
        kind, name, ns = _ident(doc)
        key = resource_key(kind, name, ns)
        existing, rev = self._read_for_write(key)
        if existing is None:
            raise ResourceNotFound(f"{describe(kind, name, ns)} not found")
        expect = _wanted_revision(doc, rev)
        if expect != rev:
            raise _conflict(kind, name, ns, expect, rev)
        self._check_pools([doc])
        txn = self.client.txn([cmp_mod_revision(key, expect)], [op_put(key, stored_value(doc, existing))])
        if not txn.succeeded:
            raise _conflict(kind, name, ns, expect, None)
        return self.get(kind, name, ns)

    def apply(self, res: Any) -> dict[str, Any]:
        return self.apply_all([res])[0]

    def apply_all(self, resources: Iterable[Any], *, attempts: int = 5, validated: bool = False) -> list[dict[str, Any]]:
        """Create or update every document in ONE etcd transaction: all land or none.

        Documents that carry a resourceVersion are compared against it (a conflict
        fails the whole manifest); the others are compared against what we read, and
        the transaction is retried when someone else wrote in between.
        `validated=True` says the documents come from `parse_resource(...).to_dict()`
        already (calicoctl validates a whole manifest first), so they are not parsed twice.
        """
        docs = [self._check(r, validated) for r in resources]
        if not docs:
            return []
        keys = self._unique_keys(docs)
        self._check_pools(docs)
        for _ in range(attempts):
            existing = self._read_many(keys)
            compare, success = [], []
            for doc, key in zip(docs, keys):
                old, rev = existing.get(key, (None, 0))
                kind, name, ns = _ident(doc)
                want = doc.get("metadata", {}).get("resourceVersion")
                if want:
                    expect = int(want)
                    if expect != rev:
                        raise _conflict(kind, name, ns, expect, rev)
                compare.append(cmp_mod_revision(key, rev))
                success.append(op_put(key, stored_value(doc, old)))
            txn = self.client.txn(compare, success)
            if txn.succeeded:
                return [self._with_version(doc, key, txn.revision, existing.get(key)) for doc, key in zip(docs, keys)]
        raise ResourceConflict(f"gave up after {attempts} attempts: the resources kept changing underneath")

    def _with_version(self, doc: dict[str, Any], key: str, revision: int, old: tuple | None) -> dict[str, Any]:
        out = orjson.loads(stored_value(doc, old[0] if old else None))
        out["metadata"]["resourceVersion"] = str(revision)
        return out

    def _read_many(self, keys: Sequence[str]) -> dict[str, tuple[dict[str, Any], int]]:
        """Current value and revision for each key: exactly these keys and no others.

        One etcd transaction of single-key ranges per READ_BATCH keys (a plain GET for
        one key): the read costs what the write costs, whatever else the directory
        holds. Different batches may see different revisions; that is fine because the
        write that follows compares every key against the revision read here."""
        out: dict[str, tuple[dict[str, Any], int]] = {}
        if len(keys) == 1:
            doc, rev = self._read_for_write(keys[0])
            if doc is not None:
                out[keys[0]] = (doc, rev)
            return out
        for start in range(0, len(keys), READ_BATCH):
            batch = keys[start:start + READ_BATCH]
            txn = self.client.txn([], [op_get(k) for k in batch])
            for i, key in enumerate(batch):
                kvs = txn.range_kvs(i)
                if kvs:
                    out[key] = (_decoded_or_empty(kvs[0]), kvs[0].mod_revision)
        return out

    def delete(
        self, kind: str, name: str, namespace: str | None = None, *, resource_version: str | int | None = None
    ) -> dict[str, Any]:
        info = kind_info(kind)
        ns = namespace if info.namespaced else None
        key = resource_key(info.kind, name, ns)
        existing, rev = self._read_for_write(key)
        if existing is None:
            raise ResourceNotFound(f"{describe(info.kind, name, ns)} not found")
        if not existing:        # a value that did not decode: what is deleted is the key
            existing = {"apiVersion": "projectcalico.org/v3", "kind": info.kind,
                        "metadata": {"name": name, **({"namespace": ns} if ns else {}),
                                     "resourceVersion": str(rev)}}
        expect = int(resource_version) if resource_version else rev
        if expect != rev:
            raise _conflict(info.kind, name, ns, expect, rev)
        txn = self.client.txn([cmp_mod_revision(key, expect)], [op_delete(key)])
        if not txn.succeeded:
            raise _conflict(info.kind, name, ns, expect, None)
        return existing

    def watch(self, start_revision: int, kind: str | None = None, namespace: str | None = None):
        prefix = kind_prefix(kind, namespace) if kind else RESOURCE_PREFIX
        return self.client.watch_prefix(prefix, start_revision)


def _decoded_or_empty(kv: KV) -> dict[str, Any]:
    try:
        return decode(kv)
    except BadStoredValue as e:
        log.warning("%s; the stored value is not kept", e)
        return {}


def _wanted_revision(doc: dict[str, Any], current: int) -> int:
    want = (doc.get("metadata") or {}).get("resourceVersion")
    if want in (None, ""):
        return current
    try:
        return int(want)
    except (TypeError, ValueError):
        raise DatastoreError(f'metadata.resourceVersion "{want}" is not a revision number') from None


def _conflict(kind: str, name: str, ns: str | None, expect: int, current: int | None) -> ResourceConflict:
    now = f" (now {current})" if current else ""
    return ResourceConflict(
        f"{describe(kind, name, ns)} was modified by someone else: resourceVersion {expect} is stale{now}; "
        "get it again and reapply your change"
    )

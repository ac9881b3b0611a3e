"""What every resource model shares: the pydantic base, the cross-field check protocol,
metadata, and the `Resource` envelope with its round-trip dump.

Models forbid unknown fields and are strict about types (a quoted "true" is not a
boolean), because what a YAML file says is what goes to etcd. Cross-field rules live
in each model's `semantic_errors(path, ctx)`, which yields (field path, message) pairs.
"""
from __future__ import annotations

import typing
from typing import Any, ClassVar, Iterator, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from calico_net.model.fields.checks import bounded, pattern_type
from calico_net.model.fields.text import (
    UID, Annotations, Labels, Name, Namespace, ResourceVersion, Timestamp,
)

API_VERSION = "projectcalico.org/v3"

Error = tuple[str, str]


class CalicoModel(BaseModel):
    """Base of every model: Calico's JSON names, no unknown fields, strict types."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,  # Python code may construct with snake_case names
        serialize_by_alias=True,
        validate_assignment=False,
        defer_build=True,  # build a kind's validator on first use: calicoctl starts faster
    )

    def semantic_errors(self, path: str, ctx: "CheckContext") -> Iterator[Error]:
        """Cross-field rules; subclasses yield (path, message). Default: none."""
        return iter(())


class CheckContext:
    """What nested checks need to know about the document they are in."""

    def __init__(self, kind: str, name: str | None, namespaced: bool) -> None:
        self.kind = kind
        self.name = name
        self.namespaced = namespaced


def field_path(path: str, field: str) -> str:
    """`field` below `path` ("spec" + "ingress[0]" -> "spec.ingress[0]")."""
    return f"{path}.{field}" if path else field


#: The words every refusal of a Calico field the dataplane does not enforce carries.
NOT_SUPPORTED_YET = "not supported by calico.net yet"


def not_supported(reason: str) -> str:
    """The message for a Calico field calico.net refuses because it cannot enforce it."""
    return f"{NOT_SUPPORTED_YET} ({reason})"


# --- metadata ----------------------------------------------------------------------------


# The grammars of the ObjectMeta fields Calico's validator passes through unchanged:
# generateName is a name prefix (it may end in '-'), selfLink an API path, a finalizer
# a qualified name ("example.com/cleanup"), ownerReferences name Kubernetes objects.
GenerateName = pattern_type(r"[a-z0-9]([-a-z0-9.]*)?", "lower-case letters, digits, '-' and '.', "
                            "at most 253", "generateName", max_len=253)
SelfLink = pattern_type(r"/[A-Za-z0-9/._-]*", "an API path of letters, digits, '/', '.', '_' and '-'",
                        "selfLink", max_len=1024)
Finalizer = pattern_type(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?", "a qualified name such as "
                         "example.com/cleanup", "finalizer", max_len=316)
APIVersionText = pattern_type(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?", "group/version, e.g. "
                              "apps/v1", "apiVersion", max_len=253)
KindText = pattern_type(r"[A-Za-z][A-Za-z0-9]*", "letters and digits", "kind", max_len=63)


class OwnerReference(CalicoModel):
    """A Kubernetes owner reference, kept as written (no garbage collector reads it here).
    Every field is optional, as in Calico, whose JSON decoding requires none of them."""

    api_version: Optional[APIVersionText] = Field(None, alias="apiVersion")
    kind: Optional[KindText] = None
    name: Optional[Name] = None
    uid: Optional[UID] = None
    controller: Optional[bool] = None
    block_owner_deletion: Optional[bool] = None


class Metadata(CalicoModel):
    """Kubernetes ObjectMeta as Calico's v3 resources carry it.

    Beyond name/namespace/labels/annotations and the server's uid, creationTimestamp
    and resourceVersion, the other standard fields are accepted because Calico accepts
    them (documents exported from a Kubernetes-backed cluster carry them); the field
    registry (`model.registry`) flags the ones that mean nothing without Kubernetes.
    """

    name: Name
    namespace: Optional[Namespace] = None
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=dict)
    uid: Optional[UID] = None
    creation_timestamp: Optional[Timestamp] = None
    resource_version: Optional[ResourceVersion] = None
    generate_name: Optional[GenerateName] = None
    deletion_timestamp: Optional[Timestamp] = None
    deletion_grace_period_seconds: Optional[bounded(0, 2**63 - 1, "grace period")] = None
    owner_references: Optional[list[OwnerReference]] = None
    self_link: Optional[SelfLink] = None
    generation: Optional[bounded(0, 2**63 - 1, "generation")] = None
    finalizers: Optional[list[Finalizer]] = None
    cluster_name: Optional[Name] = None



# --- resources -----------------------------------------------------------------------------


class Resource(CalicoModel):
    """A Calico v3 resource: apiVersion, kind, metadata, spec."""

    KIND: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False

    api_version: Literal["projectcalico.org/v3"] = Field(API_VERSION, alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: Any = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    def semantic_errors(self, path: str = "", ctx: CheckContext | None = None) -> Iterator[Error]:
        ctx = ctx or CheckContext(self.KIND, self.metadata.name, self.NAMESPACED)
        if self.spec is not None:
            yield from self.spec.semantic_errors(field_path(path, "spec"), ctx)

    def to_dict(self) -> dict[str, Any]:
        """The document as written (plus any metadata set since), JSON-ready, Calico names."""
        _mark_changed_fields(self)
        self.__pydantic_fields_set__.update(("api_version", "kind"))  # always written
        return self.model_dump(by_alias=True, exclude_unset=True)  # values are JSON types already

    def __repr__(self) -> str:
        where = f"{self.metadata.namespace}/" if self.metadata.namespace else ""
        return f"<{self.kind} {where}{self.metadata.name}>"


_CONTAINER_FIELDS: dict[type, tuple[str, ...]] = {}


def _may_contain(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    if typing.get_origin(annotation) in (list, dict):
        return True
    return any(_may_contain(arg) for arg in typing.get_args(annotation))


def _container_fields(cls: type[BaseModel]) -> tuple[str, ...]:
    """Names of the fields of `cls` that can hold a list, a dict or a sub-model."""
    names = _CONTAINER_FIELDS.get(cls)
    if names is None:
        names = tuple(n for n, fi in cls.model_fields.items() if _may_contain(fi.annotation))
        _CONTAINER_FIELDS[cls] = names
    return names


def _mark_changed_fields(model: BaseModel) -> bool:
    """Mark fields changed since validation as set; True if `model` has any set field.

    exclude_unset alone would drop a default container changed in place
    (`res.metadata.labels["a"] = "b"` on a document without labels) and a default
    sub-model one of whose fields was assigned (`res.spec.order = 5` with no spec).
    Scalars cannot change in place, and assigning one marks it set already.
    """
    fields_set = model.__pydantic_fields_set__
    values = model.__dict__
    for fname in _container_fields(type(model)):
        value = values.get(fname)
        if isinstance(value, BaseModel):
            if _mark_changed_fields(value):
                fields_set.add(fname)
        elif isinstance(value, list):
            if value and fname not in fields_set:
                fields_set.add(fname)
            for item in value:
                if isinstance(item, BaseModel):
                    _mark_changed_fields(item)
        elif isinstance(value, dict) and value and fname not in fields_set:
            fields_set.add(fname)
    return bool(fields_set)


"""Text values of resource metadata and identifiers: names, namespaces, labels,
annotations, workload identifiers, uids, timestamps, resource versions and selectors.

Every pattern here is matched with `fullmatch` (or ends in \\Z): Python's `$` also
matches before a trailing "\\n", and a value with a newline must never pass as a name.
Digits are spelled [0-9]: `\\d` also matches other scripts' digits, which int() reads.
"""
from __future__ import annotations

import functools
import re
from datetime import date, datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, PlainValidator

from calico_net.model.fields.checks import fail, pattern_type, refuse_problem, show


DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_RE = re.compile(rf"{DNS1123_LABEL}\Z")
DNS1123_SUBDOMAIN_RE = re.compile(rf"{DNS1123_LABEL}(\.{DNS1123_LABEL})*\Z")
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_NAME_ALLOWED = "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"


def name_problem(value: Any, what: str = "name") -> str | None:
    """Why `value` is not a DNS-1123 subdomain (Calico's resource-name rule), or None."""
    if not isinstance(value, str):
        return f"{show(value)} is not a valid {what} (a string of {_NAME_ALLOWED})"
    if not value:
        return f"{what} must not be empty"
    if len(value) > 253:
        return f"{show(value)} is not a valid {what} (at most 253 characters)"
    return _name_problem(value, what)


@functools.lru_cache(maxsize=8192)
def _name_problem(value: str, what: str) -> str | None:
    if not DNS1123_SUBDOMAIN_RE.fullmatch(value):
        hint = ""
        if value.lower() != value and DNS1123_SUBDOMAIN_RE.fullmatch(value.lower()):
            hint = " - use lower case"
        elif "_" in value:
            hint = " - '_' is not allowed, use '-'"
        return f"{show(value)} is not a valid {what} ({_NAME_ALLOWED}){hint}"
    return None


check_name = refuse_problem(name_problem)


def check_namespace(value: str) -> str:
    if not value or len(value) > 63 or not DNS1123_LABEL_RE.fullmatch(value):
        raise fail(f"{show(value)} is not a valid namespace (a DNS-1123 label: at most 63 "
                   "lower-case letters, digits and '-', starting and ending with a letter or digit)")
    return value


def label_key_problem(key: Any) -> str | None:
    """Why `key` is not a Kubernetes qualified name (`[prefix/]name`), or None."""
    if not isinstance(key, str):
        return f"label key {show(key)} is not a string"
    if len(key) > 253 + 1 + 63:
        return f"label key {show(key)} is too long (a prefix of at most 253 and a name of at most 63 characters)"
    return _label_key_problem(key)


@functools.lru_cache(maxsize=8192)
def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN_RE.fullmatch(prefix)):
        return f"label key {show(key)} has an invalid prefix (must be a DNS-1123 subdomain)"
    if not name or len(name) > 63 or not _QUALIFIED_NAME_RE.fullmatch(name):
        return (f"label key {show(key)} is not valid (at most 63 letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit, with an optional DNS prefix and '/')")
    return None


@functools.lru_cache(maxsize=8192)
def label_value_ok(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE_RE.fullmatch(value))


def _check_labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise fail(f"{show(value)} is not a mapping of label keys to values")
    for key, val in value.items():
        problem = label_key_problem(key)
        if problem:
            raise fail(problem)
        if not isinstance(val, str):
            raise fail(f"label {show(key)}: value {show(val)} is not a string (quote it)")
        if len(val) > 63 or not label_value_ok(val):
            raise fail(f"label {show(key)}: value {show(val)} is not valid (at most 63 letters, "
                       "digits, '-', '_' and '.', starting and ending with a letter or digit)")
    return value


# Free text (annotation values) may hold any printable text, line breaks and tabs
# included, as Kubernetes allows; never NUL or other control characters (terminal
# escapes, text that ends early in C).
_FREE_TEXT_BAD_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def free_text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as free text (a control character), or None."""
    bad = _FREE_TEXT_BAD_RE.search(value)
    if bad:
        return (f"{show(value)} holds the control character {show(bad.group())} at position "
                f"{bad.start()} (text may hold line breaks and tabs, no other control characters)")
    return None


def _check_annotations(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise fail(f"{show(value)} is not a mapping of annotation keys to values")
    total = 0
    for key, val in value.items():
        problem = label_key_problem(key)
        if problem:
            raise fail(problem.replace("label key", "annotation key"))
        if not isinstance(val, str):
            raise fail(f"annotation {show(key)}: value {show(val)} is not a string (quote it)")
        total += len(key) + len(val)
        if total > 256 * 1024:
            raise fail("annotations are larger than 256 KiB in total")
        problem = free_text_problem(val)
        if problem:
            raise fail(f"annotation {show(key)}: value {problem}")
    return value


Name = Annotated[str, AfterValidator(check_name)]
Namespace = Annotated[str, AfterValidator(check_namespace)]
Labels = Annotated[dict[str, str], PlainValidator(_check_labels)]
Annotations = Annotated[dict[str, str], PlainValidator(_check_annotations)]



# A WorkloadEndpoint's identifiers (containerID, workload, pod, endpoint, orchestrator):
# libcni's container-ID rule, which Calico's own (containerID: letters, digits and '-';
# the others: resource names) would narrow too far for the CNI plugin, whose workload
# is podman's container name ("web_1"). Plain characters only, whatever the field.
CONTAINER_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
CONTAINER_ID_MAX = 256
ContainerID = pattern_type(CONTAINER_ID_RE, "at most 256 letters, digits, '_', '.' and '-', "
                           "starting with a letter or digit", "workload identifier",
                           max_len=CONTAINER_ID_MAX)
# Kubernetes gives object UIDs as UUIDs; calicoctl writes uuid4 text.
UID_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?\Z")
UID_MAX = 128
UID = pattern_type(UID_RE, "at most 128 letters, digits, '-', '_', '.' and ':', e.g. a UUID", "uid",
                   max_len=UID_MAX)


_RFC3339_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
                         r"([Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?")
_TIMESTAMP_ALLOWED = "RFC 3339, e.g. 2024-01-31T12:00:00Z"


def check_timestamp(value: Any) -> str:
    # YAML loaders turn an unquoted RFC 3339 time into a datetime; store the text form.
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str) or len(value) > 40 or not _RFC3339_RE.fullmatch(value):
        raise fail(f"{show(value)} is not a timestamp ({_TIMESTAMP_ALLOWED})")
    text = value.upper().replace("Z", "+00:00")
    frac = re.search(r"\.([0-9]+)", text)
    if frac and len(frac.group(1)) > 6:  # nanoseconds: Python's datetime stops at micro
        text = text[:frac.start()] + text[frac.start():frac.start() + 7] + text[frac.end():]
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{show(value)} is not a timestamp ({_TIMESTAMP_ALLOWED})") from None
    return value


Timestamp = Annotated[str, PlainValidator(check_timestamp)]

RESOURCE_VERSION_RE = re.compile(r"[0-9]{1,20}")


def _check_resource_version(value: Any) -> str:
    # etcd mod revisions are numbers; accept an int from hand-written JSON but store text.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise fail(f"{show(value)} is not a resource version (a string)")
    if isinstance(value, int):
        value = str(value) if 0 <= value < 10**20 else "-"
    if not RESOURCE_VERSION_RE.fullmatch(value):
        raise fail(f"{show(value)} is not a resource version (the etcd revision: digits only)")
    return value


ResourceVersion = Annotated[str, PlainValidator(_check_resource_version)]


# --- selectors -------------------------------------------------------------------------

def selector_problem(text: str) -> str | None:
    """Why `text` is not a valid Calico selector, or None."""
    # Imported here, not at the top: the selector package imports `show` from this
    # package, and code that reads plain values need not load the selector language.
    from calico_net.model.selector import SelectorError, parse_selector

    try:
        parse_selector(text)
    except SelectorError as exc:
        return f"{show(text)} is not a valid selector: {exc.reason} at position {exc.position}"
    return None


check_selector = refuse_problem(selector_problem)


Selector = Annotated[str, AfterValidator(check_selector)]

# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""`labels` and `annotations` of the typed resource modules that declare a whole
resource (paired with `module_utils.common.METADATA_ARGUMENT_SPEC`)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  labels:
    description:
      - Labels of the resource (C(metadata.labels)), which policy selectors match.
      - Values are strings; numbers and booleans given here are turned into their text.
      - The module owns the labels - labels stored but not listed here are removed.
    type: dict
  annotations:
    description:
      - Annotations of the resource (C(metadata.annotations)). As with O(labels), the module owns them.
    type: dict
"""

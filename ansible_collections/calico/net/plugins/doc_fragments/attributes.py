# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The `attributes` block of calico.net modules: resource modules (the default) and
readers (`calico.net.attributes.info`)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the datastore.
    support: full
  diff_mode:
    description:
      - Returns the resource before and after as YAML text in diff mode, in check mode too.
    support: full
  idempotent:
    description:
      - Compares what is stored with what is declared by meaning (Calico's defaults filled in, order
        ignored where Calico ignores it), so a second run with the same arguments reports no change.
    support: full
"""

    INFO = r"""
attributes:
  check_mode:
    description: Reads only, so it runs the same in check mode.
    support: full
  diff_mode:
    description: Changes nothing, so there is no diff.
    support: N/A
  idempotent:
    description: Reads only; never reports a change.
    support: full
"""

# -*- coding: utf-8 -*-
# Copyright: calico.net contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the etcd connection options, paired one-to-one with
`module_utils.common.ETCD_ARGUMENT_SPEC`."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  etcd_endpoints:
    description:
      - The etcd v3 endpoints of the Calico datastore, as URLs (C(https://198.18.0.11:2379)).
      - A list, or one string with comma-separated URLs as in Calico's C(ETCD_ENDPOINTS).
      - When not set, the environment variable E(ETCD_ENDPOINTS) of the module is used,
        then C(etcdEndpoints) of C(/etc/calico/calicoctl.cfg) on the managed host,
        then C(http://127.0.0.1:2379).
    type: list
    elements: str
  etcd_ca_cert_file:
    description:
      - Path on the managed host of the CA certificate that signed etcd's server certificate.
      - Defaults to E(ETCD_CA_CERT_FILE), then C(etcdCACertFile) of C(/etc/calico/calicoctl.cfg).
    type: path
  etcd_cert_file:
    description:
      - Path on the managed host of the client certificate for etcd. Requires O(etcd_key_file).
      - Defaults to E(ETCD_CERT_FILE), then C(etcdCertFile) of C(/etc/calico/calicoctl.cfg).
    type: path
  etcd_key_file:
    description:
      - Path on the managed host of the client certificate's private key.
      - Defaults to E(ETCD_KEY_FILE), then C(etcdKeyFile) of C(/etc/calico/calicoctl.cfg).
    type: path
requirements:
  - The C(calico_net) Python library (the C(calico-net) distribution) on the managed host.
notes:
  - All modules of this collection are in the action group C(calico), so
    C(module_defaults) with C(group/calico.net.calico) sets the connection options once per play.
  - Calico's precedence applies to the connection settings - module option, then environment,
    then C(/etc/calico/calicoctl.cfg).
  - An C(http://) endpoint is plaintext (no encryption, no authentication) - the module then returns a
    warning naming it, and another when CA, certificate or key files were given, which an C(http://)
    endpoint ignores. Use C(https://) endpoints with O(etcd_ca_cert_file), O(etcd_cert_file) and O(etcd_key_file).
"""

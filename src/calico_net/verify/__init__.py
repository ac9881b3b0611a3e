"""Fabric verification of one host (`calicoctl node verify`): the checks live in
:mod:`calico_net.verify.checks`, each a function returning :class:`~.checks.Result`
(ok / fail / skip, a detail and, on failure, the fix)."""

"""Releasing addresses: by address (`release_ips`) or by handle
(`release_by_handle`). Each block is changed together with the handles it frees
addresses of, in one compare-and-swap transaction, retried from fresh reads on a
conflict.
"""
from __future__ import annotations

from typing import Iterable

from calico_net.datastore.etcd import cmp_mod_revision, op_delete, op_get, op_put
from calico_net.ipam import keys
from calico_net.ipam.block import IPAddress, IPNetwork, parse_cidr, parse_ip
from calico_net.ipam.errors import IPAMConflictError
from calico_net.ipam.reads import IPAMReads
from calico_net.ipam.records import Handle, backoff, dumps


class IPAMRelease(IPAMReads):
    """The releasing part of `IPAM`."""

    max_attempts: int

    def _read_handle(self, handle_id: str) -> Handle:
        """The handle as etcd has it now (`rev` 0 when there is none)."""
        handle = Handle(handle_id)
        kv = self.client.get(handle.key)
        handle.load([kv] if kv else [])
        return handle

    def release_ips(self, ips: Iterable[str | IPAddress]) -> list[IPAddress]:
        """Free addresses; returns those that were not allocated (nothing to do)."""
        addrs = list(dict.fromkeys(parse_ip(i) for i in ips))
        not_allocated: list[IPAddress] = []
        by_block: dict[IPNetwork, list[IPAddress]] = {}
        # only the keys of blocks that could hold these addresses are looked up, so a
        # release costs the same in a cluster of 10 or 100,000 blocks
        for a, block in self._find_block_cidrs(addrs).items():
            if block is None:
                not_allocated.append(a)
            else:
                by_block.setdefault(block, []).append(a)
        for cidr, members in by_block.items():
            not_allocated += self._release_in_block(cidr, members)
        return not_allocated

    def _release_in_block(self, cidr: IPNetwork, members: list[IPAddress]) -> list[IPAddress]:
        bkey = keys.block_key(cidr)
        for attempt in range(self.max_attempts):
            blk, rev = self._read_block(cidr)
            if blk is None:
                return list(members)
            freed, not_allocated = blk.release(members)
            if not freed and len(not_allocated) == len(members):
                return not_allocated
            value = dumps(blk.to_json())
            compare = [cmp_mod_revision(bkey, rev)]
            success = [op_put(bkey, value)]
            for hid, count in freed.items():
                h = self._read_handle(hid)
                left = h.blocks.get(str(cidr), 0) - count
                if left > 0:
                    h.blocks[str(cidr)] = left
                else:
                    h.blocks.pop(str(cidr), None)
                compare.append(cmp_mod_revision(h.key, h.rev))
                success.extend(h.write_ops())
            txn = self.client.txn(compare, success)
            if txn.succeeded:
                self._wrote(cidr, blk, value, txn.revision)
                return not_allocated
            backoff(attempt)
        raise IPAMConflictError(f"could not release addresses in block {cidr}: it kept changing; try again")

    def release_by_handle(self, handle_id: str) -> list[IPAddress]:
        """Free every address of a handle and delete the handle. Idempotent: an unknown
        handle releases nothing."""
        keys.check_handle_id(handle_id)
        handle = self._read_handle(handle_id)
        released: list[IPAddress] = []
        for _ in range(self.max_attempts):
            if not handle.rev:
                return released
            pending = [c for c, n in handle.blocks.items()]
            if not pending:
                txn = self.client.txn([cmp_mod_revision(handle.key, handle.rev)], [op_delete(handle.key)], [op_get(handle.key)])
                if txn.succeeded:
                    return released
                handle.load(txn.range_kvs(0))
                continue
            cidr = parse_cidr(pending[0])
            released += self._release_handle_in_block(handle, cidr)
        raise IPAMConflictError(f'could not release handle "{handle_id}": it kept changing; try again')

    def _release_handle_in_block(self, handle: Handle, cidr: IPNetwork) -> list[IPAddress]:
        bkey = keys.block_key(cidr)
        for attempt in range(self.max_attempts):
            blk, rev = self._read_block(cidr)
            ips = blk.ips_for_handle(handle.handle_id) if blk else []
            if blk is not None and ips:
                blk.release_handle(handle.handle_id)
            new_blocks = dict(handle.blocks)
            new_blocks.pop(str(cidr), None)
            after = Handle(handle.handle_id, new_blocks, handle.rev)
            compare = [cmp_mod_revision(handle.key, handle.rev)]
            success = after.write_ops()
            value = dumps(blk.to_json()) if ips else b""  # type: ignore[union-attr]
            if ips:
                compare.append(cmp_mod_revision(bkey, rev))
                success.append(op_put(bkey, value))
            txn = self.client.txn(compare, success, [op_get(handle.key)])
            if txn.succeeded:
                handle.blocks = new_blocks
                # the handle is only ever written here while it exists (rev != 0), so
                # it was put when it still holds addresses, deleted otherwise
                handle.rev = txn.revision if after.live else 0
                if ips:
                    self._keep_block(cidr, blk, txn.revision, value)
                return ips
            handle.load(txn.range_kvs(0))
            if str(cidr) not in handle.blocks:
                return []
            backoff(attempt)
        raise IPAMConflictError(f"could not release handle {handle.handle_id} in block {cidr}; try again")

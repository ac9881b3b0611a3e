"""`calico-libnetwork`: Docker's `calico` network driver and `calico-ipam` IPAM driver.

One process serves Docker's remote-plugin protocol (JSON over HTTP on a unix socket,
/run/docker/plugins/calico.sock) as Calico's libnetwork-plugin did:

* `server`: the socket, the HTTP plumbing and the dispatch of `Plugin.Activate`,
  `IpamDriver.*` and `NetworkDriver.*` calls;
* `ipam`: pools from IPPools and addresses from calico_net.ipam;
* `network`: the per-network Profile, the veth and the WorkloadEndpoint per
  container;
* `dockerapi`: the few Docker API reads the driver needs (a container's labels);
* `main`: configuration from the environment and the console script.

Every piece of state lives in etcd (IPAM blocks and handles, Profiles,
WorkloadEndpoints): Docker does not replay RequestPool or CreateNetwork after a
plugin restart, so a restarted plugin must find everything it needs there.
"""

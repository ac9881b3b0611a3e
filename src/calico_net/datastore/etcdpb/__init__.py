"""etcd's v3 API messages and gRPC stubs, generated from trimmed copies of etcd's
`api/etcdserverpb/rpc.proto` (here rpc.proto, and cluster.proto for its Cluster
and Maintenance services) and `api/mvccpb/kv.proto` (same packages, names and
field numbers, so the wire format and method paths are etcd's; only the calls
calico_net makes: KV Range/Put/DeleteRange/Txn/Compact, Watch, Cluster
MemberAdd/Remove/Update/List, Maintenance Status).

The *_pb2.py and *_pb2_grpc.py files are generated, not edited; regenerate after
changing a .proto (grpcio-tools 1.85.4, protoc for protobuf 7.35.1; the generated
code requires a protobuf runtime of 7.35.1 or later within 7.x, and grpcio 1.85.4 or
later):

    python -m venv /tmp/protoc && /tmp/protoc/bin/pip install grpcio-tools==1.85.4
    cd src && /tmp/protoc/bin/python -m grpc_tools.protoc -I . --python_out=. \\
        --grpc_python_out=. calico_net/datastore/etcdpb/kv.proto calico_net/datastore/etcdpb/rpc.proto \\
        calico_net/datastore/etcdpb/cluster.proto
    rm calico_net/datastore/etcdpb/kv_pb2_grpc.py   # kv.proto has no services
"""

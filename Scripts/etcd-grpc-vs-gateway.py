#!/usr/bin/env python3
"""What etcd's HTTP/JSON gateway costs against its native gRPC API.

Plexus's etcd backend (Sources/NameService/EtcdNameClient.swift) and the etcd
rows of `plexus bench names` talk to etcd through its HTTP/JSON gateway
(POST /v3/kv/put with base64 JSON), which etcd serves in the same process by
translating each request into a gRPC call to itself. etcd's own client
(clientv3, etcdctl) uses gRPC directly. This script measures the difference
on the operation the bench's etcd row uses to allocate an id: one put, whose
response header carries a revision that is unique and increasing cluster-wide.

Method: against the same etcd member, each of C clients (one thread, with its
own gRPC channel or its own keep-alive HTTP/1.1 connection) does puts back to
back, N puts per configuration split among the clients; every put's latency
is recorded. gRPC and gateway runs alternate (--repeat times each, order
swapped every repeat) so that drift of a shared machine hits both alike.
Printed per transport and client count: p50, p99, puts/s, and the client's
own CPU time per put (this Python process's, so the reader can tell client
cost from server cost), then the ratios gateway/gRPC. Every revision returned
is checked to be unique.

The gRPC side needs only `grpcio`: the two messages involved (PutRequest,
PutResponse's header) are encoded by hand below, field numbers as in etcd's
etcdserverpb/rpc.proto, so no generated stubs or protobuf package are needed.

Install:   apt-get install -y etcd-server etcd-client   # etcd, etcdctl (Debian)
           pip install grpcio
Run:       Scripts/etcd-grpc-vs-gateway.py                      # own 3-member etcd
           Scripts/etcd-grpc-vs-gateway.py --endpoint 127.0.0.1:2379 --clients 1,16 --ops 2000

Without --endpoint it starts a 3-member etcd on 127.0.0.1 with
Scripts/etcd-cluster.sh (random free ports, data in a temporary directory)
and stops it at the end; puts go to the first member, as in the bench.
"""

import argparse
import base64
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# --- protobuf, by hand (etcdserverpb.PutRequest / PutResponse.header) --------

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(number, data):
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def encode_put_request(key, value):
    # PutRequest { bytes key = 1; bytes value = 2; ... }
    return _field_bytes(1, key) + _field_bytes(2, value)


def _read_varint(buf, i):
    shift = 0
    n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7


def _fields(buf):
    """(field number, wire type, value) of one message; value: int or bytes."""
    i = 0
    while i < len(buf):
        tag, i = _read_varint(buf, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 2:
            length, i = _read_varint(buf, i)
            value = buf[i:i + length]
            i += length
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wire)
        yield number, wire, value


def decode_put_revision(buf):
    # PutResponse { ResponseHeader header = 1; ... }
    # ResponseHeader { uint64 cluster_id = 1; uint64 member_id = 2; int64 revision = 3; ... }
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            for n, w, v in _fields(value):
                if n == 3 and w == 0:
                    return v
    raise ValueError("etcd answered a put without a header revision")


# --- the two transports -------------------------------------------------------

class GRPCClient:
    def __init__(self, endpoint):
        import grpc  # pip install grpcio
        self.channel = grpc.insecure_channel(endpoint)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        # No (de)serializers: requests and responses are raw protobuf bytes.
        self.put_call = self.channel.unary_unary("/etcdserverpb.KV/Put")

    def put(self, key, value):
        return decode_put_revision(self.put_call(encode_put_request(key, value), timeout=30))

    def close(self):
        self.channel.close()


class GatewayClient:
    def __init__(self, endpoint):
        host, port = endpoint.rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.connection.connect()
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def put(self, key, value):
        body = json.dumps({"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()})
        self.connection.request("POST", "/v3/kv/put", body=body, headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError("gateway put: HTTP %d %s" % (response.status, data[:200]))
        return int(json.loads(data)["header"]["revision"])

    def close(self):
        self.connection.close()


TRANSPORTS = {"grpc": GRPCClient, "gateway": GatewayClient}


def run_once(transport, endpoint, clients, ops, value):
    """latencies (ns), wall seconds, client CPU seconds, revisions."""
    per_client = max(1, ops // clients)
    conns = [TRANSPORTS[transport](endpoint) for _ in range(clients)]
    for i, c in enumerate(conns):  # warm-up: connection set up, first request
        c.put(b"/bench-transport/warmup/%d" % i, value)
    latencies = [[] for _ in range(clients)]
    revisions = [[] for _ in range(clients)]
    errors = []
    barrier = threading.Barrier(clients + 1)

    def work(i):
        c = conns[i]
        key = b"/bench-transport/%s/%d" % (transport.encode(), i)
        mine, revs = latencies[i], revisions[i]
        barrier.wait()
        try:
            for _ in range(per_client):
                t0 = time.perf_counter_ns()
                revs.append(c.put(key, value))
                mine.append(time.perf_counter_ns() - t0)
        except Exception as e:  # reported after the run
            errors.append("client %d: %r" % (i, e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError("%s with %d clients failed: %s" % (transport, clients, errors[0]))
    return [x for l in latencies for x in l], wall, cpu, [r for l in revisions for r in l]


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


# --- a local etcd of its own --------------------------------------------------

def free_base_port():
    """A base port B with B..B+5 free on 127.0.0.1 (etcd-cluster.sh's layout)."""
    for _ in range(200):
        base = random.randrange(20000, 32000, 2)
        socks = []
        try:
            for p in range(base, base + 6):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no 6 free consecutive loopback ports")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Puts over gRPC and over the JSON gateway, "
        "same etcd member, p50/p99/throughput for each client count.",
        epilog=__doc__[__doc__.index("Install:"):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", help="an etcd member's client address host:port "
                        "(default: start a 3-member etcd with Scripts/etcd-cluster.sh and use its first member)")
    parser.add_argument("--clients", default="1,16", help="concurrent client counts, comma-separated (default 1,16)")
    parser.add_argument("--ops", type=int, default=2000, help="puts per configuration and repeat, split among the clients (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating gRPC/gateway runs per configuration (default 3)")
    parser.add_argument("--value-bytes", type=int, default=64, help="size of each put's value (default 64, about a process row)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args()
    try:
        client_counts = [int(c) for c in args.clients.split(",")]
        assert client_counts and all(1 <= c <= 1024 for c in client_counts)
    except (ValueError, AssertionError):
        parser.error("--clients takes counts from 1 to 1024, e.g. 1,16")
    if args.ops < 10 or args.repeat < 1:
        parser.error("--ops must be at least 10 and --repeat at least 1")
    try:
        import grpc  # noqa: F401
    except ImportError:
        sys.exit("needs grpcio: pip install grpcio")

    cluster_dir = None
    endpoint = args.endpoint
    if endpoint is None:
        if not os.access("/usr/bin/etcd", os.X_OK):
            sys.exit("etcd is not installed: apt-get install -y etcd-server etcd-client (or pass --endpoint)")
        cluster_dir = tempfile.mkdtemp(prefix="etcd-transport-")
    try:
        if cluster_dir is not None:
            started = subprocess.run([os.path.join(HERE, "etcd-cluster.sh"), "start", cluster_dir, "3",
                                      str(free_base_port())], capture_output=True, text=True)
            if started.returncode != 0:
                sys.exit("cannot start a local etcd: " + started.stderr.strip())
            endpoint = started.stdout.strip().split("=", 1)[1].split(",")[0]
        value = bytes(random.getrandbits(8) for _ in range(args.value_bytes))
        rows = []
        print("etcd puts, gRPC vs JSON gateway, member %s, %d puts x %d repeats per row" % (endpoint, args.ops, args.repeat))
        print("%-8s %-8s %7s %9s %9s %9s %13s" % ("api", "clients", "puts", "p50 ms", "p99 ms", "puts/s", "client CPU us"))
        for clients in client_counts:
            results = {t: ([], 0.0, 0.0) for t in TRANSPORTS}
            seen = set()
            for r in range(args.repeat):
                order = ["grpc", "gateway"] if r % 2 == 0 else ["gateway", "grpc"]
                for t in order:
                    lat, wall, cpu, revs = run_once(t, endpoint, clients, args.ops, value)
                    if len(set(revs)) != len(revs) or seen & set(revs):
                        raise RuntimeError("%s returned a revision twice" % t)
                    seen |= set(revs)
                    l, w, c = results[t]
                    results[t] = (l + lat, w + wall, c + cpu)
            by = {}
            for t in TRANSPORTS:
                lat, wall, cpu = results[t]
                lat.sort()
                row = {"api": t, "clients": clients, "puts": len(lat),
                       "p50Millis": percentile(lat, 0.5) / 1e6, "p99Millis": percentile(lat, 0.99) / 1e6,
                       "putsPerSecond": len(lat) / wall, "clientCPUMicrosPerPut": cpu / len(lat) * 1e6}
                by[t] = row
                rows.append(row)
                print("%-8s %-8d %7d %9.3f %9.3f %9.0f %13.0f" % (t, clients, row["puts"], row["p50Millis"],
                      row["p99Millis"], row["putsPerSecond"], row["clientCPUMicrosPerPut"]))
            g, w = by["grpc"], by["gateway"]
            print("  gateway/gRPC, %d client(s): p50 %.2fx, p99 %.2fx, throughput %.2fx" % (
                clients, w["p50Millis"] / g["p50Millis"], w["p99Millis"] / g["p99Millis"],
                w["putsPerSecond"] / g["putsPerSecond"]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
    finally:
        if cluster_dir is not None:
            subprocess.run([os.path.join(HERE, "etcd-cluster.sh"), "stop", cluster_dir], check=False)
            subprocess.run(["rm", "-rf", cluster_dir], check=False)


if __name__ == "__main__":
    main()

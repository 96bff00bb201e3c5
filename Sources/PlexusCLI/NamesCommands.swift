import ArgumentParser
import Cluster
import Foundation
import Lincheck
import NameService
import NamesCore

/// Where the name service is: shared by `cluster`, `ns` and `ps`.
struct NamesOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The name service: Plexus replicas (IP:PORT,...) or an etcd cluster (etcd://IP:PORT,...[/PREFIX]). Default: $PLEXUS_NAMES.",
        discussion: """
            IP:PORT,IP:PORT,... are `plexus node` name-service replicas; one reachable
            replica is enough (the client follows redirects to the leader).
            etcd://IP:PORT,IP:PORT,... are the client endpoints of an etcd v3 cluster; its
            keys live under /PREFIX (default /plexus), e.g.
            etcd://10.0.0.1:2379,10.0.0.2:2379/plexus.
            """,
        valueName: "SPEC"))
    var names: String?

    @Option(name: .long, help: "Give up after this many milliseconds (retries included).")
    var timeoutMs: Int = 5000

    func validate() throws {
        guard timeoutMs >= 1 else { throw ValidationError("--timeout-ms must be at least 1") }
        guard let resolved else {
            throw ValidationError("no name service given: pass --names IP:PORT,… (the replicas' addresses) "
                + "or --names etcd://IP:PORT,… (an etcd cluster), or set PLEXUS_NAMES")
        }
        do { _ = try NameServiceSpec(parsing: resolved) } catch { throw ValidationError("--names: \(error)") }
    }

    var resolved: String? { names ?? ProcessInfo.processInfo.environment["PLEXUS_NAMES"] }

    /// The backend the spec selects.
    func client() throws -> any NameServiceBackend {
        do {
            return try makeNameServiceBackend(resolved ?? "", timeoutMillis: timeoutMs)
        } catch {
            throw ValidationError("--names: \(error)")
        }
    }

    /// A client of Plexus replicas only (for `cluster status`).
    func replicaClient() throws -> NameClient {
        let spec: NameServiceSpec
        do { spec = try NameServiceSpec(parsing: resolved ?? "") } catch { throw ValidationError("--names: \(error)") }
        guard case .replicas(let list) = spec else {
            throw ValidationError("--names \(spec) is an etcd cluster; `plexus cluster status` shows Plexus name-service "
                + "replicas only: for etcd use `etcdctl --endpoints … endpoint status`")
        }
        do {
            return try NameClient(replicas: list, options: NameClient.Options(timeoutMillis: timeoutMs))
        } catch {
            throw ValidationError("--names: \(error)")
        }
    }
}

/// Runs a name-service call; a service error becomes one line on stderr and exit 1.
func serviceCall<T>(_ what: String, _ body: () throws(NameServiceError) -> T) throws -> T {
    do { return try body() } catch {
        writeAll(2, "plexus \(what): \(error)\n")
        throw ExitCode(1)
    }
}

func printable(_ value: [UInt8]) -> String {
    if let text = String(validating: value, as: UTF8.self), !text.contains(where: { $0.isNewline || $0 == "\0" }) { return text }
    return "0x" + value.map { String(format: "%02x", $0) }.joined()
}

struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Inspect the name-service cluster and change its replicas, one at a time.",
        subcommands: [ClusterStatus.self, ClusterAdd.self, ClusterRemove.self, ClusterMembers.self])
}

struct ClusterStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every replica: role, term, leader, commit index, quorum.",
        discussion: """
            Asks each replica for its own view (no quorum needed), so it also works when
            the cluster cannot serve. Replicas that do not answer are listed as
            unreachable. Exit status: 0 if a leader with a quorum exists, 1 otherwise.
            Plexus replicas only: for an etcd backend (--names etcd://…) use `etcdctl
            endpoint status` instead.

            Example:
              plexus cluster status --names 10.0.0.1:7401,10.0.0.2:7401,10.0.0.3:7401
            """)

    @OptionGroup var service: NamesOptions

    func run() throws {
        let client = try service.replicaClient()
        var addresses = client.replicaAddresses
        var statuses: [String: Result<ReplicaStatus, NameServiceError>] = [:]
        var i = 0
        while i < addresses.count {
            let a = addresses[i]
            do {
                let s = try client.status(of: a)
                statuses[a] = .success(s)
                // Learn the other replicas from the first answer.
                for other in s.addresses.values.sorted() where !addresses.contains(other) { addresses.append(other) }
            } catch { statuses[a] = .failure(error) }
            i += 1
        }
        print("REPLICA  ADDRESS                ROLE          TERM  LEADER  COMMIT  APPLIED  LOG    SNAPSHOT  QUORUM")
        var leaderSeen = false
        for a in addresses {
            switch statuses[a]! {
            case .success(let s):
                if s.role == "leader" && s.quorum.hasPrefix("leading") && s.storageFailure == nil { leaderSeen = true }
                let cols = [
                    "r\(s.id.rawValue)".padding(8), a.padding(22), s.role.padding(13), "\(s.term)".padding(5),
                    (s.leader.map { "r\($0.rawValue)" } ?? "-").padding(7), "\(s.commitIndex)".padding(7),
                    "\(s.appliedIndex)".padding(8), "\(s.lastLogIndex)".padding(6), "\(s.snapshotIndex)".padding(9),
                    s.storageFailure.map { "STORAGE FAILED: \($0)" } ?? s.quorum,
                ]
                print(cols.joined(separator: " "))
            case .failure(let error):
                print("?        \(a.padding(22)) unreachable: \(error)")
            }
        }
        if !leaderSeen {
            writeAll(2, "plexus cluster status: no replica leads with a quorum; the service cannot serve writes now\n")
            throw ExitCode(1)
        }
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

struct NamesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ns",
        abstract: "Read and write the cluster-wide namespace.",
        discussion: """
            Names are absolute paths (/jobs/42/rank-0). Directories are implicit: writing
            /a/b/c needs no /a/b. Every name has a version (1 at creation, +1 per write)
            that `cas` and `rm --version` compare against. Every read is linearizable: it
            sees every write that finished before it started, or fails with "no quorum".

            The service is Plexus's own replicas (--names IP:PORT,…) or an etcd v3 cluster
            (--names etcd://IP:PORT,…[/PREFIX], keys under PREFIX, default /plexus); every
            command works the same on both.

            Examples:
              export PLEXUS_NAMES=10.0.0.1:7401,10.0.0.2:7401,10.0.0.3:7401
              plexus ns put /config/size 1000
              plexus ns put /config/size 1000 --names etcd://10.0.0.1:2379,10.0.0.2:2379
              plexus ns get /config/size
              plexus ns cas /config/size --version 1 2000
              plexus ns ls /config
              plexus ns rm /config/size
              plexus ns watch /config
            """,
        subcommands: [NamesList.self, NamesGet.self, NamesPut.self, NamesCAS.self, NamesRemove.self, NamesWatch.self])
}

struct NamesList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List the children of a path (a trailing / marks a directory).")
    @OptionGroup var service: NamesOptions
    @Argument(help: "The path to list.") var path: String = "/"

    func run() throws {
        let client = try service.client()
        let children = try serviceCall("ns ls") { () throws(NameServiceError) in try client.list(path) }
        for child in children {
            print(child.name + (child.hasChildren ? "/" : "") + (child.isEntry && child.hasChildren ? "  (also a name)" : ""))
        }
    }
}

struct NamesGet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get", abstract: "Print a name's value, version and revisions.",
        discussion: "Exit status 1 with \"not found: NAME\" if the name does not exist.")
    @OptionGroup var service: NamesOptions
    @Argument(help: "The name, e.g. /config/size.") var name: String

    func run() throws {
        let client = try service.client()
        let entry = try serviceCall("ns get") { () throws(NameServiceError) in try client.get(name) }
        print("\(entry.name) = \(printable(entry.value))  (version \(entry.version), created at revision \(entry.createRevision), modified at revision \(entry.modRevision))")
    }
}

struct NamesPut: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put", abstract: "Create or overwrite a name.",
        discussion: """
            With --create, fail with "name exists" instead of overwriting. With
            --sequential, NAME is a prefix: the name created is NAME followed by the next
            number of its directory's sequence, ten digits (plexus ns put --sequential
            /queue/job- x creates /queue/job-0000000000, then /queue/job-0000000001, ...).
            """)
    @OptionGroup var service: NamesOptions
    @Flag(name: .long, help: "Only create: fail if the name exists.") var create = false
    @Flag(name: .long, help: "Create NAME + the next sequence number (NAME is a prefix).") var sequential = false
    @Argument(help: "The name.") var name: String
    @Argument(help: "The value (UTF-8 text).") var value: String

    func validate() throws {
        if create && sequential { throw ValidationError("--create and --sequential do not go together: a sequential name is always new") }
    }

    func run() throws {
        let client = try service.client()
        let bytes = Array(value.utf8)
        let entry = try serviceCall("ns put") { () throws(NameServiceError) in
            if sequential { return try client.createSequential(name, value: bytes, lease: nil) }
            return create ? try client.create(name, value: bytes) : try client.put(name, value: bytes)
        }
        print("\(entry.name) version \(entry.version) (revision \(entry.modRevision))")
    }
}

struct NamesCAS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cas", abstract: "Compare-and-set: overwrite a name only if it is at the given version.",
        discussion: """
            Read the version with `plexus ns get`. If someone wrote in between, this fails
            with "version mismatch … expected V found W" and changes nothing: re-read and
            retry.
            """)
    @OptionGroup var service: NamesOptions
    @Option(name: .long, help: "The version the name must have now.") var version: UInt64
    @Argument(help: "The name.") var name: String
    @Argument(help: "The new value (UTF-8 text).") var value: String

    func run() throws {
        let client = try service.client()
        let entry = try serviceCall("ns cas") { () throws(NameServiceError) in
            try client.compareAndSet(name, expectedVersion: version, value: Array(value.utf8))
        }
        print("\(entry.name) version \(entry.version) (revision \(entry.modRevision))")
    }
}

struct NamesRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Delete a name (only at --version V, if given).")
    @OptionGroup var service: NamesOptions
    @Option(name: .long, help: "Delete only if the name is at this version.") var version: UInt64?
    @Argument(help: "The name.") var name: String

    func run() throws {
        let client = try service.client()
        try serviceCall("ns rm") { () throws(NameServiceError) in try client.delete(name, expectedVersion: version) }
        print("deleted \(name)")
    }
}

struct NamesWatch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Print changes under a path as they happen.",
        discussion: """
            Starts at revision --from (default 1: every change still in the service's
            bounded event log, or in etcd's uncompacted history) and follows new changes
            until Ctrl-C or --count events. Without a prefix it also shows process-table
            and lease events. If the start revision has been dropped from the log (etcd:
            compacted), it says which revision to restart from.
            """)
    @OptionGroup var service: NamesOptions
    @Option(name: .long, help: "First revision to show.") var from: UInt64 = 1
    @Option(name: .long, help: "Stop after this many events.") var count: Int?
    @Argument(help: "Only names under this path.") var prefix: String?

    func run() throws {
        let client = try service.client()
        var next = from
        var shown = 0
        while count.map({ shown < $0 }) ?? true {
            let batch = try serviceCall("ns watch") { () throws(NameServiceError) -> WatchBatch in
                try client.watch(fromRevision: next, prefix: prefix, limit: 256)
            }
            for event in batch.events where count.map({ shown < $0 }) ?? true {
                writeAll(1, "\(event.revision) \(describe(event.kind))\n")
                shown += 1
            }
            next = batch.nextRevision
            if batch.events.isEmpty { usleep(200_000) }
        }
    }

    func describe(_ kind: WatchEvent.Kind) -> String {
        switch kind {
        case .nameCreated(let e): "created \(e.name) = \(printable(e.value)) (version \(e.version))"
        case .nameUpdated(let e): "updated \(e.name) = \(printable(e.value)) (version \(e.version))"
        case .nameDeleted(let name, let lease): "deleted \(name)" + (lease.map { " (\($0) ended)" } ?? "")
        case .processChanged(let p): "process \(p.pid.rawValue) \(p.state) on \(p.node) at \(p.address)"
        case .processReaped(let pid): "process \(pid.rawValue) reaped"
        case .leaseEnded(let lease, let expired): "\(lease) \(expired ? "expired" : "revoked")"
        }
    }
}

struct ProcessList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps", abstract: "List the global process table kept by the name service.",
        discussion: """
            One row per global PID: the node it runs on, its transport address, its state
            (starting, running, migrating, exited, lost), its parent and exit status. A
            process is lost when the lease of the daemon that ran it ended.

            Examples:
              plexus ps --names 10.0.0.1:7401
              plexus ps --names etcd://10.0.0.1:2379
            """)
    @OptionGroup var service: NamesOptions

    func run() throws {
        let client = try service.client()
        let table = try serviceCall("ps") { () throws(NameServiceError) in try client.processes() }
        print("PID     STATE      NODE                   ADDRESS                PARENT  EXIT")
        for p in table {
            print(["\(p.pid.rawValue)".padding(7), p.state.description.padding(10), p.node.padding(22), p.address.padding(22),
                   (p.parent.map { "\($0.rawValue)" } ?? "-").padding(7), p.exitStatus.map { "\($0)" } ?? "-"]
                .joined(separator: " "))
        }
    }
}

struct LincheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lincheck", abstract: "Check a recorded client history for linearizability.",
        discussion: """
            FILE is a Jepsen etcd log (--model register), Plexus JSON lines (register or
            names), or Jepsen EDN maps (--model kv), one event per line:
              {"client":1,"type":"invoke","op":"put","key":"/a","value":"x"}
              {"client":1,"type":"ok","op":"put","version":1}
              {:process 3, :type :invoke, :f :append, :key "9", :value "x 3 0 y"}
            type is invoke, ok, fail (did not happen) or info (unknown: timed out).
            The names model is the name service's: put/get/cas/delete/create,
            create-sequential, list and allocate-pid. kv (get/put/append) is checked key
            by key on one worker per CPU and names every key that is not linearizable.
            Prints the verdict; if the history is not linearizable, the longest prefix that
            is and the operations that cannot come next.
            Exit status: 0 linearizable, 1 not linearizable, 2 bad input,
            3 undecided: "UNKNOWN (time limit)" when --time-limit ran out (or
            "UNKNOWN (state limit)" when the search bound did) before a verdict.

            Example:
              plexus lincheck --model names history.jsonl
              plexus lincheck --model kv --time-limit 60 history.edn
            """)
    @Option(name: .long, help: "register (a single read/write/cas register), names (the name-service model) or kv (get/put/append per key).")
    var model: String
    @Option(name: .long, help: "Give up after this many seconds with UNKNOWN (time limit), exit status 3 (default 300).")
    var timeLimit: Double = 300
    @Argument(help: "The history file.") var file: String

    func validate() throws {
        guard ["register", "names", "kv"].contains(model) else {
            throw ValidationError("unknown --model '\(model)': use register, names or kv")
        }
        guard timeLimit > 0, timeLimit.isFinite else {
            throw ValidationError("--time-limit must be a positive number of seconds, e.g. --time-limit 60")
        }
    }

    func run() throws {
        let check: FileCheck
        let options = CheckOptions(maxStates: defaultFileCheckOptions.maxStates, timeout: .seconds(timeLimit))
        do { check = try checkHistoryFile(path: file, model: model, options: options) } catch {
            writeAll(2, "plexus lincheck: \(error)\n")
            throw ExitCode(2)
        }
        print(check.report)
        switch check.verdict {
        case .linearizable: return
        case .notLinearizable: throw ExitCode(1)
        case .unknown: throw ExitCode(3)
        }
    }
}

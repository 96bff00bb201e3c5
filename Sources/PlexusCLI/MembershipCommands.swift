import ArgumentParser
import Cluster
import Foundation
import NameService
import NamesCore
import Transport

/// `plexus cluster add|remove|members`: single-server membership change of the
/// replicated name service (Raft dissertation §4.1), one replica at a time.

struct ClusterAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a name-service replica (one at a time).",
        discussion: """
            First start the new replica so that it waits to be added:
              plexus node --listen IP:PORT --replica-id 4 --join-existing \\
                  --data-dir /var/lib/plexus/r4 \\
                  --replicas 1=10.0.0.1:7401,2=10.0.0.2:7401,3=10.0.0.3:7401,4=10.0.0.4:7401
            then add it through any current member:
              plexus cluster add --id 4 --address 10.0.0.4:7401 --names 10.0.0.1:7401
            It becomes a voting member at once (the majority grows with it) and catches up
            from the leader; `plexus cluster status` shows its progress. Every member
            learns its address from the change itself. Add the next replica after this one
            is done.
            """)

    @Option(name: .long, help: "The new replica's id (its --replica-id).") var id: UInt64
    @Option(name: .long, help: "Where the new replica listens (IP:PORT, its entry in its --replicas).") var address: String
    @Flag(name: .long, help: "Do not first check that the replica answers at --address and waits to be added.")
    var noCheck = false
    @OptionGroup var service: NamesOptions

    func validate() throws {
        guard replicaIDRange.contains(id) else { throw ValidationError("--id must be between 1 and \(replicaIDRange.upperBound)") }
        let parsed: SocketAddress
        do { parsed = try SocketAddress(parsing: address) } catch { throw ValidationError("--address: \(error)") }
        guard parsed.port != 0 else { throw ValidationError("--address: give the port the new replica listens on, not 0") }
    }

    func run() throws {
        let client = try service.replicaClient()
        if !noCheck { try checkWaiting(client) }
        let outcome = try serviceCall("cluster add") { () throws(NameServiceError) in
            try client.addReplica(ReplicaID(id), address: address)
        }
        print("added r\(id) at \(address) (configuration entry \(outcome.index))")
        printMembership(outcome)
        print("r\(id) catches up from the leader; `plexus cluster status` shows its progress")
    }

    /// Refuses early, with what to do, when nothing (or the wrong replica)
    /// answers at --address: adding an unreachable replica grows the majority
    /// without adding a live member.
    func checkWaiting(_ client: NameClient) throws {
        let status: ReplicaStatus
        do { status = try client.status(of: address) } catch {
            writeAll(2, """
                plexus cluster add: no name-service replica answers at \(address) (\(error)).
                Start it first, e.g.:
                  plexus node --listen IP:PORT --replica-id \(id) --data-dir DIR --join-existing --replicas MEMBERS,\(id)=\(address)
                or pass --no-check to add it anyway (the majority then counts a replica that is down).

                """)
            throw ExitCode(1)
        }
        guard status.id.rawValue == id else {
            writeAll(2, "plexus cluster add: \(address) is replica r\(status.id.rawValue), not r\(id); "
                + "give the address of the replica started with --replica-id \(id)\n")
            throw ExitCode(1)
        }
    }
}

struct ClusterRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Remove a name-service replica (one at a time).",
        discussion: """
            The replica leaves the voting members (the majority shrinks with it) and then
            answers every request with "removed"; stop its process afterwards. Removing
            the leader makes it step down once the change is committed.

            Example:
              plexus cluster remove --id 3 --names 10.0.0.1:7401,10.0.0.2:7401
            """)

    @Option(name: .long, help: "The id of the replica to remove.") var id: UInt64
    @OptionGroup var service: NamesOptions

    func validate() throws {
        guard replicaIDRange.contains(id) else { throw ValidationError("--id must be between 1 and \(replicaIDRange.upperBound)") }
    }

    func run() throws {
        let client = try service.replicaClient()
        let outcome = try serviceCall("cluster remove") { () throws(NameServiceError) in try client.removeReplica(ReplicaID(id)) }
        print("removed r\(id) (configuration entry \(outcome.index)); stop its `plexus node` process now")
        printMembership(outcome)
    }
}

struct ClusterMembers: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "members",
        abstract: "List the voting members, their addresses and the majority, as the leader sees them.",
        discussion: """
            Example:
              plexus cluster members --names 10.0.0.1:7401
            """)

    @OptionGroup var service: NamesOptions

    func run() throws {
        let client = try service.replicaClient()
        let status = try serviceCall("cluster members") { () throws(NameServiceError) in try client.leaderStatus() }
        printMembership(MembershipOutcome(index: status.commitIndex, members: status.members, addresses: status.addresses))
        print("leader: r\(status.id.rawValue)")
    }
}

private func printMembership(_ outcome: MembershipOutcome) {
    print("members: \(outcome.members.map { "r\($0.rawValue)" }.joined(separator: " ")) "
        + "(\(outcome.members.count) replicas, \(outcome.quorum) needed for a quorum)")
    for member in outcome.members {
        print("  r\(member.rawValue)  \(outcome.addresses[member] ?? "(address unknown)")")
    }
}

import NamesCore

/// Errors a name-service client sees. Each message says what happened and
/// what to do; `mayHaveTakenEffect` tells a caller (and a history recorder)
/// whether a write whose call failed could still have been applied.
public enum NameServiceError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The service answered: the request was applied (or checked) and refused,
    /// e.g. a CAS version mismatch or a missing name. Definite.
    case rejected(NameError)
    /// The replicas the client reached cannot see a majority of the cluster.
    /// Writes and linearizable reads are refused rather than served from a
    /// minority; restart or reconnect replicas until `needed` are reachable.
    case noQuorum(reachable: Int, members: Int, needed: Int, mayHaveTakenEffect: Bool)
    /// No replica could be reached at all.
    case unreachable(String)
    /// The connection to a replica broke while a request was outstanding.
    case connectionLost(String)
    /// The deadline passed before the service gave a definite answer.
    case timedOut(String, mayHaveTakenEffect: Bool)
    /// A replica refuses to write because its disk failed (full, read-only, I/O
    /// error). Fix the disk, then restart that replica.
    case storage(String)
    /// A replica or client broke the protocol (bad frame, undecodable reply).
    case protocolViolation(String)
    /// Bad arguments to a client call or bad configuration.
    case invalidArgument(String)

    /// False only when the service certainly did not apply the request.
    public var mayHaveTakenEffect: Bool {
        switch self {
        case .noQuorum(_, _, _, let maybe), .timedOut(_, let maybe): maybe
        case .connectionLost: true
        case .rejected, .unreachable, .storage, .protocolViolation, .invalidArgument: false
        }
    }

    public var description: String {
        switch self {
        case .rejected(let error):
            return error.description
        case .noQuorum(let reachable, let members, let needed, let maybe):
            return "no quorum: \(reachable) of \(members) replicas reachable, \(needed) needed; "
                + "start or reconnect name-service replicas"
                + (maybe ? " (the request may or may not have taken effect)" : "")
        case .unreachable(let why):
            return "name service unreachable: \(why)"
        case .connectionLost(let why):
            return "lost the connection to a name-service replica: \(why) (the request may or may not have taken effect)"
        case .timedOut(let what, let maybe):
            return "timed out: \(what)" + (maybe ? " (the request may or may not have taken effect)" : "")
        case .storage(let why):
            return "replica storage failure: \(why)"
        case .protocolViolation(let why):
            return "name-service protocol violation: \(why)"
        case .invalidArgument(let why):
            return "invalid argument: \(why)"
        }
    }
}

/// Why a replica's disk refused a write or its files could not be read back.
public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A system call failed on a file of the data directory.
    case system(call: String, path: String, errno: Int32)
    /// A file is damaged beyond its tail (e.g. the snapshot's checksum fails)
    /// and cannot be repaired automatically.
    case corrupt(path: String, reason: String)

    public var description: String {
        switch self {
        case .system(let call, let path, let e):
            let advice: String
            switch e {
            case ENOSPC, EDQUOT: advice = "the disk is full: free space, then restart the replica"
            case EROFS: advice = "the file system is read-only: remount it read-write or use another --data-dir"
            case EACCES, EPERM: advice = "permission denied: make the data directory writable by this user"
            case EIO: advice = "I/O error: the disk may be failing; move the replica to another disk"
            default: advice = "check the data directory"
            }
            return "\(call) failed on \(path): \(String(cString: strerror(e))) (errno \(e)); \(advice)"
        case .corrupt(let path, let reason):
            return "\(path) is corrupt: \(reason); restore it from a backup or remove the replica's data directory "
                + "so that it rejoins empty and receives a snapshot from the leader"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

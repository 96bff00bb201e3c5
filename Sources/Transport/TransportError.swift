import Wire

/// Global identity of a Plexus process (its global PID). The layers above
/// the transport address peers only by this, never by host:port, so that a
/// process can move and be found again.
public typealias ProcessID = UInt64

/// Errors of the transport layer. Messages say which peer and what to do.
public enum TransportError: Error, Sendable, CustomStringConvertible {
    /// An address did not parse as HOST:PORT.
    case badAddress(String, reason: String)
    /// A system call failed; `call` names it, `errno` is its error.
    case system(call: String, errno: Int32, context: String)
    /// The peer could not be reached within the time allowed.
    case unreachable(address: String, reason: String)
    /// The directory does not know where a process is.
    case unknownPeer(ProcessID)
    /// The peer refused our hello (other job, other protocol version).
    case refused(address: String, reason: String)
    /// The connection to a peer broke or was closed.
    case peerLost(ProcessID, reason: String)
    /// The link to a peer lost or repeated a frame (`LinkFault`): it is
    /// broken, and the job cannot rely on it any more.
    case linkBroken(ProcessID, LinkFault)
    /// The peer violated the wire protocol.
    case protocolViolation(String)
    /// A wait for a reply or a connection ran out of time.
    case timedOut(String)
    /// This transport was closed.
    case closed

    public var description: String {
        switch self {
        case .badAddress(let a, let reason):
            return "bad address '\(a)': \(reason) (expected HOST:PORT, e.g. 127.0.0.1:7400)"
        case .system(let call, let e, let context):
            return "\(call) failed for \(context): \(String(cString: strerror(e))) (errno \(e))"
        case .unreachable(let a, let reason):
            return "cannot reach \(a): \(reason); is a plexus node listening there?"
        case .unknownPeer(let pid):
            return "no address is known for process \(pid); it has not registered or has exited"
        case .refused(let a, let reason):
            return "\(a) refused the connection: \(reason)"
        case .peerLost(let pid, let reason):
            return "lost connection to process \(pid): \(reason)"
        case .linkBroken(let pid, let fault):
            return "the link to process \(pid) broke: \(fault)"
        case .protocolViolation(let why):
            return "wire protocol violation: \(why)"
        case .timedOut(let what):
            return "timed out: \(what)"
        case .closed:
            return "the transport is closed"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The first frame on every connection. It names the job (so processes of two
/// jobs on one machine can never talk to each other by accident), the sender's
/// global process identity and the protocol version it speaks.
public struct Hello: Equatable, Sendable {
    /// The version this build speaks; also carried in every frame header.
    public var protocolVersion: UInt16
    public var job: String
    public var sender: UInt64
    /// What the sender is: a job process, a node daemon, a launcher, a client.
    public var role: String

    public init(job: String, sender: UInt64, role: String, protocolVersion: UInt16 = Frame.version) {
        self.protocolVersion = protocolVersion
        self.job = job
        self.sender = sender
        self.role = role
    }

    public static let maxJobName = 256

    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.u16(protocolVersion)
        w.string(job)
        w.u64(sender)
        w.string(role)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> Hello {
        var r = ByteReader(bytes)
        let v = try r.u16("protocol version")
        let job = try r.string("job name", limit: maxJobName)
        let sender = try r.u64("sender")
        let role = try r.string("role", limit: 64)
        try r.expectEnd("hello")
        return Hello(job: job, sender: sender, role: role, protocolVersion: v)
    }

    /// Why the receiver refuses this hello, or nil to accept it. The reason is
    /// sent back to the dialer so that both sides can print the same sentence.
    public func refusal(expectedJob: String) -> String? {
        if protocolVersion != Frame.version {
            return "peer \(sender) speaks wire protocol version \(protocolVersion), this process speaks \(Frame.version): run the same Plexus build on every node"
        }
        if job != expectedJob {
            return "peer \(sender) belongs to job '\(job)', this process to job '\(expectedJob)': the connection reached a process of another job"
        }
        return nil
    }
}

/// The coherence protocols a job can choose with `--protocol NAME`.
/// Tests iterate `ProtocolRegistry.names` to run the memory-model suite over
/// every registered protocol.
public enum ProtocolRegistry {
    public typealias Factory = @Sendable (CoherenceConfiguration) -> any CoherenceProtocol

    /// One line per protocol, in the order help text lists them.
    public static let protocols: [(name: String, model: MemoryModel, make: Factory)] = [
        entry(SCProtocol.self),
        entry(LRCProtocol.self),
        entry(HLRCProtocol.self),
        entry(IvyCentralProtocol.self),
    ]

    public static var names: [String] { protocols.map(\.name) }

    /// A fresh core of the protocol called `name`.
    public static func make(_ name: String, configuration: CoherenceConfiguration) throws(MemoryError) -> any CoherenceProtocol {
        guard let entry = protocols.first(where: { $0.name == name }) else {
            throw .unknownProtocol(name: name, known: names)
        }
        return entry.make(configuration)
    }

    private static func entry<P: CoherenceProtocol>(_: P.Type) -> (name: String, model: MemoryModel, make: Factory) {
        (P.name, P.model, { P(configuration: $0) })
    }
}

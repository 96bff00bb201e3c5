import CFault

/// What the application may do with a page: the protection of that page in
/// the application view. Ordered: `.none < .read < .readWrite`.
public enum PageAccess: Int32, Sendable, Comparable, CustomStringConvertible {
    case none = 0
    case read = 1
    case readWrite = 2

    /// The matching `cfault_protection` value (the raw values are the same).
    var cProtection: Int32 { rawValue }

    /// True if an access of this kind is allowed (`isWrite` false: a load).
    public func allows(write isWrite: Bool) -> Bool {
        isWrite ? self == .readWrite : self >= .read
    }

    public static func < (lhs: PageAccess, rhs: PageAccess) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .none: "none"
        case .read: "read"
        case .readWrite: "read-write"
        }
    }
}

/// The order in which the engine carries out one step's effects.
///
/// A core lists its effects in an order that is correct when performed one
/// by one (see `MemoryEffect`). Performed literally, a batch of pages costs
/// one system call per page: a step that grants four pages downgrades and
/// copies them one after the other, four `mprotect`s. The plan defers three
/// kinds of effect within the step, so that a run of pages costs one call
/// where the pages allow it:
/// - protection changes of adjacent runs with the same access merge into
///   one `mprotect` (under load one page's downgrade costs about 12 µs,
///   mostly the TLB shoot-down, which a run shares; MEASUREMENTS.md and
///   Papers/ivy-remote-fault.md);
/// - messages are encoded, and pages copied into them, after the
///   protections listed before them have taken effect;
/// - wake-ups follow the protections they depend on.
///
/// Why this is the same as the listed order, to every observer:
/// - every message is encoded after every protection listed before it,
///   and messages keep their order, so no peer learns of a change before
///   it took effect; a deferred downgrade only lets the application keep an
///   access a little longer while no message about it has left;
/// - a page is copied neither after it became writable again nor after new
///   contents were installed over it (either encodes the pending messages
///   first), so a copy holds what it would have held in order;
/// - a page is installed only once every protection of it listed before the
///   install took effect, and before any listed after it;
/// - a wake-up follows every protection listed before it; a woken thread
///   whose access is not there yet faults again, which is harmless;
/// - a synchronisation hand-off follows everything listed before it.
/// `EffectPlanTests` checks these on random effect lists.
public enum PlannedOperation: Sendable, Equatable {
    /// One `mprotect`; `effects` are the indices of the merged `.setProtection`s.
    case protect(pages: Range<Int>, PageAccess, effects: [Int])
    /// The `.send`, `.sendWithPage`, `.sendDiff`, `.sendStoredDiffs`,
    /// `.installPage`, `.applyDiff`, `.makeTwin`, `.storeDiff`,
    /// `.dropStoredDiffs`, `.syncReady` or `.record` at this index.
    case perform(Int)
    /// Wake the waiters of the page of the `.completeFaults` at this index.
    case complete(Int)
}

extension PlannedOperation {
    public static func plan(_ effects: [MemoryEffect]) -> [PlannedOperation] {
        var out: [PlannedOperation] = []
        out.reserveCapacity(effects.count)
        var protection: (pages: Range<Int>, access: PageAccess, effects: [Int])? = nil
        var messages: [Int] = []
        var copied: [Int] = []
        var completions: [Int] = []

        func applyProtection() {
            guard let p = protection else { return }
            out.append(.protect(pages: p.pages, p.access, effects: p.effects))
            protection = nil
        }
        func encodeMessages() {
            applyProtection()
            out += messages.map { .perform($0) }
            messages.removeAll()
            copied.removeAll()
        }
        func wakeWaiters() {
            applyProtection()
            out += completions.map { .complete($0) }
            completions.removeAll()
        }
        func copyPending(_ pages: Range<Int>) -> Bool { copied.contains { pages.contains($0) } }

        for (i, e) in effects.enumerated() {
            switch e {
            case .send:
                messages.append(i)
            case .sendWithPage(_, let page, _):
                messages.append(i)
                copied.append(page)
            case .sendDiff(_, let page, _):
                // Reads the page and its twin, like a copy.
                messages.append(i)
                copied.append(page)
            case .sendStoredDiffs:
                // Reads only stored diffs, never the page.
                messages.append(i)
            case .dropStoredDiffs:
                // Replies listed before it read what it drops.
                encodeMessages()
                out.append(.perform(i))
            case .installPage(let page, _), .applyDiff(let page, _), .makeTwin(let page), .storeDiff(let page, _):
                // A twin replaced, or contents changed, after an earlier
                // copy or diff of the page would change what that holds.
                if copyPending(page..<page + 1) { encodeMessages() }
                if let p = protection, p.pages.contains(page) { applyProtection() }
                out.append(.perform(i))
            case .setProtection(let pages, let access):
                if access == .readWrite && copyPending(pages) { encodeMessages() }
                if let p = protection, p.access == access,
                   p.pages.upperBound == pages.lowerBound || pages.upperBound == p.pages.lowerBound {
                    protection = (min(p.pages.lowerBound, pages.lowerBound)..<max(p.pages.upperBound, pages.upperBound),
                                  access, p.effects + [i])
                } else {
                    applyProtection()
                    protection = (pages, access, [i])
                }
            case .completeFaults:
                completions.append(i)
            case .syncReady:
                wakeWaiters()
                encodeMessages()
                out.append(.perform(i))
            case .record:
                out.append(.perform(i))
            }
        }
        wakeWaiters()
        encodeMessages()
        return out
    }
}

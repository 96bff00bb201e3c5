import Foundation
import Logging
import NameService
import NamesCore
import Transport

/// Keeps name-service leases alive from one thread: every lease it holds gets
/// a keep-alive every third of its TTL, so that two keep-alives in a row can
/// be lost before the lease ends.
///
/// Node daemons hold one lease each (their ephemeral `/nodes/...` name is
/// bound to it); the launcher holds one per job (every process row of the job
/// is bound to it). When the holder dies, keep-alives stop, the lease ends,
/// its names go and its processes are marked `lost` — the service's leader
/// decides, and watchers see it.
///
/// A lease the service says has already ended (the holder was cut off longer
/// than the TTL) is reported once through `onEnded` and dropped; the holder
/// decides what to do (a node takes a new lease and re-creates its name).
public final class LeaseKeeper: @unchecked Sendable {
    struct Held: Sendable {
        var ttlMillis: UInt64
        /// Called on the keeper's thread when the service says the lease has ended.
        var onEnded: @Sendable (LeaseID) -> Void
    }

    private let client: any NameServiceBackend
    private let log: Logger
    private let held = Locked<[LeaseID: Held]>([:])
    private let wake = DispatchSemaphore(value: 0)
    private let running = Locked(true)
    private let thread: Thread

    /// `client` must be used by this keeper only (the client serialises its
    /// writes, and a keep-alive must not queue behind another caller's retries).
    public init(client: any NameServiceBackend, logger: Logger, name: String = "plexus-lease-keeper") {
        self.client = client
        self.log = logger
        let box = Locked<LeaseKeeper?>(nil)
        thread = Thread { box.value?.loop() }
        thread.name = name
        box.withLock { $0 = self }
        thread.start()
    }

    public func hold(_ lease: LeaseID, ttlMillis: UInt64, onEnded: @escaping @Sendable (LeaseID) -> Void = { _ in }) {
        held.withLock { $0[lease] = Held(ttlMillis: ttlMillis, onEnded: onEnded) }
        wake.signal()
    }

    /// Stops keeping leases alive; leases still held end after their TTL.
    /// Does not wait for a keep-alive in flight (it may take up to its
    /// client's timeout against an unavailable service); the thread exits
    /// after it.
    public func stop() {
        guard running.withLock({ let was = $0; $0 = false; return was }) else { return }
        wake.signal()
    }

    private func loop() {
        var due: [LeaseID: UInt64] = [:]
        while running.value {
            let now = monotonicMillis()
            let current = held.value
            due = due.filter { current[$0.key] != nil }
            for (id, h) in current where due[id] == nil { due[id] = now + max(1, h.ttlMillis / 3) }
            for (id, h) in current where due[id]! <= now {
                guard running.value else { return }
                do {
                    try client.keepAlive(id)
                    due[id] = monotonicMillis() + max(1, h.ttlMillis / 3)
                } catch .rejected(.leaseNotFound) {
                    log.warning("\(id) has ended in the name service before its holder let it go")
                    held.withLock { $0[id] = nil }
                    due[id] = nil
                    h.onEnded(id)
                } catch {
                    // No quorum or unreachable: keep trying, sooner than usual.
                    log.warning("cannot keep \(id) alive: \(error)")
                    due[id] = monotonicMillis() + max(1, h.ttlMillis / 6)
                }
            }
            let next = due.values.min().map { $0 > monotonicMillis() ? Int($0 - monotonicMillis()) : 0 } ?? 60_000
            _ = wake.wait(timeout: .now() + .milliseconds(min(next, 60_000)))
        }
    }
}

/// A node's registration in the name service: a lease and the ephemeral name
/// `/nodes/<address>` bound to it. If the lease ends while the node lives
/// (cut off from the service for longer than the TTL), a new one is taken and
/// the name re-created.
public final class NodeRegistration: @unchecked Sendable {
    public let name: String
    public let ttlMillis: UInt64
    private let client: any NameServiceBackend
    /// For the revocation at shutdown: a stopping node does not wait long.
    private let quick: any NameServiceBackend
    private let keeper: LeaseKeeper
    private let log: Logger
    private let current = Locked<LeaseID?>(nil)
    private let stopped = Locked(false)

    /// Registers `address` under `/nodes/` in the background (the service may
    /// still be electing a leader when the node starts) and keeps it there.
    /// Throws only for a malformed replica list.
    /// `names`: a name-service spec (see `NameServiceSpec`).
    public init(names: String, address: String, ttlMillis: UInt64, logger: Logger) throws(NameServiceError) {
        name = "/nodes/" + address.replacingOccurrences(of: "/", with: "_")
        self.ttlMillis = ttlMillis
        log = logger
        client = try makeNameServiceBackend(names, timeoutMillis: 5000)
        quick = try makeNameServiceBackend(names, timeoutMillis: 1000)
        keeper = LeaseKeeper(client: try makeNameServiceBackend(names, timeoutMillis: Int(ttlMillis)),
                             logger: logger, name: "plexus-node-lease")
        let registering = Thread { [self] in renew(value: address, attempts: 24) }
        registering.name = "plexus-node-register"
        registering.start()
    }

    public var lease: LeaseID? { current.value }

    private func register(value: String) throws(NameServiceError) {
        let lease = try client.grantLease(ttlMillis: ttlMillis)
        // A previous incarnation's name may still be there until its lease ends.
        do {
            _ = try client.createEphemeral(name, value: Array(value.utf8), lease: lease)
        } catch .rejected(.nameExists) {
            try client.delete(name, expectedVersion: nil)
            _ = try client.createEphemeral(name, value: Array(value.utf8), lease: lease)
        }
        current.withLock { $0 = lease }
        keeper.hold(lease, ttlMillis: ttlMillis) { [weak self] _ in self?.renew(value: value) }
    }

    /// Registers, retrying (at most `attempts` times, 5 s apart at most) while
    /// the service is unavailable.
    private func renew(value: String, attempts: Int = 12) {
        var backoff = 250
        for attempt in 1...attempts {
            guard !stopped.value else { return }
            do {
                try register(value: value)
                log.info("registered \(name) in the name service")
                return
            } catch {
                log.warning("cannot register \(name) (attempt \(attempt) of \(attempts)): \(error)")
            }
            _ = DispatchSemaphore(value: 0).wait(timeout: .now() + .milliseconds(backoff))
            backoff = min(backoff * 2, 5000)
        }
        log.error("gave up registering \(name); restart the node once the name service is back")
    }

    /// Ends the registration: the name goes at once.
    public func stop() {
        stopped.withLock { $0 = true }
        keeper.stop()
        if let lease = current.value { try? quick.revokeLease(lease) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Memory
import Plexus

// A rank that crashes must show its backtrace: the
// last rank crashes in a distinctively named function after it joined and
// used shared memory; the others wait for the launcher to stop them.
// Driven from Tests/MemoryIntegrationTests/CrashReportTests.swift.
//
//   crash-fatal   fatalError()                      SIGILL
//   crash-nil     a nil Optional force-unwrapped    SIGILL
//   crash-null    a store near address 0            SIGSEGV (through Plexus's handler)
//   crash-abort   abort()                           SIGABRT
//
// They also run without shared memory (`--shared-memory 0`), for
// comparison: then the shared-memory steps are skipped.

func crashScenarios() -> [(name: String, ranks: String, run: (Plexus, Options) throws -> Bool)] {
    ["fatal", "nil", "null", "abort"].map { kind in ("crash-\(kind)", "1+", { px, o in try crash(px, kind, o) }) }
}

/// Whether `scenario` runs in a job without shared memory too.
func runsWithoutSharedMemory(_ scenario: String) -> Bool {
    crashScenarios().contains { $0.name == scenario }
}

private func crash(_ px: Plexus, _ kind: String, _ o: Options) throws -> Bool {
    if px.memory != nil {
        // The fault path and the engine's threads have been at work.
        let words = try px.allocate(Int.self, count: px.size * 1024, name: "before-crash", alignment: px.pageSize!)
        store(words.base + px.rank * 1024, px.rank + 1)
        try px.barrier()
        for r in 0..<px.size where load(words.base + r * 1024) != r + 1 {
            say("FAIL crash-\(kind): shared memory did not work before the crash")
            exit(1)
        }
        // Every rank's loads above are served before any rank crashes: a
        // crashing process's threads stop while its backtrace is written,
        // so a page it owns would not be served to a rank still loading.
        try px.barrier()
    } else {
        try px.barrier()
    }
    // `others=crash`: every rank crashes, as when all ranks of an SPMD
    // program reach the same bug.
    let crasher = o.others == "crash" ? px.rank : px.size - 1
    guard px.rank == crasher else { return try waitForTheLauncher(px, crasher: crasher, "crash-\(kind)") }
    say("rank \(crasher) crashes (\(kind))")
    switch kind {
    case "fatal": plexusCrashScenarioCallsFatalError()
    case "nil": plexusCrashScenarioUnwrapsNil(nil)
    case "null": plexusCrashScenarioStoresThroughNull(0x10)
    default: plexusCrashScenarioCallsAbort()
    }
    say("FAIL crash-\(kind): rank \(crasher) did not crash")
    exit(1)
}

// The functions a backtrace must name. Never inlined, so that each is a
// frame of its own.

@inline(never)
func plexusCrashScenarioCallsFatalError() {
    fatalError("the crash-fatal scenario calls fatalError")
}

@inline(never)
func plexusCrashScenarioUnwrapsNil(_ value: Int?) {
    say("unwrapped \(value!)")
}

@inline(never)
func plexusCrashScenarioStoresThroughNull(_ address: UInt) {
    store(UnsafeMutablePointer<Int>(bitPattern: address)!, 1)
}

@inline(never)
func plexusCrashScenarioCallsAbort() {
    abort()
}

// ring: passes a token around every rank of a job a few times; each rank adds
// its rank to the token, so the final value proves every hop happened.
//   plexus run -n 4 .build/debug/ring [laps]
import Foundation
import Plexus

if CommandLine.arguments.contains("--help") || CommandLine.arguments.contains("-h") {
    print("usage: plexus run -n N ring [laps, default 3]: passes a token around every rank; each adds its rank")
    exit(0)
}

do {
    let px = try Plexus.join()
    let laps = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 3 : 3
    let next = (px.rank + 1) % px.size
    print("rank \(px.rank) of \(px.size) (global PID \(px.pid)) on \(ProcessInfo.processInfo.hostName)")
    var token = 0
    for lap in 0..<laps {
        if px.rank == 0 {
            try px.send(withUnsafeBytes(of: token) { Array($0) }, to: next)
        }
        let (from, bytes) = try px.receive()
        token = bytes.withUnsafeBytes { $0.loadUnaligned(as: Int.self) } + px.rank
        if px.rank != 0 {
            try px.send(withUnsafeBytes(of: token) { Array($0) }, to: next)
        } else {
            print("lap \(lap): token came back from rank \(from) with value \(token)")
        }
    }
    if px.rank == 0 {
        let expected = laps * (px.size * (px.size - 1) / 2)
        print(token == expected ? "ring ok: \(token) == \(expected)" : "ring BROKEN: \(token) != \(expected)")
        if token != expected { exit(1) }
    }
    try px.finalize()
} catch {
    FileHandle.standardError.write(Data("ring: \(error)\n".utf8))
    exit(1)
}

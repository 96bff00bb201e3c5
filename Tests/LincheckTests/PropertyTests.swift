import Testing
@testable import Lincheck
import Transport

/// The reference checker, straight from the definition: try every order of the operations
/// (depth-first over permutations, abandoning an order as soon as its prefix breaks real time or
/// the model). No memoisation, no event list, no partitioning. Indefinite operations may be left
/// out; an operation may come next only if no unplaced definite operation returned before it
/// was invoked.
func bruteForceLinearizable<M: Model>(_ model: M, _ ops: [HistoryOperation<M.Input, M.Output>]) -> Bool {
    var placed = [Bool](repeating: false, count: ops.count)
    func extend(_ state: M.State, definiteLeft: Int) -> Bool {
        if definiteLeft == 0 { return true }
        for i in ops.indices where !placed[i] {
            let blocked = ops.indices.contains { j in
                !placed[j] && j != i && ops[j].ret.map { $0 < ops[i].call } == true
            }
            guard !blocked, let next = model.step(state, ops[i].input, ops[i].output) else { continue }
            placed[i] = true
            let found = extend(next, definiteLeft: definiteLeft - (ops[i].isIndefinite ? 0 : 1))
            placed[i] = false
            if found { return true }
        }
        return false
    }
    return extend(model.initial, definiteLeft: ops.filter { !$0.isIndefinite }.count)
}

/// Random small histories: intervals with random (often tied) times, outputs produced by actually
/// executing the operations at random points inside their intervals — so the history is
/// linearizable — and then, 3 times in 5, one output replaced by a random one, which usually
/// breaks it. Some operations are indefinite; those took effect at a random later point, or never.
struct HistoryGenerator<M: Model> {
    var randomInput: (inout SplitMix64) -> M.Input
    /// The output `input` really produces in `state`, and the next state.
    var execute: (M.State, M.Input, inout SplitMix64) -> (M.Output, M.State)
    var randomOutput: (M.Input, inout SplitMix64) -> M.Output

    func make(_ model: M, _ rng: inout SplitMix64) -> [HistoryOperation<M.Input, M.Output>] {
        let count = Int.random(in: 1...7, using: &rng)
        var ops: [HistoryOperation<M.Input, M.Output>] = []
        var points: [(op: Int, point: Int, tieBreak: UInt64)] = []
        for i in 0..<count {
            let call = Int.random(in: 0..<12, using: &rng)
            let indefinite = Int.random(in: 0..<4, using: &rng) == 0
            let ret = indefinite ? nil : call + Int.random(in: 0..<6, using: &rng)
            ops.append(HistoryOperation(id: i, client: i, input: randomInput(&rng), output: nil, call: call, ret: ret))
            if let ret {
                points.append((i, Int.random(in: call...ret, using: &rng), rng.next()))
            } else if Bool.random(using: &rng) {
                points.append((i, call + Int.random(in: 0..<15, using: &rng), rng.next()))
            }
        }
        var state = model.initial
        for p in points.sorted(by: { ($0.point, $0.tieBreak) < ($1.point, $1.tieBreak) }) {
            let (output, next) = execute(state, ops[p.op].input, &rng)
            state = next
            if !ops[p.op].isIndefinite { ops[p.op].output = output }
        }
        let definite = ops.indices.filter { !ops[$0].isIndefinite }
        if Int.random(in: 0..<5, using: &rng) < 3, let victim = definite.randomElement(using: &rng) {
            ops[victim].output = randomOutput(ops[victim].input, &rng)
        }
        return ops
    }
}

@Suite struct PropertyTests {
    /// Runs `cases` random histories and demands agreement with the brute force on every one,
    /// plus a real mix of verdicts (otherwise the comparison would prove little).
    func compare<M: Model>(_ model: M, _ generator: HistoryGenerator<M>, seed: UInt64, cases: Int) throws {
        var rng = SplitMix64(seed: seed)
        var linearizable = 0
        var withIndefinite = 0
        var severalIndefinite = 0  // where subsumption between indefinite sets can kick in
        for n in 0..<cases {
            let ops = generator.make(model, &rng)
            let expected = bruteForceLinearizable(model, ops)
            let result = try check(model, ops, options: CheckOptions(maxStates: nil))
            #expect(result.verdict == (expected ? .linearizable : .notLinearizable),
                    "case \(n) (seed \(seed)): \(ops.map { model.describe($0.input, $0.output) + " [\($0.call)..\($0.ret.map(String.init) ?? "inf")]" })")
            if expected { linearizable += 1 }
            let indefinite = ops.filter(\.isIndefinite).count
            if indefinite > 0 { withIndefinite += 1 }
            if indefinite > 1 { severalIndefinite += 1 }
        }
        #expect(linearizable > cases / 5, "too few linearizable cases: \(linearizable)/\(cases)")
        #expect(cases - linearizable > cases / 5, "too few violations: \(cases - linearizable)/\(cases)")
        #expect(withIndefinite > cases / 3, "too few cases with indefinite operations: \(withIndefinite)/\(cases)")
        #expect(severalIndefinite > cases / 10, "too few cases with several indefinite operations: \(severalIndefinite)/\(cases)")
        print("\(M.self) vs brute force: \(cases) histories, \(linearizable) linearizable, "
            + "\(withIndefinite) with indefinite operations (\(severalIndefinite) with several)")
    }

    @Test func registerAgreesWithBruteForce() throws {
        typealias R = RegisterModel
        let generator = HistoryGenerator<R>(
            randomInput: { rng in
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: return .read
                case 1: return .write(Int.random(in: 0...2, using: &rng))
                default: return .cas(from: Int.random(in: 0...2, using: &rng), to: Int.random(in: 0...2, using: &rng))
                }
            },
            execute: { state, input, _ in
                switch input {
                case .read: return (.value(state), state)
                case let .write(v): return (.ok, v)
                case let .cas(from, to): return state == from ? (.ok, to) : (.failed, state)
                }
            },
            randomOutput: { input, rng in
                switch input {
                case .read: return .value([nil, 0, 1, 2].randomElement(using: &rng)!)
                case .write: return .ok
                case .cas: return Bool.random(using: &rng) ? .ok : .failed
                }
            })
        try compare(R(), generator, seed: 0x5EED_0001, cases: 600)
    }

    /// Also checks that partitioning is sound: the brute force sees the whole history at once.
    @Test func namesAgreesWithBruteForce() throws {
        typealias N = NamesModel
        let paths = ["/a", "/a/b", "/c", "/s0000000000"]
        let model = N()
        let generator = HistoryGenerator<N>(
            randomInput: { rng in
                let path = paths.randomElement(using: &rng)!
                let value = ["x", "y"].randomElement(using: &rng)!
                switch Int.random(in: 0..<9, using: &rng) {
                case 0: return .create(path: path, value: value)
                case 1: return .get(path: path)
                case 2: return .put(path: path, value: value)
                case 3: return .cas(path: path, expectedVersion: UInt64.random(in: 1...2, using: &rng), value: value)
                case 4: return .delete(path: path, expectedVersion: Bool.random(using: &rng) ? nil : 1)
                case 5: return .list(path: ["/", "/a"].randomElement(using: &rng)!)
                case 6: return .createSequential(prefix: "/s", value: value)
                default: return .allocatePID
                }
            },
            execute: { state, input, _ in
                if case .allocatePID = input {
                    var next = state
                    next.pidsBefore = state.pidsBefore ?? 0
                    next.allocations += 1
                    return (.pid(next.pidsBefore! + next.allocations), next)
                }
                return model.apply(state, input)
            },
            randomOutput: { input, rng in
                switch input {
                case .allocatePID: return .pid(UInt64.random(in: 1...4, using: &rng))
                case .get:
                    return [.notFound, .value("x", version: 1), .value("y", version: nil), .value("x", version: 2)]
                        .randomElement(using: &rng)!
                case .list:
                    return [.children([]), .children([.init(name: "/a", isEntry: true, hasChildren: false)]),
                            .children([.init(name: "/a", isEntry: false, hasChildren: true)])].randomElement(using: &rng)!
                case .createSequential:
                    return [.created(name: nil), .created(name: "/s0000000001"), .exists].randomElement(using: &rng)!
                default:
                    return [.ok(version: nil), .ok(version: 1), .ok(version: 2), .notFound, .exists,
                            .versionMismatch].randomElement(using: &rng)!
                }
            })
        try compare(model, generator, seed: 0x5EED_0002, cases: 600)
    }
}

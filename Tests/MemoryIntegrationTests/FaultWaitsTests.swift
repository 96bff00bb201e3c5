import Plexus
import Testing

/// The fault-wait histogram's buckets and quantiles (the integration test
/// checks it on a real job).
struct FaultWaitsTests {
    @Test func bucketsArePowersOfTwoOfMicroseconds() {
        #expect(FaultWaits.bucket(nanoseconds: 0) == 1)
        #expect(FaultWaits.bucket(nanoseconds: 1_999) == 1)        // under 2 µs
        #expect(FaultWaits.bucket(nanoseconds: 2_000) == 2)        // [2, 4) µs
        #expect(FaultWaits.bucket(nanoseconds: 63_999) == 6)       // [32, 64) µs
        #expect(FaultWaits.bucket(nanoseconds: 64_000) == 7)
        #expect(FaultWaits.bucket(nanoseconds: UInt64.max) == FaultWaits.buckets - 1)
        for k in 2..<(FaultWaits.buckets - 1) {
            let low = UInt64(1 << (k - 1)) * 1000
            #expect(FaultWaits.bucket(nanoseconds: low) == k && FaultWaits.bucket(nanoseconds: 2 * low - 1) == k)
        }
    }

    @Test func histogramListsNonEmptyBucketsInOrder() {
        var counts = [Int](repeating: 0, count: FaultWaits.buckets)
        counts[3] = 5
        counts[7] = 2
        counts[FaultWaits.buckets - 1] = 1
        let h = FaultWaits.histogram(counts)
        #expect(h == [["belowMicros": 8, "faults": 5], ["belowMicros": 128, "faults": 2],
                      ["atLeastMicros": 1 << (FaultWaits.buckets - 2), "faults": 1]])
        #expect(FaultWaits.histogram([Int](repeating: 0, count: FaultWaits.buckets)).isEmpty)
    }

    @Test func quantilesNameTheBucketThatHoldsThem() throws {
        let h: [[String: Int]] = [["belowMicros": 8, "faults": 90], ["belowMicros": 128, "faults": 9], ["atLeastMicros": 4096, "faults": 1]]
        #expect(try #require(FaultWaits.quantileBound(h, 0.5)) == (8, false))
        #expect(try #require(FaultWaits.quantileBound(h, 0.95)) == (128, false))
        #expect(try #require(FaultWaits.quantileBound(h, 1.0)) == (4096, true))
        #expect(FaultWaits.quantileBound([], 0.5) == nil)
        #expect(FaultWaits.text(h, 0.5) == "<8us")
        #expect(FaultWaits.text(h, 1.0) == ">=4096us")
        #expect(FaultWaits.text([["belowMicros": 16384, "faults": 1]], 0.5) == "<16.4ms")
        #expect(FaultWaits.text([], 0.99) == "-")
    }
}

import ArgumentParser

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the demonstration job on this machine.")
    func run() throws {}
}

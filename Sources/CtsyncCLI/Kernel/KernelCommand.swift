import ArgumentParser

/// `ctsync kernel ...`: the everyday conntrack operations on this namespace's kernel table.
struct KernelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel",
        abstract: "List, watch, insert, update, delete and flush the kernel's conntrack table.",
        subcommands: [
            KernelList.self, KernelCount.self, KernelEvents.self, KernelInsert.self, KernelUpdate.self,
            KernelDelete.self, KernelFlush.self,
        ]
    )
}

import SyncDaemon

#if canImport(Glibc)
    import Glibc
#endif

// The daemon itself is the daemon-core issue; until it lands this binary answers
// -v/-h and refuses everything else plainly, so no script mistakes it for a daemon.
let arguments = CommandLine.arguments.dropFirst()
if arguments.first == "-v" {
    print("ctsyncd v\(CtsyncVersion.string)")
    exit(0)
}
let message = "ctsyncd: the daemon is not part of this build yet; use `ctsync kernel ...` for the kernel table\n"
writeStandardError(message)
exit(arguments.first == "-h" ? 0 : 1)

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body`, a write to a pipe or terminal, with SIGPIPE blocked on
/// this thread, and takes back the SIGPIPE the write raised if its reader
/// was gone: the caller sees EPIPE, and the process's signal dispositions,
/// which belong to the program embedding Gantry, stay as they are.
package func withoutSIGPIPE(_ body: () -> Int) -> Int {
    var pipeSignal = sigset_t()
    sigemptyset(&pipeSignal)
    sigaddset(&pipeSignal, SIGPIPE)
    var previous = sigset_t()
    pthread_sigmask(SIG_BLOCK, &pipeSignal, &previous)
    var pending = sigset_t()
    sigpending(&pending)
    let pendingBefore = sigismember(&pending, SIGPIPE) == 1
    let result = body()
    let error = errno
    // A write cut short by the reader's end raises it too, with a count.
    sigpending(&pending)
    if !pendingBefore, sigismember(&pending, SIGPIPE) == 1 {
        var now = timespec(tv_sec: 0, tv_nsec: 0)
        _ = sigtimedwait(&pipeSignal, nil, &now)
    }
    pthread_sigmask(SIG_SETMASK, &previous, nil)
    errno = error
    return result
}

// Package mpi is rankfarm's own thin cgo binding to the system MPI library
// (OpenMPI by default, MPICH with the build tag mpich), plus an Endpoint that
// owns every MPI call on one goroutine locked to its OS thread.
//
// # Why it exists
//
// The Go module proxy serves no usable Go MPI binding (github.com/emer/empi,
// for one, is refused), and the bindings that exist elsewhere lack the two
// calls a task farm lives on: the matched probe (MPI_Improbe/MPI_Mrecv) and
// the receive from any source of a message whose size is not known in
// advance. Both are a few lines of C, so rankfarm carries them here.
//
// # Two layers
//
// The raw layer (Init, Finalize, WorldRank, NodeSplit, AllgatherInt, Improbe,
// Mrecv, Isend, Test, ...) maps one Go function to one MPI call. Every raw
// function must be called from the one OS thread that called Init: MPI is
// initialised at thread level MPI_THREAD_FUNNELED, so the caller must hold
// that thread with runtime.LockOSThread for the life of MPI.
//
// The Endpoint is what the executor uses. Start runs the raw layer on its own
// locked goroutine; everything else talks to that goroutine through a send
// queue and the Recv channel, from any goroutine. Its loop posts queued sends
// (MPI_Isend), completes them (MPI_Testsome), receives every arriving message
// with MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG) and MPI_Mrecv into a buffer of
// exactly the right size, and backs off when idle. An idle rank therefore
// never spins a core, which keeps oversubscribed runs (many ranks on few
// cores) fast, while a rank that was active a moment ago still answers
// within tens of microseconds.
//
// # The idle loop, and four things learnt measuring it
//
// After a few empty rounds the loop sleeps for an eighth of the time it has
// been idle, from 5µs up to Options.MaxIdleSleep (1ms by default).
//
//   - Go timers cannot do short sleeps: when the netpoller sleeps, a timer
//     under a millisecond fires after about a millisecond. The loop instead
//     sleeps in FUTEX_WAIT on its doorbell, in C on its own thread, with a
//     timer slack of 1µs; Send rings the doorbell to wake a sleeping loop
//     at once.
//   - An idle rank cannot see an MPI message arrive: it notices only when
//     its sleep ends, which cost a single task 40-60µs per hop (half the
//     round trip of a lone task through rank 0 and a worker). So the ranks
//     of a node share their doorbells: one page under /dev/shm with a cache
//     line per rank (a futex word and a sleeping flag), made by the node's
//     first rank at Start and unlinked once every rank has mapped it. A
//     loop that sets its flag probes once more before it sleeps; a rank
//     that posted a send to a neighbour checks the neighbour's flag after a
//     fence and rings its bell if it sleeps. Ranks on other nodes still
//     rely on the sleep's end. Options.NoDoorbells turns this off; without
//     /dev/shm each rank keeps a private doorbell.
//   - Sleeps that double (5µs, 10µs, 20µs, ...) do not work for a ping-pong:
//     each side waits about as long as the round trip already took, so two
//     ranks drift to the longest sleep (3-4ms round trips measured). With
//     sleeps of idle/8 a message waits at most about an eighth more.
//   - runtime.Gosched on a goroutine locked to its thread costs about 10µs
//     (the P goes to another thread and back), so the loop does not spin on
//     it. But a goroutine that the loop readies (a Recv consumer) lands on
//     the loop's P, and nothing runs it while the loop keeps that P, even in
//     its sleep: the loop yields once before sleeping after it delivered a
//     message, and at least every 10ms. For the same reason the send
//     queue is lock-free, so that the loop never wakes a Send by unlocking.
//
// # Build tags
//
//   - default: cgo with `pkg-config ompi` (OpenMPI);
//   - mpich: cgo with `pkg-config mpich` (MPICH);
//   - nompi, or cgo off: a pure-Go stub with the same API, whose Start (and
//     Init) return an error wrapping ErrNoMPI, so the rest of rankfarm builds
//     and tests with CGO_ENABLED=0.
package mpi

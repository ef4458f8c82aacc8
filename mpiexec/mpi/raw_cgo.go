//go:build cgo && !nompi

package mpi

/*
#cgo noescape rf_improbe
#cgo nocallback rf_improbe
#cgo noescape rf_mrecv
#cgo nocallback rf_mrecv
#cgo noescape rf_test
#cgo nocallback rf_test
#cgo noescape rf_testsome
#cgo nocallback rf_testsome
#cgo noescape rf_reqs_compact
#cgo nocallback rf_reqs_compact
#cgo nocallback rf_reqs_isend
#cgo nocallback rf_isend
#cgo nocallback rf_bell_wait
#cgo nocallback rf_bell_ring_self
#cgo nocallback rf_bell_ring_peers
#cgo noescape rf_bell_ring_peers

#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/mman.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif
#include <mpi.h>

// MPI handles are ints in MPICH and pointers in OpenMPI. Go code only ever
// holds them as opaque values of the C types (a C pointer in Go memory is
// allowed; a Go pointer is never stored in C memory), and only these helpers
// look inside.

static int rf_thread_level(int go) {
	switch (go) {
	case 0: return MPI_THREAD_SINGLE;
	case 1: return MPI_THREAD_FUNNELED;
	case 2: return MPI_THREAD_SERIALIZED;
	default: return MPI_THREAD_MULTIPLE;
	}
}

static int rf_go_level(int c) {
	if (c == MPI_THREAD_SINGLE) return 0;
	if (c == MPI_THREAD_FUNNELED) return 1;
	if (c == MPI_THREAD_SERIALIZED) return 2;
	return 3;
}

static int rf_init(int required, int *provided) {
	int p = 0;
	int rc = MPI_Init_thread(NULL, NULL, rf_thread_level(required), &p);
	if (rc != MPI_SUCCESS) return rc;
	*provided = rf_go_level(p);
	// Return error codes instead of aborting the job on an error.
	return MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

static int rf_error_string(int code, char *buf, int cap) {
	int len = 0;
	if (cap < MPI_MAX_ERROR_STRING + 1) return -1;
	if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return -1;
	buf[len] = 0;
	return len;
}

static int rf_max_error_string(void) { return MPI_MAX_ERROR_STRING + 1; }

static int rf_finalize(void) { return MPI_Finalize(); }
static int rf_initialized(int *f) { return MPI_Initialized(f); }
static int rf_finalized(int *f) { return MPI_Finalized(f); }
static int rf_world_rank(int *r) { return MPI_Comm_rank(MPI_COMM_WORLD, r); }
static int rf_world_size(int *s) { return MPI_Comm_size(MPI_COMM_WORLD, s); }
static int rf_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }

static int rf_tag_ub(int *ub) {
	int *v = NULL, flag = 0;
	int rc = MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &v, &flag);
	if (rc != MPI_SUCCESS) return rc;
	*ub = (flag && v) ? *v : 32767; // 32767 is the least the standard allows
	return MPI_SUCCESS;
}

// rf_node_split splits MPI_COMM_WORLD by shared memory, keyed by world rank,
// so local rank 0 is the lowest world rank of the node; leader receives that
// rank's world rank. The node communicator is freed again.
static int rf_node_split(int *lrank, int *lsize, int *leader, const char **op) {
	int wrank, rc;
	MPI_Comm node;
	*op = "MPI_Comm_rank";
	if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, &wrank)) != MPI_SUCCESS) return rc;
	*op = "MPI_Comm_split_type";
	rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, wrank, MPI_INFO_NULL, &node);
	if (rc != MPI_SUCCESS) return rc;
	MPI_Comm_set_errhandler(node, MPI_ERRORS_RETURN);
	*op = "MPI_Comm_rank(node)";
	if ((rc = MPI_Comm_rank(node, lrank)) != MPI_SUCCESS) goto out;
	*op = "MPI_Comm_size(node)";
	if ((rc = MPI_Comm_size(node, lsize)) != MPI_SUCCESS) goto out;
	*leader = wrank;
	*op = "MPI_Bcast(node)";
	rc = MPI_Bcast(leader, 1, MPI_INT, 0, node);
out:
	MPI_Comm_free(&node);
	return rc;
}

static int rf_allgather_ll(long long v, long long *out) {
	return MPI_Allgather(&v, 1, MPI_LONG_LONG, out, 1, MPI_LONG_LONG, MPI_COMM_WORLD);
}

static int rf_any_source(int s) { return s == -1 ? MPI_ANY_SOURCE : s; }
static int rf_any_tag(int t) { return t == -1 ? MPI_ANY_TAG : t; }

static int rf_improbe(int src, int tag, MPI_Message *msg, int *found, int *osrc, int *otag, int *count) {
	MPI_Status st;
	int rc = MPI_Improbe(rf_any_source(src), rf_any_tag(tag), MPI_COMM_WORLD, found, msg, &st);
	if (rc != MPI_SUCCESS || !*found) return rc;
	*osrc = st.MPI_SOURCE;
	*otag = st.MPI_TAG;
	return MPI_Get_count(&st, MPI_BYTE, count);
}

static void rf_message_null(MPI_Message *m) { *m = MPI_MESSAGE_NULL; }
static int rf_message_is_null(MPI_Message *m) { return *m == MPI_MESSAGE_NULL; }

static int rf_mrecv(void *buf, int count, MPI_Message *msg) {
	static char dummy;
	return MPI_Mrecv(count ? buf : &dummy, count, MPI_BYTE, msg, MPI_STATUS_IGNORE);
}

static int rf_isend(void *buf, int count, int dest, int tag, MPI_Request *req) {
	static char dummy;
	return MPI_Isend(count ? buf : &dummy, count, MPI_BYTE, dest, tag, MPI_COMM_WORLD, req);
}

static int rf_test(MPI_Request *req, int *done) {
	return MPI_Test(req, done, MPI_STATUS_IGNORE);
}

// The Endpoint keeps its in-flight send requests in a C array.
static MPI_Request *rf_reqs_new(int n) { return (MPI_Request *)calloc((size_t)n, sizeof(MPI_Request)); }
static int *rf_ints_new(int n) { return (int *)calloc((size_t)n, sizeof(int)); }

static int rf_reqs_isend(MPI_Request *reqs, int i, void *buf, int count, int dest, int tag) {
	return rf_isend(buf, count, dest, tag, &reqs[i]);
}

// rf_testsome completes what it can of reqs[0:n]; the indices of completed
// requests go to idx, their number to *outcount (0 if none).
// MPICH declares the statuses argument as an array that GCC sizes, and
// MPI_STATUSES_IGNORE is a small constant pointer: silence the false alarm.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
static int rf_testsome(MPI_Request *reqs, int n, int *idx, int *outcount) {
	int rc = MPI_Testsome(n, reqs, outcount, idx, MPI_STATUSES_IGNORE);
	if (*outcount == MPI_UNDEFINED) *outcount = 0;
	return rc;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// rf_reqs_compact moves the requests not marked in done (reqs[i] for
// done[i] == 0) to the front, in order, and returns their number.
static int rf_reqs_compact(MPI_Request *reqs, int n, const char *done) {
	int j = 0;
	for (int i = 0; i < n; i++) {
		if (!done[i]) reqs[j++] = reqs[i];
	}
	for (int i = j; i < n; i++) reqs[i] = MPI_REQUEST_NULL;
	return j;
}

static void rf_timer_slack(void) {
#ifdef __linux__
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
#endif
}

// Doorbells: how an idle loop sleeps, and how a peer on the same node wakes
// it. Each rank has a slot of one cache line: a futex word and a sleeping
// flag. The slots of a node live in one shared page (a file under /dev/shm,
// created by the node's first rank, opened by the others and unlinked once
// all have mapped it); without it a rank uses a private slot, and only its
// own Sends wake it.
//
// An idle loop sets sleeping, probes MPI once more and, if nothing waits,
// sleeps in FUTEX_WAIT on its word for at most the idle sleep. A sender that
// posted messages to a rank of its node looks at that rank's flag after a
// full fence and, when it sleeps, sets its word and wakes it. Either the
// receiver's last probe sees the message or the sender sees the flag: no
// message waits for the sleep's end unless MPI had not yet put it in the
// receiver's queue when MPI_Isend returned (large messages), and then the
// timeout still bounds the wait.
typedef struct {
	_Atomic uint32_t word;
	_Atomic uint32_t sleeping;
	char pad[56];
} rf_slot;

static rf_slot rf_private_slot;
static rf_slot *rf_me = &rf_private_slot;
static rf_slot *rf_bells;   // the node's shared slots, or NULL
static int rf_bells_n;      // slots in rf_bells
static size_t rf_bells_len; // bytes mapped

#ifdef __linux__
static long rf_futex(_Atomic uint32_t *w, int op, uint32_t val, const struct timespec *ts) {
	return syscall(SYS_futex, (uint32_t *)w, op, val, ts, NULL, 0);
}
#endif

// rf_bells_setup makes the node's shared slots; collective over
// MPI_COMM_WORLD. *shared is 1 when every rank of the node mapped them, 0
// when the node runs on private slots (no /dev/shm, say); the MPI error
// code is returned, and *op names the failed call.
static int rf_bells_setup(int disable, int *shared, const char **op) {
	int wrank, lrank, lsize, rc, ok = 0, all = 0, fd = -1;
	char name[96];
	MPI_Comm node;
	void *p = MAP_FAILED;
	*shared = 0;
	*op = "MPI_Comm_rank";
	if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, &wrank)) != MPI_SUCCESS) return rc;
	*op = "MPI_Comm_split_type";
	rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, wrank, MPI_INFO_NULL, &node);
	if (rc != MPI_SUCCESS) return rc;
	MPI_Comm_set_errhandler(node, MPI_ERRORS_RETURN);
	*op = "MPI_Comm_rank(node)";
	if ((rc = MPI_Comm_rank(node, &lrank)) != MPI_SUCCESS) goto out;
	*op = "MPI_Comm_size(node)";
	if ((rc = MPI_Comm_size(node, &lsize)) != MPI_SUCCESS) goto out;
	size_t len = ((size_t)lsize * sizeof(rf_slot) + 4095) & ~(size_t)4095;
	memset(name, 0, sizeof name);
#ifdef __linux__
	if (lrank == 0 && !disable) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		snprintf(name, sizeof name, "/dev/shm/rankfarm-bells-%d-%lx%lx", (int)getpid(),
			(unsigned long)now.tv_nsec, (unsigned long)(uintptr_t)&now);
		fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
			if (fd >= 0) { close(fd); unlink(name); fd = -1; }
			name[0] = 0;
		}
	}
#endif
	*op = "MPI_Bcast(node)";
	if ((rc = MPI_Bcast(name, sizeof name, MPI_CHAR, 0, node)) != MPI_SUCCESS) goto out;
	name[sizeof name - 1] = 0;
	if (name[0]) {
		if (fd < 0) fd = open(name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			close(fd);
		}
		ok = p != MAP_FAILED;
	}
	// All or none: once every rank has mapped the page (or failed to),
	// the first removes its name.
	*op = "MPI_Allreduce(node)";
	rc = MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, node);
	if (lrank == 0 && name[0]) unlink(name);
	if (rc != MPI_SUCCESS || !all) {
		if (p != MAP_FAILED) munmap(p, len);
		goto out;
	}
	rf_bells = (rf_slot *)p;
	rf_bells_n = lsize;
	rf_bells_len = len;
	rf_me = &rf_bells[lrank];
	*shared = 1;
out:
	MPI_Comm_free(&node);
	return rc;
}

// rf_bells_free unmaps the shared slots; call it after MPI_Finalize, once no
// peer will ring.
static void rf_bells_free(void) {
	if (rf_bells) {
		rf_me = &rf_private_slot;
		munmap((void *)rf_bells, rf_bells_len);
		rf_bells = NULL;
		rf_bells_n = 0;
	}
}

static void rf_ring(rf_slot *s, int shared) {
	atomic_store(&s->word, 1);
#ifdef __linux__
	rf_futex(&s->word, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, 1, NULL);
#endif
}

// rf_bell_ring_self wakes this rank's loop (from any thread).
static void rf_bell_ring_self(void) { rf_ring(rf_me, rf_bells != NULL); }

// rf_bell_ring_peers wakes those of the node's ranks idx[0:n] (local
// indices) that sleep; it returns how many it woke. Call it after posting
// sends to them.
static int rf_bell_ring_peers(const int *idx, int n) {
	int woke = 0;
	if (!rf_bells) return 0;
	atomic_thread_fence(memory_order_seq_cst);
	for (int i = 0; i < n; i++) {
		if (idx[i] < 0 || idx[i] >= rf_bells_n) continue;
		rf_slot *s = &rf_bells[idx[i]];
		if (s == rf_me || !atomic_load(&s->sleeping)) continue;
		rf_ring(s, 1);
		woke++;
	}
	return woke;
}

// rf_bell_wait sleeps up to ns unless this rank's bell rang or (with
// shared slots) a message waits; call it on the MPI thread.
static void rf_bell_wait(long long ns) {
	rf_slot *me = rf_me;
	int flag = 0;
	atomic_store(&me->sleeping, 1);
	if (rf_bells) MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
	if (!flag && atomic_load(&me->word) == 0) {
		struct timespec ts;
		ts.tv_sec = ns / 1000000000LL;
		ts.tv_nsec = ns % 1000000000LL;
#ifdef __linux__
		rf_futex(&me->word, rf_bells ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, 0, &ts);
#else
		nanosleep(&ts, NULL);
#endif
	}
	atomic_store(&me->sleeping, 0);
	atomic_store(&me->word, 0);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"
)

// mpiError turns an MPI return code into nil or an *Error.
func mpiError(op string, rc C.int) error {
	if rc == C.MPI_SUCCESS {
		return nil
	}
	msg := "unknown error"
	buf := make([]byte, int(C.rf_max_error_string()))
	if n := C.rf_error_string(rc, (*C.char)(unsafe.Pointer(&buf[0])), C.int(len(buf))); n >= 0 {
		msg = string(buf[:n])
	}
	return &Error{Op: op, Code: int(rc), Msg: msg}
}

// Init calls MPI_Init_thread asking for the required level and returns the
// level the library provides; then it sets MPI_ERRORS_RETURN on
// MPI_COMM_WORLD so that errors come back as *Error instead of ending the
// job. The calling goroutine must be locked to its OS thread
// (runtime.LockOSThread) and every later raw call must come from that thread.
func Init(required ThreadLevel) (provided ThreadLevel, err error) {
	var p C.int
	if err := mpiError("MPI_Init_thread", C.rf_init(C.int(required), &p)); err != nil {
		return 0, err
	}
	return ThreadLevel(p), nil
}

// Finalize calls MPI_Finalize. It is collective: it returns once every rank
// has called it. Call it from the MPI thread, with no send in flight.
func Finalize() error { return mpiError("MPI_Finalize", C.rf_finalize()) }

// Initialized reports whether MPI_Init has been called (MPI_Initialized).
// Call it from the MPI thread (or before MPI exists).
func Initialized() (bool, error) {
	var f C.int
	err := mpiError("MPI_Initialized", C.rf_initialized(&f))
	return f != 0, err
}

// Finalized reports whether MPI_Finalize has been called (MPI_Finalized).
// Call it from the MPI thread (or before MPI exists).
func Finalized() (bool, error) {
	var f C.int
	err := mpiError("MPI_Finalized", C.rf_finalized(&f))
	return f != 0, err
}

// WorldRank returns this process's rank in MPI_COMM_WORLD. Call it from the
// MPI thread.
func WorldRank() (int, error) {
	var r C.int
	err := mpiError("MPI_Comm_rank", C.rf_world_rank(&r))
	return int(r), err
}

// WorldSize returns the size of MPI_COMM_WORLD. Call it from the MPI thread.
func WorldSize() (int, error) {
	var s C.int
	err := mpiError("MPI_Comm_size", C.rf_world_size(&s))
	return int(s), err
}

// TagUB returns the largest tag this MPI accepts (the MPI_TAG_UB attribute,
// at least 32767). Call it from the MPI thread.
func TagUB() (int, error) {
	var ub C.int
	err := mpiError("MPI_Comm_get_attr(MPI_TAG_UB)", C.rf_tag_ub(&ub))
	return int(ub), err
}

// Abort calls MPI_Abort(MPI_COMM_WORLD, code), which ends every rank of the
// job; it returns only if MPI_Abort fails. Call it from the MPI thread.
func Abort(code int) error { return mpiError("MPI_Abort", C.rf_abort(C.int(code))) }

// NodeSplit splits MPI_COMM_WORLD into one communicator per shared-memory
// node (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED, keyed by world rank)
// and returns this rank's local rank and the node's size, and leader, the
// world rank of the node's local rank 0 (its lowest world rank). The node
// communicator is freed before it returns. It is collective over
// MPI_COMM_WORLD. Call it from the MPI thread.
func NodeSplit() (localRank, localSize, leader int, err error) {
	var lr, ls, ld C.int
	var op *C.char
	rc := C.rf_node_split(&lr, &ls, &ld, &op)
	if err := mpiError(C.GoString(op), rc); err != nil {
		return 0, 0, 0, err
	}
	return int(lr), int(ls), int(ld), nil
}

// AllgatherInt gathers one int from every rank of MPI_COMM_WORLD
// (MPI_Allgather of one MPI_LONG_LONG) and returns them in rank order. It is
// collective. Call it from the MPI thread.
func AllgatherInt(v int) ([]int, error) {
	size, err := WorldSize()
	if err != nil {
		return nil, err
	}
	out := make([]int64, size)
	if err := mpiError("MPI_Allgather", C.rf_allgather_ll(C.longlong(v), (*C.longlong)(unsafe.Pointer(&out[0])))); err != nil {
		return nil, err
	}
	res := make([]int, size)
	for i, x := range out {
		res[i] = int(x)
	}
	return res, nil
}

// Message is a message matched by Improbe and not yet received; pass it to
// Mrecv exactly once. Its zero value is no message.
type Message struct {
	h     C.MPI_Message
	valid bool
}

// Improbe is MPI_Improbe on MPI_COMM_WORLD: it looks, without blocking, for
// a message from source (or AnySource) with tag (or AnyTag). When found is
// true, the message is matched (no other probe or receive can take it) and
// must be received with Mrecv; st gives its sender, tag and length in bytes.
// Call it from the MPI thread.
func Improbe(source, tag int) (m Message, st Status, found bool, err error) {
	var f, src, tg, count C.int
	rc := C.rf_improbe(C.int(source), C.int(tag), &m.h, &f, &src, &tg, &count)
	if err := mpiError("MPI_Improbe", rc); err != nil {
		return Message{}, Status{}, false, err
	}
	if f == 0 {
		return Message{}, Status{}, false, nil
	}
	m.valid = true
	return m, Status{Source: int(src), Tag: int(tg), Count: int(count)}, true, nil
}

// Mrecv receives the matched message m into buf (MPI_Mrecv), whose length
// must be the message's Count from Improbe, and clears m. Call it from the
// MPI thread.
func Mrecv(m *Message, buf []byte) error {
	if !m.valid {
		return fmt.Errorf("mpi: Mrecv of no message: %w", ErrInvalid)
	}
	if len(buf) > MaxMessage {
		return fmt.Errorf("mpi: Mrecv into %d bytes: %w", len(buf), ErrInvalid)
	}
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	err := mpiError("MPI_Mrecv", C.rf_mrecv(p, C.int(len(buf)), &m.h))
	m.valid = false
	return err
}

// Request is an MPI send request started by Isend. It keeps the sent bytes
// pinned until Test reports it complete.
type Request struct {
	h      C.MPI_Request
	pin    runtime.Pinner
	data   []byte
	active bool
}

// Isend starts sending data to dest with tag on MPI_COMM_WORLD (MPI_Isend)
// and returns its request. The bytes are not copied: they are pinned with
// runtime.Pinner (so the C library may keep their address after the call
// returns) and must stay alive and unmodified until Test reports the request
// complete, which unpins them. Call it from the MPI thread.
func Isend(data []byte, dest, tag int) (*Request, error) {
	if len(data) > MaxMessage {
		return nil, fmt.Errorf("mpi: Isend of %d bytes: %w", len(data), ErrInvalid)
	}
	r := &Request{data: data}
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
		r.pin.Pin(p)
	}
	if err := mpiError("MPI_Isend", C.rf_isend(p, C.int(len(data)), C.int(dest), C.int(tag), &r.h)); err != nil {
		r.pin.Unpin()
		return nil, err
	}
	r.active = true
	return r, nil
}

// Test reports whether the request has completed (MPI_Test); once it has,
// the sent bytes are unpinned and belong to the caller again, and later calls
// report true. Call it from the MPI thread.
func Test(r *Request) (bool, error) {
	if !r.active {
		return true, nil
	}
	var done C.int
	if err := mpiError("MPI_Test", C.rf_test(&r.h, &done)); err != nil {
		return false, err
	}
	if done == 0 {
		return false, nil
	}
	r.active = false
	r.pin.Unpin()
	r.data = nil
	return true, nil
}

// sendSet is the Endpoint's set of in-flight sends: their requests in a
// C-allocated array (so MPI_Testsome sees them in one call) and, beside it,
// the packets whose bytes are pinned until their request completes.
type sendSet struct {
	reqs []C.MPI_Request // backed by C memory, length = capacity
	idx  []C.int         // C memory: MPI_Testsome's output
	done []C.char        // C memory: completion marks for compaction
	pins []runtime.Pinner
	data [][]byte
	n    int
}

func newSendSet(capacity int) (*sendSet, error) {
	r := C.rf_reqs_new(C.int(capacity))
	i := C.rf_ints_new(C.int(capacity))
	d := (*C.char)(C.calloc(C.size_t(capacity), 1))
	if r == nil || i == nil || d == nil {
		C.free(unsafe.Pointer(r))
		C.free(unsafe.Pointer(i))
		C.free(unsafe.Pointer(d))
		return nil, errors.New("mpi: out of C memory for send requests")
	}
	return &sendSet{
		reqs: unsafe.Slice(r, capacity),
		idx:  unsafe.Slice(i, capacity),
		done: unsafe.Slice(d, capacity),
		pins: make([]runtime.Pinner, capacity),
		data: make([][]byte, capacity),
	}, nil
}

func (s *sendSet) len() int   { return s.n }
func (s *sendSet) full() bool { return s.n == len(s.reqs) }

// post starts one send (MPI_Isend) with its bytes pinned.
func (s *sendSet) post(data []byte, dest, tag int) error {
	i := s.n
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
		s.pins[i].Pin(p)
	}
	rc := C.rf_reqs_isend(&s.reqs[0], C.int(i), p, C.int(len(data)), C.int(dest), C.int(tag))
	if err := mpiError("MPI_Isend", rc); err != nil {
		s.pins[i].Unpin()
		return err
	}
	s.data[i] = data
	s.n++
	return nil
}

// testsome completes what it can (MPI_Testsome), releases those buffers and
// returns how many completed.
func (s *sendSet) testsome() (int, error) {
	if s.n == 0 {
		return 0, nil
	}
	var out C.int
	if err := mpiError("MPI_Testsome", C.rf_testsome(&s.reqs[0], C.int(s.n), &s.idx[0], &out)); err != nil {
		return 0, err
	}
	k := int(out)
	if k == 0 {
		return 0, nil
	}
	for _, i := range s.idx[:k] {
		s.done[i] = 1
	}
	j := 0
	for i := 0; i < s.n; i++ {
		if s.done[i] != 0 {
			s.pins[i].Unpin()
			s.data[i] = nil
			continue
		}
		if j != i {
			s.pins[j], s.pins[i] = s.pins[i], s.pins[j]
			s.data[j], s.data[i] = s.data[i], nil
		}
		j++
	}
	s.n = int(C.rf_reqs_compact(&s.reqs[0], C.int(s.n), &s.done[0]))
	for i := range s.done[:j+k] {
		s.done[i] = 0
	}
	return k, nil
}

func (s *sendSet) free() {
	for i := 0; i < s.n; i++ {
		s.pins[i].Unpin()
		s.data[i] = nil
	}
	s.n = 0
	C.free(unsafe.Pointer(&s.reqs[0]))
	C.free(unsafe.Pointer(&s.idx[0]))
	C.free(unsafe.Pointer(&s.done[0]))
	s.reqs, s.idx, s.done = nil, nil, nil
}

// waker lets the idle MPI loop sleep on its doorbell (a futex) with
// microsecond precision, lets Send wake it early and, once setup has made
// the node's shared doorbells, lets the loop wake the peers of its node it
// sent to.
type waker struct{}

func newWaker() (*waker, error) { return &waker{}, nil }

// setup makes the node's shared doorbells (collective over MPI_COMM_WORLD;
// on the MPI thread). disable keeps private ones. It reports whether the
// shared ones are in use.
func (w *waker) setup(disable bool) (bool, error) {
	var shared C.int
	var op *C.char
	dis := C.int(0)
	if disable {
		dis = 1
	}
	rc := C.rf_bells_setup(dis, &shared, &op)
	if err := mpiError(C.GoString(op), rc); err != nil {
		return false, err
	}
	return shared != 0, nil
}

// threadSetup lowers the timer slack of the calling (MPI) thread so short
// sleeps stay short.
func threadSetup() { C.rf_timer_slack() }

// wait sleeps up to d nanoseconds or until wake is called or (with shared
// doorbells) a message waits.
func (w *waker) wait(d int64) { C.rf_bell_wait(C.longlong(d)) }

// wake ends a current or the next wait.
func (w *waker) wake() { C.rf_bell_ring_self() }

// ringPeers wakes those of the node's ranks idx (local ranks) that sleep
// and returns how many it woke.
func (w *waker) ringPeers(idx []int32) int {
	if len(idx) == 0 {
		return 0
	}
	return int(C.rf_bell_ring_peers((*C.int)(unsafe.Pointer(&idx[0])), C.int(len(idx))))
}

// close unmaps the shared doorbells; call it after MPI_Finalize.
func (w *waker) close() { C.rf_bells_free() }

// builtWithMPI tells the tests whether a real MPI is linked.
const builtWithMPI = true

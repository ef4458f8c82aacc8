// Package qlink is the shared-filesystem queue: the front end ↔ rank 0 link
// for machines whose compute nodes cannot open a socket to the login node
// but share a parallel filesystem with it. Both ends are link.Conns, so the
// executor and rank 0 serve a queue exactly as they serve a TCP link: Front
// is the front end's end (Open), Block is rank 0's (Join). Any number of
// blocks may serve one queue; to the front end they look like one block
// whose credit is the sum of theirs.
//
// # Layout
//
// Everything lives in one directory that only its owner may enter (mode
// 0700; a directory owned by another user, or open to others, is refused):
//
//	DIR/run.json              the run: its random ID, the front end's host and
//	                          pid, the heartbeat and poll intervals (JSON)
//	DIR/tmp/                  every file is written here first, then renamed
//	                          into place: nothing half-written is ever read
//	DIR/tasks/t-<seq>.rfq     task batches, ready to claim, oldest first
//	DIR/tasks/p-<seq>.rfq     tasks put back from a lost block (claimed first)
//	DIR/tasks/shutdown.rfq    the front end's Shutdown; every block obeys it
//	DIR/claimed/<block>/      the batches a block claimed, by renaming them
//	                          here from tasks/: two blocks never take the same
//	DIR/results/r-<block>-<seq>.rfq
//	                          what a block sends: its Hello first, then
//	                          results, credit and its Shutdown acknowledgement,
//	                          numbered per block
//	DIR/hb/<block>.<n>        a block's heartbeat: an empty file renamed to
//	                          n+1 every beat, so one listing of hb/ reads them all
//	DIR/ctl/front-<run>.<n>   the front end's heartbeat, the same way
//	DIR/ctl/fenced-<block>    a block declared lost, and why
//	DIR/bad/<ns>-<name>       refused files, moved aside, each with a .why file
//
// Only POSIX rename atomicity is relied on (as NFS, Lustre and GPFS give it):
// no flock, no mmap, no inotify. A block that gets ENOENT claiming a file lost
// the race to another block, unless the file is in its own claim directory
// (an NFS retry of a rename that did happen). Every poll opens the directory
// anew, which makes an NFS client revalidate it (close-to-open), and every
// file is read whole after an open, so a writer's close on one node is seen
// by a reader's open on another. No two clocks are ever compared: a
// heartbeat is a count in a file name, and its age is measured on the
// reader's own clock from when it last saw the count change.
//
// # Batch files
//
// A .rfq file is a 36-byte header (magic "RFQB", format version, direction,
// run ID, frame count, body length, CRC-32C of header and body) and a body of
// frames exactly as on the TCP stream (see docs/PROTOCOL.md). A file that is
// truncated, garbage, of another run, of a future format version or fails its
// checksum is refused with a clear error and moved to bad/; neither end
// stops. A task file a block refuses fails its tasks with ErrLost at the front
// end; a result file the front end refuses declares its block lost, so the
// tasks whose results it held run again elsewhere.
//
// # Credit
//
// A block claims a batch only while the credit it announced (Credit and
// ResultBatch.Credit, which the Front passes on to the executor) exceeds the
// tasks it claimed. On top of that the Front grants the executor Ahead
// (1024) tasks per live block: they wait in tasks/, not inside a block, so a
// block whose credit frees finds work at once instead of waiting for a
// round trip through the front end, and a lost block strands none of them.
// A block that claims a file larger than its credit hands the excess back
// as credit at once (rank 0 withholds it from what its workers return), so
// the pool neither shrinks with every such claim nor runs dry while blocks
// sit idle; a block that leaves takes its Ahead back out of later credit.
// While several blocks serve the queue the Front cuts the executor's batches
// into one file per block (of at least 64 tasks), so that each can take a
// share.
//
// # Heartbeats, lost blocks, exactly once
//
// Every block renames its heartbeat file each beat (1 s by default). A block
// whose count has not moved for the block timeout (30 s by default) is
// declared lost: the Front removes its heartbeat file and its claim
// directory, writes the unanswered tasks of its claimed batches back into
// tasks/ as new p- files, and from then on ignores every file it writes. The
// Front also keeps the set of tasks in flight and passes on one result per
// task (of the attempt in flight), so each task resolves exactly once. A lost
// block learns it at its next beat (its heartbeat file is gone) and stops. A
// block whose front end's heartbeat stalls for its peer timeout stops too.
//
// # Polling
//
// Each end polls one directory: the front end results/, a block with credit
// tasks/ (a block without credit only on its heartbeat). Right after a poll
// that found work the next one follows at once; otherwise the wait is an
// eighth of the time since work was last seen, from MinPoll (100 µs) up to
// MaxPoll (100 ms), which it reaches after 0.8 s without work. An idle block
// therefore costs ten listings of tasks/ a second (one a heartbeat without
// credit), one listing of ctl/ and one rename per heartbeat; an idle front
// end ten listings of results/ a second and two listings per heartbeat
// (TestIdleQueueCostsLittle counts them). The latency floor of a task round
// trip is two polls and two file writes: under load about MinPoll on each
// side (in practice Go's timer granularity, about 1 ms on Linux: the queue
// bench measures a p50 round trip of about 1.4 ms on local disk), and after
// a quiet spell up to an eighth of that spell, at most MaxPoll, on each
// side.
package qlink

// EnvQueue names the environment variable through which a launcher tells
// rank 0 to serve the queue in that directory instead of dialing the front
// end over TCP.
const EnvQueue = "RANKFARM_QUEUE"

package rankpool

import (
	"fmt"
	"slices"
	"sort"
)

// Upstream is the parent of rank 0: the front end, or the link to it.
const Upstream = -1

// DefaultFanout is the fan-out Layout uses when it is given none.
const DefaultFanout = 64

// MinFanout is the smallest fan-out: a smaller one is raised to it, since a
// fan-out of 1 would make a chain of every rank.
const MinFanout = 2

// Role is the job a rank does in the tree.
type Role uint8

// Roles of a rank.
const (
	// RoleWorker runs tasks. Rank 0 of a one-rank block is a worker too.
	RoleWorker Role = iota
	// RoleScheduler is rank 0 of a block with more than one rank: it pulls
	// tasks from the front end by credit and hands them down.
	RoleScheduler
	// RoleSubMaster relays tasks and results between its parent (rank 0
	// or another sub-master) and its children (sub-masters or workers).
	RoleSubMaster
)

// String returns the role's name.
func (r Role) String() string {
	switch r {
	case RoleWorker:
		return "worker"
	case RoleScheduler:
		return "scheduler"
	case RoleSubMaster:
		return "sub-master"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// IsRelay reports whether the role relays tasks to children (a scheduler or
// a sub-master) rather than running them.
func (r Role) IsRelay() bool { return r == RoleScheduler || r == RoleSubMaster }

// Place is one rank's position in the tree.
type Place struct {
	// Rank is the rank's world rank; Size is the world size.
	Rank, Size int
	// Role is the rank's job.
	Role Role
	// Parent is the rank tasks come from: Upstream for rank 0.
	Parent int
	// Children are the ranks this one hands tasks to, ascending; empty for
	// a worker.
	Children []int
}

// Layout places rank in a block of size ranks. Every rank evaluates it alike,
// so all agree on the tree without talking. nodeOf[r] is the node index of
// rank r (len(nodeOf) == size; nil means every rank is on one node); fanout
// <= 0 means DefaultFanout. The tree is the one NewTopology describes.
//
// Layout costs O(size) for reading nodeOf; a caller that places many ranks
// builds one Topology and calls its Place, which costs O(fanout + log size).
//
// Layout panics when rank is not in [0, size) or nodeOf has the wrong length:
// both are programming errors of the caller, and CheckLayout reports them as
// an error for callers that take them from outside.
func Layout(rank, size int, nodeOf []int, fanout int) Place {
	if err := CheckLayout(rank, size, nodeOf); err != nil {
		panic(err)
	}
	t, err := NewTopology(size, nodeOf, fanout)
	if err != nil {
		panic(err) // unreachable: CheckLayout checked the same
	}
	return t.Place(rank)
}

// CheckLayout reports whether Layout can place rank in a block of size ranks
// with node map nodeOf.
func CheckLayout(rank, size int, nodeOf []int) error {
	if err := checkWorld(size, nodeOf); err != nil {
		return err
	}
	if rank < 0 || rank >= size {
		return fmt.Errorf("rankpool: rank %d is outside a world of size %d", rank, size)
	}
	return nil
}

func checkWorld(size int, nodeOf []int) error {
	if size < 1 {
		return fmt.Errorf("rankpool: world size %d is not positive", size)
	}
	if size > maxRanks {
		return fmt.Errorf("rankpool: world size %d exceeds the limit of %d ranks", size, maxRanks)
	}
	if nodeOf != nil && len(nodeOf) != size {
		return fmt.Errorf("rankpool: node map has %d entries for a world of size %d", len(nodeOf), size)
	}
	return nil
}

// maxRanks bounds the world size: ranks are int32 on the wire (Result.Rank).
const maxRanks = 1<<31 - 1

// Topology is the rank tree of one block: who is whose parent, for every
// rank, computed from the world size, the node map and the fan-out. It holds
// O(nodes) state (O(size) when a node's ranks are not contiguous in rank
// order), and Place costs O(fanout + log size), so even a simulator with a
// million ranks places them all in well under a second. A Topology is
// immutable and safe for concurrent use.
//
// The tree:
//
//   - One rank is a worker with Parent Upstream. Otherwise rank 0 is the
//     scheduler, a rank with children is a sub-master and every other rank is
//     a worker.
//   - Nodes are ordered by their lowest rank (rank 0's node first), and the
//     lowest rank of each node is its leader. The leaders form a complete
//     k-ary tree in that order, rooted at rank 0: leader j's parent is leader
//     (j-1)/k. k is the fan-out when every node holds a single rank, and half
//     of it (at least 2) otherwise, so a leader keeps room for its own node.
//   - Within a node, the other ranks, ascending, form a complete tree below
//     the leader: the leader takes as many of them as its fan-out leaves
//     after its leader children, and every other rank takes up to fan-out.
//
// So a sub-master serves its own node, except that a leader also serves the
// leaders of other nodes; no rank has more than fanout children (a leader
// with nodes below it keeps at least one child of its own node, so with a
// fan-out below 3 it may hold one more); and the depth is about
// log_{fanout/2}(nodes) + log_fanout(ranks per node).
type Topology struct {
	size, fanout int
	kl           int   // branching of the tree over the node leaders
	start        []int // node j holds positions start[j] to start[j+1]-1
	perm         []int // position → rank; nil when the identity
	pos          []int // rank → position; nil when the identity
	workers      int
	depth        int
}

// NewTopology returns the tree of a block of size ranks, where nodeOf[r] is
// the node of rank r (any integer; nil means every rank is on one node) and
// fanout <= 0 means DefaultFanout (and below MinFanout means MinFanout). It costs O(size) time; its memory is
// O(nodes) when each node's ranks are contiguous in rank order and O(size)
// otherwise.
func NewTopology(size int, nodeOf []int, fanout int) (*Topology, error) {
	if err := checkWorld(size, nodeOf); err != nil {
		return nil, err
	}
	if nodeOf == nil {
		return newTopology([]int{0, size}, nil, nil, fanout), nil
	}
	// Index the nodes by first appearance, and see whether each node's ranks
	// are one contiguous run.
	index := make(map[int]int)
	var counts []int
	contiguous := true
	for r, id := range nodeOf {
		j, seen := index[id]
		if !seen {
			j = len(counts)
			index[id] = j
			counts = append(counts, 0)
		} else if r > 0 && nodeOf[r-1] != id {
			contiguous = false
		}
		counts[j]++
	}
	start := make([]int, len(counts)+1)
	for j, c := range counts {
		start[j+1] = start[j] + c
	}
	if contiguous {
		return newTopology(start, nil, nil, fanout), nil
	}
	perm := make([]int, size)
	pos := make([]int, size)
	next := slices.Clone(start[:len(counts)])
	for r, id := range nodeOf {
		j := index[id]
		perm[next[j]] = r
		pos[r] = next[j]
		next[j]++
	}
	return newTopology(start, perm, pos, fanout), nil
}

// NewTopologyRuns returns the tree of a block whose nodes hold consecutive
// runs of ranks: nodeSizes[j] ranks on node j, in rank order (rank 0 on node
// 0). It is the compact form of NewTopology for a simulator or a regular
// machine: O(nodes) time and memory.
func NewTopologyRuns(nodeSizes []int, fanout int) (*Topology, error) {
	if len(nodeSizes) == 0 {
		return nil, fmt.Errorf("rankpool: no nodes")
	}
	start := make([]int, len(nodeSizes)+1)
	for j, n := range nodeSizes {
		if n < 1 {
			return nil, fmt.Errorf("rankpool: node %d holds %d ranks", j, n)
		}
		if start[j] > maxRanks-n {
			return nil, fmt.Errorf("rankpool: world size exceeds the limit of %d ranks", maxRanks)
		}
		start[j+1] = start[j] + n
	}
	return newTopology(start, nil, nil, fanout), nil
}

// NewTopologyUniform returns the tree of a block of size ranks placed on
// nodes of ranksPerNode consecutive ranks each (the last node may hold
// fewer); ranksPerNode <= 0 means one node.
func NewTopologyUniform(size, ranksPerNode, fanout int) (*Topology, error) {
	if err := checkWorld(size, nil); err != nil {
		return nil, err
	}
	if ranksPerNode <= 0 || ranksPerNode >= size {
		return newTopology([]int{0, size}, nil, nil, fanout), nil
	}
	nodes := (size + ranksPerNode - 1) / ranksPerNode
	start := make([]int, nodes+1)
	for j := range nodes {
		start[j+1] = min(start[j]+ranksPerNode, size)
	}
	return newTopology(start, nil, nil, fanout), nil
}

func newTopology(start, perm, pos []int, fanout int) *Topology {
	if fanout <= 0 {
		fanout = DefaultFanout
	}
	fanout = max(fanout, MinFanout)
	nodes := len(start) - 1
	t := &Topology{size: start[nodes], fanout: fanout, start: start, perm: perm, pos: pos}
	t.kl = fanout
	for j := range nodes {
		if start[j+1]-start[j] > 1 {
			t.kl = max(2, fanout/2) // leaders keep room for their own nodes
			break
		}
	}
	relays := 0
	for j := range nodes {
		n := t.nodeLen(j) - 1 // the node's ranks below its leader
		b := t.rootBudget(j)
		if n > 0 || t.leaderKids(j) > 0 {
			relays++
		}
		if n > b {
			relays += (n-b-1)/fanout + 1
		}
		t.depth = max(t.depth, t.leaderDepth(j)+t.localDepth(j, n))
	}
	t.workers = t.size - relays
	if t.size == 1 {
		t.workers = 1
	}
	return t
}

// Size returns the number of ranks.
func (t *Topology) Size() int { return t.size }

// Fanout returns the fan-out the tree was built with.
func (t *Topology) Fanout() int { return t.fanout }

// Nodes returns the number of nodes.
func (t *Topology) Nodes() int { return len(t.start) - 1 }

// Workers returns the number of ranks that run tasks.
func (t *Topology) Workers() int { return t.workers }

// Depth returns the number of edges on the longest path from rank 0 to a
// worker: 0 for one rank, 1 for rank 0 with workers only.
func (t *Topology) Depth() int { return t.depth }

func (t *Topology) nodeLen(j int) int { return t.start[j+1] - t.start[j] }

// leaderKids returns how many leaders of other nodes leader j serves.
func (t *Topology) leaderKids(j int) int {
	return min(max(t.Nodes()-1-j*t.kl, 0), t.kl)
}

// rootBudget returns how many ranks of its own node leader j serves directly.
func (t *Topology) rootBudget(j int) int { return max(1, t.fanout-t.leaderKids(j)) }

// leaderDepth returns the depth of leader j.
func (t *Topology) leaderDepth(j int) int {
	d := 0
	for ; j > 0; j = (j - 1) / t.kl {
		d++
	}
	return d
}

// localDepth returns the depth below its leader of local index i of node j.
func (t *Topology) localDepth(j, i int) int {
	b := t.rootBudget(j)
	d := 0
	for ; i > 0; i = t.localParent(b, i) {
		d++
	}
	return d
}

// localParent returns the local index of the parent of local index i > 0 in
// a node whose leader serves b of its ranks.
func (t *Topology) localParent(b, i int) int {
	if i <= b {
		return 0
	}
	return (i-b-1)/t.fanout + 1
}

func (t *Topology) rankAt(p int) int {
	if t.perm == nil {
		return p
	}
	return t.perm[p]
}

func (t *Topology) posOf(r int) int {
	if t.pos == nil {
		return r
	}
	return t.pos[r]
}

// Place returns rank's position in the tree. It panics when rank is not in
// [0, Size()).
func (t *Topology) Place(rank int) Place {
	if rank < 0 || rank >= t.size {
		panic(fmt.Errorf("rankpool: rank %d is outside a world of size %d", rank, t.size))
	}
	p := Place{Rank: rank, Size: t.size, Parent: Upstream}
	if t.size == 1 {
		p.Role = RoleWorker
		return p
	}
	at := t.posOf(rank)
	j := sort.SearchInts(t.start, at+1) - 1 // the node holding position at
	i := at - t.start[j]                    // local index; 0 is the leader
	n := t.nodeLen(j) - 1
	b := t.rootBudget(j)

	// Parent.
	switch {
	case i > 0:
		p.Parent = t.rankAt(t.start[j] + t.localParent(b, i))
	case j > 0:
		p.Parent = t.rankAt(t.start[(j-1)/t.kl])
	}

	// Children: ranks of the own node, then leaders of later nodes.
	var lo, hi int // local indexes of the own node's children
	if i == 0 {
		lo, hi = 1, min(b, n)
	} else {
		lo, hi = b+(i-1)*t.fanout+1, min(b+i*t.fanout, n)
	}
	kids := max(hi-lo+1, 0)
	var lk int
	if i == 0 {
		lk = t.leaderKids(j)
	}
	if kids+lk > 0 {
		p.Children = make([]int, 0, kids+lk)
		for c := lo; c <= hi; c++ {
			p.Children = append(p.Children, t.rankAt(t.start[j]+c))
		}
		for c := j*t.kl + 1; c <= j*t.kl+lk; c++ {
			p.Children = append(p.Children, t.rankAt(t.start[c]))
		}
		if t.perm != nil {
			slices.Sort(p.Children)
		}
	}
	switch {
	case rank == 0:
		p.Role = RoleScheduler
	case len(p.Children) > 0:
		p.Role = RoleSubMaster
	default:
		p.Role = RoleWorker
	}
	return p
}

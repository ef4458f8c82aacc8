package rankpool

import "fmt"

// Upstream is the parent of rank 0: the front end, or the link to it.
const Upstream = -1

// DefaultFanout is the fan-out Layout uses when it is given none.
const DefaultFanout = 64

// Role is the job a rank does in the tree.
type Role uint8

// Roles of a rank.
const (
	// RoleWorker runs tasks. Rank 0 of a one-rank block is a worker too.
	RoleWorker Role = iota
	// RoleScheduler is rank 0 of a block with more than one rank: it pulls
	// tasks from the front end by credit and hands them down.
	RoleScheduler
	// RoleSubMaster relays tasks and results between rank 0 and the
	// workers of one node.
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
// <= 0 means DefaultFanout.
//
// The tree has two levels for now: one rank is a worker with Parent
// Upstream; on one node rank 0 schedules and every other rank is its worker;
// on several nodes the lowest rank of each node other than rank 0's is that
// node's sub-master, with the node's other ranks as its workers, and rank 0's
// children are the sub-masters plus the other ranks of its own node. A node
// with a single rank has no sub-master: that rank is a worker under rank 0.
// The fan-out is accepted for the deeper trees to come and not used yet.
//
// Layout panics when rank is not in [0, size) or nodeOf has the wrong length:
// both are programming errors of the caller, and CheckLayout reports them as
// an error for callers that take them from outside.
func Layout(rank, size int, nodeOf []int, fanout int) Place {
	if err := CheckLayout(rank, size, nodeOf); err != nil {
		panic(err)
	}
	if fanout <= 0 {
		fanout = DefaultFanout
	}
	_ = fanout // the any-depth tree will split nodes and sub-masters above it

	p := Place{Rank: rank, Size: size, Parent: Upstream}
	if size == 1 {
		p.Role = RoleWorker
		return p
	}
	t := newTwoLevel(size, nodeOf)
	p.Parent = t.parent(rank)
	switch {
	case rank == 0:
		p.Role = RoleScheduler
	case t.isSubMaster(rank):
		p.Role = RoleSubMaster
	default:
		p.Role = RoleWorker
	}
	if p.Role.IsRelay() {
		p.Children = t.children(rank)
	}
	return p
}

// CheckLayout reports whether Layout can place rank in a block of size ranks
// with node map nodeOf.
func CheckLayout(rank, size int, nodeOf []int) error {
	if size < 1 {
		return fmt.Errorf("rankpool: world size %d is not positive", size)
	}
	if rank < 0 || rank >= size {
		return fmt.Errorf("rankpool: rank %d is outside a world of size %d", rank, size)
	}
	if nodeOf != nil && len(nodeOf) != size {
		return fmt.Errorf("rankpool: node map has %d entries for a world of size %d", len(nodeOf), size)
	}
	return nil
}

// twoLevel is the two-level tree: rank 0, one sub-master per other node with
// more than one rank, and the workers. Placing one rank costs O(size) time
// and, except for rank 0, no allocation beyond its children.
type twoLevel struct {
	size   int
	nodeOf []int // nil: one node
}

func newTwoLevel(size int, nodeOf []int) twoLevel { return twoLevel{size: size, nodeOf: nodeOf} }

// leader returns the lowest rank on node n.
func (t twoLevel) leader(n int) int {
	for r, m := range t.nodeOf {
		if m == n {
			return r
		}
	}
	return -1
}

// alone reports whether rank r is the only rank on its node.
func (t twoLevel) alone(r int) bool {
	n := t.nodeOf[r]
	for c, m := range t.nodeOf {
		if m == n && c != r {
			return false
		}
	}
	return true
}

// isSubMaster reports whether rank r leads a node other than rank 0's that
// holds other ranks too.
func (t twoLevel) isSubMaster(r int) bool {
	if t.nodeOf == nil || r == 0 {
		return false
	}
	n := t.nodeOf[r]
	return n != t.nodeOf[0] && t.leader(n) == r && !t.alone(r)
}

func (t twoLevel) parent(r int) int {
	switch {
	case r == 0:
		return Upstream
	case t.nodeOf == nil:
		return 0
	}
	n := t.nodeOf[r]
	if n == t.nodeOf[0] {
		return 0
	}
	if l := t.leader(n); l != r {
		return l
	}
	return 0
}

// children returns the children of relay r, ascending.
func (t twoLevel) children(r int) []int {
	var kids []int
	switch {
	case t.nodeOf == nil:
		kids = make([]int, 0, t.size-1)
		for c := 1; c < t.size; c++ {
			kids = append(kids, c)
		}
	case r == 0:
		// The other ranks of rank 0's node, and the lowest rank of every
		// other node (a sub-master, or a lone worker).
		node0 := t.nodeOf[0]
		seen := make(map[int]struct{})
		for c := 1; c < t.size; c++ {
			n := t.nodeOf[c]
			if n == node0 {
				kids = append(kids, c)
				continue
			}
			if _, ok := seen[n]; !ok {
				seen[n] = struct{}{}
				kids = append(kids, c)
			}
		}
	default:
		// A sub-master: the other ranks of its node.
		n := t.nodeOf[r]
		for c := r + 1; c < t.size; c++ {
			if t.nodeOf[c] == n {
				kids = append(kids, c)
			}
		}
	}
	return kids
}

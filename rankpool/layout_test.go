package rankpool

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLayoutShapes(t *testing.T) {
	type want struct {
		role     Role
		parent   int
		children []int
	}
	tests := []struct {
		name   string
		nodeOf []int
		size   int
		want   []want // indexed by rank
	}{
		{
			name: "one rank runs tasks itself",
			size: 1,
			want: []want{{RoleWorker, Upstream, nil}},
		},
		{
			name: "two ranks on one node",
			size: 2,
			want: []want{{RoleScheduler, Upstream, []int{1}}, {RoleWorker, 0, nil}},
		},
		{
			name: "three ranks on one node",
			size: 3,
			want: []want{{RoleScheduler, Upstream, []int{1, 2}}, {RoleWorker, 0, nil}, {RoleWorker, 0, nil}},
		},
		{
			name:   "three ranks, explicit single node",
			nodeOf: []int{7, 7, 7},
			size:   3,
			want:   []want{{RoleScheduler, Upstream, []int{1, 2}}, {RoleWorker, 0, nil}, {RoleWorker, 0, nil}},
		},
		{
			name:   "two ranks on two nodes: a lone rank is a worker of rank 0",
			nodeOf: []int{0, 1},
			size:   2,
			want:   []want{{RoleScheduler, Upstream, []int{1}}, {RoleWorker, 0, nil}},
		},
		{
			name:   "three ranks, rank 0 alone on its node",
			nodeOf: []int{0, 1, 1},
			size:   3,
			want:   []want{{RoleScheduler, Upstream, []int{1}}, {RoleSubMaster, 0, []int{2}}, {RoleWorker, 1, nil}},
		},
		{
			name:   "uneven nodes 3+1+4",
			nodeOf: []int{0, 0, 0, 1, 2, 2, 2, 2},
			size:   8,
			want: []want{
				{RoleScheduler, Upstream, []int{1, 2, 3, 4}},
				{RoleWorker, 0, nil},
				{RoleWorker, 0, nil},
				{RoleWorker, 0, nil},
				{RoleSubMaster, 0, []int{5, 6, 7}},
				{RoleWorker, 4, nil},
				{RoleWorker, 4, nil},
				{RoleWorker, 4, nil},
			},
		},
		{
			name:   "nodes not contiguous in rank order",
			nodeOf: []int{5, 9, 3, 9, 5, 3, 3},
			size:   7,
			want: []want{
				{RoleScheduler, Upstream, []int{1, 2, 4}},
				{RoleSubMaster, 0, []int{3}},
				{RoleSubMaster, 0, []int{5, 6}},
				{RoleWorker, 1, nil},
				{RoleWorker, 0, nil},
				{RoleWorker, 2, nil},
				{RoleWorker, 2, nil},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Len(t, tt.want, tt.size)
			for r, w := range tt.want {
				p := Layout(r, tt.size, tt.nodeOf, 0)
				assert.Equal(t, r, p.Rank, "rank %d", r)
				assert.Equal(t, tt.size, p.Size, "rank %d", r)
				assert.Equal(t, w.role, p.Role, "rank %d role", r)
				assert.Equal(t, w.parent, p.Parent, "rank %d parent", r)
				assert.Equal(t, w.children, p.Children, "rank %d children", r)
			}
		})
	}
}

// checkTopology asserts that t's places form one tree rooted at rank 0 with
// the promised shape: each other rank has exactly one parent, of a lower rank,
// which lists it as a child; children are ascending; only relays have them,
// and no rank has more than the fan-out (3 when the fan-out is below 3); the
// depth and the worker count are what t reports, and the depth is
// logarithmic. nodeOf (nil: one node) gives each rank's node: a rank's parent
// is on its own node unless the rank is the lowest of its node. It keeps two
// ints per rank, so it checks a million ranks in about a second.
func checkTopology(t *testing.T, tp *Topology, nodeOf func(int) int) {
	t.Helper()
	size := tp.Size()
	name := fmt.Sprintf("size %d fanout %d nodes %d", size, tp.Fanout(), tp.Nodes())
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: %s", name, fmt.Sprintf(format, args...))
	}
	maxKids := max(tp.Fanout(), 3)
	parent := make([]int32, size)
	claims := make([]int32, size) // how many ranks list r as a child, then r's depth
	workers, maxDepth := 0, 0
	lowest := map[int]int{} // node → its lowest rank
	for r := range size {
		p := tp.Place(r)
		if p.Rank != r || p.Size != size {
			fail("rank %d placed as %d of %d", r, p.Rank, p.Size)
		}
		parent[r] = int32(p.Parent)
		if r == 0 && p.Parent != Upstream || r > 0 && (p.Parent < 0 || p.Parent >= r) {
			fail("rank %d has parent %d", r, p.Parent)
		}
		want := RoleWorker
		switch {
		case size == 1:
		case r == 0:
			want = RoleScheduler
		case len(p.Children) > 0:
			want = RoleSubMaster
		}
		if p.Role != want {
			fail("rank %d is a %v, want a %v", r, p.Role, want)
		}
		if p.Role == RoleWorker {
			workers++
			if len(p.Children) > 0 {
				fail("worker %d has children %v", r, p.Children)
			}
		} else if len(p.Children) == 0 {
			fail("relay %d has no children", r)
		}
		if len(p.Children) > maxKids {
			fail("rank %d has %d children", r, len(p.Children))
		}
		if !isSortedUnique(p.Children) {
			fail("rank %d children %v", r, p.Children)
		}
		for _, c := range p.Children {
			if c <= r || c >= size {
				fail("rank %d lists %d", r, c)
			}
			claims[c]++
		}
		if nodeOf != nil {
			n := nodeOf(r)
			if _, ok := lowest[n]; !ok {
				lowest[n] = r
			}
			if r > 0 && nodeOf(p.Parent) != n && lowest[n] != r {
				fail("rank %d has a parent on another node but does not lead its node", r)
			}
		}
	}
	if claims[0] != 0 {
		fail("rank 0 is listed as a child")
	}
	for r := 1; r < size; r++ {
		if claims[r] != 1 {
			fail("rank %d is listed by %d ranks", r, claims[r])
		}
		claims[r] = claims[parent[r]] + 1 // from here on: depth
		maxDepth = max(maxDepth, int(claims[r]))
	}
	// Every rank was claimed once, by a lower rank; that the claimer is the
	// rank's named parent is checked on a sample.
	for r := 1; r < size; r += 1 + r/64 {
		if !slices.Contains(tp.Place(int(parent[r])).Children, r) {
			fail("rank %d names parent %d, which does not list it", r, parent[r])
		}
	}
	require.Equal(t, workers, tp.Workers(), name)
	require.Equal(t, maxDepth, tp.Depth(), name)
	if size > 1 {
		// Logarithmic: the leader tree branches at least 2 ways (at least
		// fanout/2), a node's tree at least fanout ways.
		k := float64(max(2, tp.Fanout()/2))
		bound := 2 + 2*math.Ceil(math.Log(float64(size))/math.Log(k))
		require.LessOrEqual(t, float64(maxDepth), bound, name)
	}
}

// checkTree checks Layout against the Topology of the same world, and that
// Topology, for a node map.
func checkTree(t *testing.T, size int, nodeOf []int, fanout int) {
	t.Helper()
	tp, err := NewTopology(size, nodeOf, fanout)
	require.NoError(t, err)
	var node func(int) int
	if nodeOf != nil {
		node = func(r int) int { return nodeOf[r] }
	}
	checkTopology(t, tp, node)
	for r := 0; r < size; r += 1 + r/8 { // Layout reads the whole node map: sample it
		if got, want := Layout(r, size, nodeOf, fanout), tp.Place(r); !reflect.DeepEqual(got, want) {
			t.Fatalf("size %d rank %d: Layout %+v, Topology %+v", size, r, got, want)
		}
	}
}

func isSortedUnique(s []int) bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return true
}

func TestLayoutIsATree(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{1, 2, 3, 4, 5, 7, 8, 16, 63, 64, 65, 129, 1000, 3000}
	for _, fanout := range []int{0, 2, 3, 4, 8} {
		for _, size := range sizes {
			checkTree(t, size, nil, fanout)
			nodeCounts := []int{1, 2, 3, 17, size}
			for _, nodes := range nodeCounts {
				// Contiguous blocks of uneven size.
				contiguous := make([]int, size)
				for r := range size {
					contiguous[r] = r * r * nodes / (size * size) // growing blocks
				}
				checkTree(t, size, contiguous, fanout)
				// Random, not contiguous in rank order, arbitrary node ids.
				scattered := make([]int, size)
				for r := range scattered {
					scattered[r] = 1000 - 7*rng.IntN(nodes)
				}
				checkTree(t, size, scattered, fanout)
			}
		}
	}
}

// TestTopologyMillion checks every rank of 1,000,003-rank trees.
func TestTopologyMillion(t *testing.T) {
	const size = 1_000_003
	tests := []struct {
		name   string
		fanout int
		build  func() (*Topology, error)
		nodeOf func(int) int
	}{
		{
			name:  "one node",
			build: func() (*Topology, error) { return NewTopology(size, nil, 0) },
		},
		{
			name:   "128 ranks per node",
			build:  func() (*Topology, error) { return NewTopologyUniform(size, 128, 0) },
			nodeOf: func(r int) int { return r / 128 },
		},
		{
			name:   "one rank per node",
			build:  func() (*Topology, error) { return NewTopologyUniform(size, 1, 0) },
			nodeOf: func(r int) int { return r },
		},
		{
			name:   "uneven runs, fan-out 8",
			build:  func() (*Topology, error) { return NewTopologyRuns(unevenRuns(size), 8) },
			nodeOf: unevenNode(size),
		},
		{
			name: "scattered round-robin over 977 nodes, fan-out 16",
			build: func() (*Topology, error) {
				nodeOf := make([]int, size)
				for r := range nodeOf {
					nodeOf[r] = r % 977
				}
				return NewTopology(size, nodeOf, 16)
			},
			nodeOf: func(r int) int { return r % 977 },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := tt.build()
			require.NoError(t, err)
			require.Equal(t, size, tp.Size())
			checkTopology(t, tp, tt.nodeOf)
			t.Logf("nodes %d workers %d depth %d", tp.Nodes(), tp.Workers(), tp.Depth())
		})
	}
}

// unevenRuns splits size ranks into nodes of 1, 2, … 300 ranks, repeating.
func unevenRuns(size int) []int {
	var runs []int
	for n, left := 1, size; left > 0; n = n%300 + 1 {
		runs = append(runs, min(n, left))
		left -= n
	}
	return runs
}

func unevenNode(size int) func(int) int {
	nodeOf := make([]int32, 0, size)
	for j, n := range unevenRuns(size) {
		for range n {
			nodeOf = append(nodeOf, int32(j))
		}
	}
	return func(r int) int { return int(nodeOf[r]) }
}

func TestTopologyConstructorsAgree(t *testing.T) {
	runs := []int{3, 1, 4, 1, 5, 9, 2, 6}
	size := 0
	var nodeOf []int
	for j, n := range runs {
		size += n
		for range n {
			nodeOf = append(nodeOf, 10*j)
		}
	}
	for _, fanout := range []int{0, 2, 3} {
		a, err := NewTopologyRuns(runs, fanout)
		require.NoError(t, err)
		b, err := NewTopology(size, nodeOf, fanout)
		require.NoError(t, err)
		for r := range size {
			require.Equal(t, a.Place(r), b.Place(r))
		}
	}
	u, err := NewTopologyUniform(10, 4, 0)
	require.NoError(t, err)
	r, err := NewTopologyRuns([]int{4, 4, 2}, 0)
	require.NoError(t, err)
	for rank := range 10 {
		require.Equal(t, r.Place(rank), u.Place(rank))
	}
}

func TestTopologyDeeperShapes(t *testing.T) {
	type want struct {
		parent   int
		children []int
	}
	tests := []struct {
		name   string
		build  func() (*Topology, error)
		depth  int
		want   []want // indexed by rank
		worker int    // workers
	}{
		{
			name:  "9 ranks, one node, fan-out 2",
			build: func() (*Topology, error) { return NewTopology(9, nil, 2) },
			depth: 3,
			want: []want{
				{Upstream, []int{1, 2}},
				{0, []int{3, 4}},
				{0, []int{5, 6}},
				{1, []int{7, 8}},
				{1, nil}, {2, nil}, {2, nil}, {3, nil}, {3, nil},
			},
			worker: 5,
		},
		{
			name: "five single-rank nodes, fan-out 2: a tree of leaders",
			build: func() (*Topology, error) {
				return NewTopology(5, []int{0, 1, 2, 3, 4}, 2)
			},
			depth: 2,
			want: []want{
				{Upstream, []int{1, 2}},
				{0, []int{3, 4}},
				{0, nil}, {1, nil}, {1, nil},
			},
			worker: 3,
		},
		{
			name:  "four nodes of 3 ranks, fan-out 4",
			build: func() (*Topology, error) { return NewTopologyUniform(12, 3, 4) },
			// Leaders 0, 3, 6, 9 branch 2 ways: 0 → 3, 6; 3 → 9.
			depth: 3,
			want: []want{
				{Upstream, []int{1, 2, 3, 6}},
				{0, nil}, {0, nil},
				{0, []int{4, 5, 9}},
				{3, nil}, {3, nil},
				{0, []int{7, 8}},
				{6, nil}, {6, nil},
				{3, []int{10, 11}},
				{9, nil}, {9, nil},
			},
			worker: 8,
		},
		{
			name:  "one node of 8, fan-out 3",
			build: func() (*Topology, error) { return NewTopology(8, nil, 3) },
			depth: 2,
			want: []want{
				{Upstream, []int{1, 2, 3}},
				{0, []int{4, 5, 6}},
				{0, []int{7}},
				{0, nil}, {1, nil}, {1, nil}, {1, nil}, {2, nil},
			},
			worker: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := tt.build()
			require.NoError(t, err)
			require.Len(t, tt.want, tp.Size())
			for r, w := range tt.want {
				p := tp.Place(r)
				assert.Equal(t, w.parent, p.Parent, "rank %d parent", r)
				assert.Equal(t, w.children, p.Children, "rank %d children", r)
			}
			assert.Equal(t, tt.depth, tp.Depth())
			assert.Equal(t, tt.worker, tp.Workers())
		})
	}
}

func TestTopologyFanoutBoundsChildren(t *testing.T) {
	for _, fanout := range []int{1, 2, 5, 64} {
		for _, size := range []int{2, 100, 5000} {
			tp, err := NewTopology(size, nil, fanout)
			require.NoError(t, err)
			checkTopology(t, tp, nil)
		}
	}
}

func TestTopologyRejectsBadInput(t *testing.T) {
	_, err := NewTopologyRuns(nil, 0)
	require.Error(t, err)
	_, err = NewTopologyRuns([]int{3, 0, 2}, 0)
	require.Error(t, err)
	_, err = NewTopologyRuns([]int{maxRanks, 1}, 0)
	require.Error(t, err)
	_, err = NewTopologyUniform(0, 4, 0)
	require.Error(t, err)
	_, err = NewTopology(3, []int{0, 1}, 0)
	require.Error(t, err)
	tp, err := NewTopology(3, nil, 0)
	require.NoError(t, err)
	require.Panics(t, func() { tp.Place(3) })
	require.Panics(t, func() { tp.Place(-1) })
}

func TestLayoutRejectsBadInput(t *testing.T) {
	tests := []struct {
		name   string
		rank   int
		size   int
		nodeOf []int
	}{
		{"empty world", 0, 0, nil},
		{"negative rank", -1, 4, nil},
		{"rank past the end", 4, 4, nil},
		{"short node map", 0, 4, []int{0, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Error(t, CheckLayout(tt.rank, tt.size, tt.nodeOf))
			require.Panics(t, func() { Layout(tt.rank, tt.size, tt.nodeOf, 0) })
		})
	}
}

func TestRoleString(t *testing.T) {
	for role, want := range map[Role]string{RoleWorker: "worker", RoleScheduler: "scheduler", RoleSubMaster: "sub-master", Role(9): "Role(9)"} {
		assert.Equal(t, want, role.String())
	}
}
